#!/usr/bin/python3
"""tests/browser/test_rollouts.py BUILD_DIR

The dashboard's Rollouts page, its overview banner and its rollout markers
in a real browser (headless Debian chromium driven by Selenium) against a
running lb system (tests/browser/lbsystem.py) with rollouts started by
lbctl against extra lb-backend processes. The cases run in order on one
system and one browser."""

import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lbsystem  # noqa: E402
import test_dashboard  # noqa: E402
from test_dashboard import EVIL  # noqa: E402

from selenium.webdriver.common.by import By  # noqa: E402


class Rollouts(test_dashboard.Browser):
    def status(self, rid):
        return self.sys.api_json("/api/v1/rollouts/%d" % rid)["rollout"]

    def row_text(self, rid, css):
        return self.text('#ro-table tr[data-rollout="%d"] %s' % (rid, css))

    def current(self, attr="status"):
        els = self.d.find_elements(By.ID, "ro-current")
        return els[0].get_attribute("data-" + attr) if els else None

    def wait_api(self, rid, want, timeout=30):
        self.wait(lambda: self.status(rid)["status"] == want, timeout=timeout,
                  what="rollout %d %s (is %s)" % (rid, want, self.status(rid)["status"]))

    def test_01_ro_sees_rollout_live(self):
        s = self.sys
        urls = [s.start_extra_backend(n) for n in ("new-1", "new-2")]
        self.open("overview")
        self.login(s.ro)
        self.wait(lambda: s.api_status("/health") == 200 and
                  self.cell("web-a", "td.state") == "up", what="the overview")
        self.assertFalse(self.d.find_element(By.ID, "ov-rollout").is_displayed())
        s.lbctl("rollout", "start", "--add", "new-1=" + urls[0], "--add", "new-2=" + urls[1],
                "--remove", "web-b,web-c", "--batch-size", "1", "--bake", "1s",
                "--interval", "500ms", "--comment", EVIL)
        # the banner on the overview within 3 s, linking to the Rollouts page
        self.wait(lambda: re.match(r"rollout 1 (running|paused), step \d/2: ",
                                   self.text("#ov-rollout") or ""),
                  timeout=3, exact=True, what="the overview banner")
        self.assertEqual(self.d.find_element(By.ID, "ov-rollout").get_attribute("href"),
                         s.url + "/ui/#rollouts")
        self.d.find_element(By.ID, "ov-rollout").click()
        self.wait(lambda: self.d.find_element(By.ID, "page-rollouts").is_displayed(),
                  what="the Rollouts page")
        self.wait(lambda: self.row_text(1, "td.rstate") == "running", timeout=3, exact=True,
                  what="rollout 1 listed as running")
        first = self.text("#ro-progress")
        seen = {first}
        # its step advances on the open page, to the end
        self.wait(lambda: seen.add(self.text("#ro-progress")) or
                  self.current() == "succeeded", timeout=40, what="rollout 1 to succeed")
        self.assertTrue(any(t and t.startswith("1 of 2 step(s) done") for t in seen), seen)
        self.assertTrue(self.text("#ro-progress").startswith("2 of 2 step(s) done"))
        self.assertEqual(self.row_text(1, "td.step"), "2/2")
        # no write control for an ro token, the comment is text
        self.assertEqual(self.write_controls(), [])
        self.assertEqual(self.d.find_element(
            By.CSS_SELECTOR, '#ro-table tr[data-rollout="1"] td.comment').get_attribute(
                "textContent"), EVIL)
        self.assertEqual(self.d.find_elements(By.CSS_SELECTOR, "main img, main script"), [])
        self.assertIsNone(self.js("return window.__pwned"))
        # the versions it made link to their diff
        made = [e.get_attribute("data-version") for e in
                self.d.find_elements(By.CSS_SELECTOR, "#ro-versions a.ro-diff")]
        api = [v for v in s.api_json("/api/v1/config/versions?limit=50")["versions"]
               if v["comment"].startswith("rollout 1 step ")]
        self.assertEqual(sorted(made), sorted(str(v["version"]) for v in api))
        self.assertGreaterEqual(len(made), 4)
        self.click("#ro-versions a.ro-diff")
        self.wait(lambda: (self.text("#vd-diff") or "").startswith("v"), what="the diff")
        # the traffic page marks every rollout step, apart from config versions
        self.goto("traffic")
        self.wait(lambda: len(self.d.find_elements(
            By.CSS_SELECTOR, '#tr-markers li.mk-rollout[data-rollout="1"]')) == len(api),
            what="one rollout marker per step version")
        marks = [e.text for e in self.d.find_elements(By.CSS_SELECTOR, "#tr-markers li.mk-rollout")]
        self.assertTrue(all(re.search(r"R1 s[12]/2 — v\d+ rollout 1 step [12]/2: ", m)
                            for m in marks), marks)
        self.assertIn("R1 s2/2", self.d.find_element(By.ID, "ch-rps").get_attribute("title"))
        self.assertTrue(self.d.find_elements(By.CSS_SELECTOR, "#tr-markers li.mk-version"))
        self.assertEqual([e for e in self.console_errors()
                          if "favicon" not in e["message"]], [])
        self.assertEqual(self.csp(), [])

    def test_02_rw_undo_pause_resume_abort(self):
        s = self.sys
        self.logout()
        self.login(s.rw)
        self.goto("rollouts")
        # undo, after a success, with a confirmation naming what it does
        self.click("button.ro-undo")
        self.wait(lambda: "becomes active again" in (self.text("#ro-confirm-text") or ""),
                  what="the undo confirmation")
        self.click("#ro-go")
        self.wait(lambda: re.search(r"rollout 1 undo: now undone, created config version \d+",
                                    self.text("#ro-msg") or "", re.I), what="the undo answer")
        self.wait_api(1, "undone")
        # a rollout with a long interval to pause and resume from the page
        s.lbctl("rollout", "start", "--add", "new-1=" + "http://127.0.0.1:%d" %
                s.backend_ports["new-1"], "--remove", "web-c,web-b", "--bake", "1s",
                "--interval", "4s", "--comment", "pause me")
        self.wait(lambda: self.current("rollout") == "2" and self.current() == "running",
                  timeout=3, exact=True, what="rollout 2 shown")
        self.click("button.ro-pause")
        self.wait(lambda: "Rollout 2 pause: now paused" in (self.text("#ro-msg") or ""),
                  what="the pause answer")
        self.assertIn("paused", s.lbctl("rollout", "status", "2", rw=False).splitlines()[0])
        self.wait(lambda: self.d.find_elements(By.CSS_SELECTOR, "button.ro-resume"),
                  what="the resume button")
        # an answer the API refuses shows its status and error
        self.js("rolloutOp(2, 'pause')")
        self.wait(lambda: re.search(r"Rollout 2 pause failed: 409 ", self.text("#ro-msg") or ""),
                  what="the 409, not %r" % self.text("#ro-msg"))
        self.click("button.ro-resume")
        self.wait(lambda: "Rollout 2 resume: now running" in (self.text("#ro-msg") or ""),
                  what="the resume answer")
        self.assertIn("running", s.lbctl("rollout", "status", "2", rw=False).splitlines()[0])
        # abort rolls back, and says so before
        self.click("button.ro-abort")
        self.wait(lambda: "Abort rolls back" in (self.text("#ro-confirm-text") or ""),
                  what="the abort confirmation")
        self.click("#ro-go")
        self.wait(lambda: re.search(r"Rollout 2 abort: now aborted, created config version (\d+)",
                                    self.text("#ro-msg") or ""), what="the abort answer")
        made = int(re.search(r"created config version (\d+)", self.text("#ro-msg")).group(1))
        self.assertEqual(self.status(2)["rollbackVersion"], made)
        self.assertEqual(self.status(2)["status"], "aborted")

    def test_03_failed_rollout_shows_gate_and_figure(self):
        s = self.sys
        url = s.start_extra_backend("bad-1", "--fail-status", "500")
        s.lbctl("rollout", "start", "--add", "bad-1=" + url, "--remove", "web-c", "--bake", "2s",
                "--interval", "500ms", "--comment", "this one fails")
        self.wait(lambda: self.current("rollout") == "3", timeout=3, exact=True,
                  what="rollout 3 shown")
        # more than the light load, so that the gate has its 10 requests in one bake
        self.wait(lambda: s.burst(5) >= 0 and self.current() == "failed", timeout=40,
                  what="rollout 3 to fail")
        r = self.status(3)
        self.assertEqual(r["failedGate"], "error_rate")
        failure = self.text("#ro-failure")
        self.assertIn("gate error_rate, backend bad-1, figure %.1f %%" % (r["figure"] * 100),
                      failure)
        self.assertIn("rolled back as version %d" % r["rollbackVersion"], failure)
        self.assertEqual(self.row_text(3, "td.rstate"), "failed")
        self.assertIn("FAILED", self.text('#ro-gates tr[data-gate="error_rate"] td.gate-now'))
        self.assertFalse(self.d.find_elements(By.CSS_SELECTOR, "button.ro-undo, button.ro-abort"))


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: test_rollouts.py BUILD_DIR")
    test_dashboard.BUILD = sys.argv[1]
    for f in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.path.exists(f):
            sys.exit("%s is missing: install chromium and chromium-driver (deploy/packages.txt)" % f)
    unittest.main(argv=[sys.argv[0], "-v"] + sys.argv[2:])


if __name__ == "__main__":
    main()
