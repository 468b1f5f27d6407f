#!/usr/bin/python3
"""tests/browser/test_dashboard.py BUILD_DIR [--screenshots DIR [--warmup S]]

The dashboard in a real browser: headless Debian chromium driven by Selenium
against a running lb system (tests/browser/lbsystem.py: control plane, data
plane, three backends, light load). The cases run in order on one system
and one browser, as an operator's session would.

With --screenshots DIR it runs no tests: it keeps the load going for S
seconds (default 90) with a weight change and a rollout half way, starts a
second rollout that is still baking, then saves overview.png, traffic.png
and rollouts.png into DIR (tests/browser/screenshots.sh)."""

import argparse
import json
import os
import signal
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lbsystem  # noqa: E402

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

BUILD = None
EVIL = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'

# Records CSP violations from the first script of every document on.
CSP_PROBE = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__csp.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


def make_driver():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_PROBE})
    d.set_page_load_timeout(20)
    return d


class Browser(unittest.TestCase):
    """One lb system and one browser for a class's cases, and the helpers the
    suites share (tests/browser/test_rollouts.py subclasses it too)."""
    sys = None
    d = None

    @classmethod
    def setUpClass(cls):
        cls.sys = lbsystem.System(BUILD)
        try:
            cls.sys.start()
            cls.d = make_driver()
        except Exception:
            cls.sys.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.d is not None:
            cls.d.quit()
        codes = cls.sys.stop()
        # under ASan a leak or an error makes a daemon exit non-zero
        for name, code in codes.items():
            assert code == 0, "%s exited with status %s" % (name, code)

    # ---- helpers -------------------------------------------------------------
    def wait(self, cond, timeout=10, what="condition", exact=False):
        """Polls <cond> for <timeout> s, scaled like the e2e waits unless
        <exact> (a bound the issue sets, such as 3 s for a change to show)."""
        timeout = timeout if exact else lbsystem.scaled(timeout)
        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.1,
                                 ignored_exceptions=[StaleElementReferenceException]).until(
                                     lambda d: cond())
        except Exception as e:
            raise AssertionError("timed out after %s s waiting for %s (%s)\ncp log:\n%s" %
                                 (timeout, what, e, self.sys.log("controlplane")[-1500:]))

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def text(self, css):
        els = self.d.find_elements(By.CSS_SELECTOR, css)
        return els[0].text if els else None

    def cell(self, backend, css, table="#ov-backends"):
        return self.text('%s tr[data-backend="%s"] %s' % (table, backend, css))

    def click(self, css, index=0):
        """Clicks the index-th match by script: polls re-render the tables, so
        an element found a moment ago may be gone."""
        self.wait(lambda: self.js("var e = document.querySelectorAll(arguments[0]);"
                                  "if (e.length <= arguments[1]) return false;"
                                  "e[arguments[1] < 0 ? e.length + arguments[1] : arguments[1]].click();"
                                  "return true;", css, index), what="clicking " + css)

    def open(self, page):
        self.d.get(self.sys.url + "/ui/#" + page)

    def login(self, token):
        self.wait(lambda: self.d.find_element(By.ID, "token").is_displayed(), what="the login form")
        self.d.find_element(By.ID, "token").send_keys(token)
        self.d.find_element(By.ID, "login-button").click()

    def logout(self):
        if self.d.find_element(By.ID, "logout").is_displayed():
            self.d.find_element(By.ID, "logout").click()

    def goto(self, page):
        self.js("location.hash = arguments[0]", page)
        self.wait(lambda: self.d.find_element(By.ID, "page-" + page).is_displayed(), what=page)

    def console_errors(self):
        return [e for e in self.d.get_log("browser") if e["level"] == "SEVERE"]

    def csp(self):
        return self.js("return window.__csp || []")

    def write_controls(self):
        return self.d.find_elements(
            By.CSS_SELECTOR, "button.set-weight, button.drain, button.enable, button.disable, "
            "button.rollback, #rb-go, td.write, input.weight, .ro-controls, button.ro-pause, "
            "button.ro-resume, button.ro-abort, button.ro-undo, #ro-go")


class Dashboard(Browser):
    # ---- cases ---------------------------------------------------------------
    def test_00_headers_and_authorisation(self):
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None
        opener = urllib.request.build_opener(NoRedirect)

        def get(path, headers=None, method="GET"):
            req = urllib.request.Request(self.sys.url + path, headers=headers or {}, method=method)
            try:
                with opener.open(req, timeout=5) as r:
                    return r.status, r.headers, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.headers, e.read()
        st, h, _ = get("/")
        self.assertEqual((st, h["Location"]), (308, "/ui/"))
        for path, ctype in (("/ui/", "text/html"), ("/ui/app.js", "text/javascript"),
                            ("/ui/app.css", "text/css"), ("/ui/favicon.svg", "image/svg+xml")):
            st, h, body = get(path)
            self.assertEqual(st, 200, path)
            self.assertTrue(h["Content-Type"].startswith(ctype), path)
            csp = h["Content-Security-Policy"]
            for d in ("default-src 'none'", "script-src 'self'", "style-src 'self'",
                      "frame-ancestors 'none'"):
                self.assertIn(d, csp)
            self.assertNotIn("unsafe", csp)
            self.assertEqual(h["X-Content-Type-Options"], "nosniff")
            self.assertEqual(h["X-Frame-Options"], "DENY")
            self.assertEqual(h["Referrer-Policy"], "no-referrer")
            self.assertEqual(h["Cache-Control"], "no-cache")
            st, _, _ = get(path, {"If-None-Match": h["ETag"]})
            self.assertEqual(st, 304, path)
        self.assertNotIn(b"innerHTML", get("/ui/app.js")[2])
        self.assertEqual(get("/ui/nope.js")[0], 404)
        # the data the dashboard reads needs a token, and writes an rw one
        for path in ("/api/v1/history", "/api/v1/whoami", "/api/v1/backends"):
            self.assertEqual(get(path)[0], 401, path)
        ro = {"Authorization": "Bearer " + self.sys.ro}
        self.assertEqual(get("/api/v1/history?series=2", ro)[0], 400)
        self.assertEqual(get("/api/v1/backends/web-a/drain", ro, "POST")[0], 403)
        self.assertEqual(get("/ui/", ro, "POST")[0], 403)

    def test_01_ro_overview(self):
        self.open("overview")
        self.login(self.sys.ro)
        self.wait(lambda: all(self.cell(b, "td.state") == "up" for b in lbsystem.BACKENDS),
                  what="every backend listed as up")
        self.assertIn("read-only", self.text("#who"))
        self.wait(lambda: self.text("#ov-frontends td") == "web", what="the frontend")
        self.wait(lambda: float(self.cell("web-a", "td:nth-child(10)") or "0") > 0,
                  timeout=15, what="req/s from the history")
        self.wait(lambda: self.text("#ov-dataplanes h2") is not None, what="the per data plane tables")
        self.assertEqual(self.write_controls(), [])
        for page in ("backends", "versions", "traffic", "dataplanes", "audit", "overview"):
            self.goto(page)
            time.sleep(0.3)
            self.assertEqual(self.write_controls(), [], "write controls on %s with ro" % page)
        # each data plane's address: its host name and where it listens
        self.goto("dataplanes")
        self.wait(lambda: "127.0.0.1:" in (self.text("#dp-table td:nth-child(2)") or ""),
                  what="the data plane's address")
        self.goto("overview")
        self.wait(lambda: self.text("#updated").startswith("updated"), what="last updated")
        self.assertEqual(self.console_errors(), [])
        self.assertEqual(self.csp(), [])

    def test_02_lbctl_change_shows_live(self):
        self.goto("overview")
        self.js("window.__same_page = 1")
        self.sys.lbctl("backends", "update", "web-c", "--weight", "7")
        t0 = time.monotonic()
        self.wait(lambda: self.cell("web-c", "td.weight") == "7", timeout=3, what="weight 7",
                  exact=True)
        self.sys.lbctl("backends", "drain", "web-b")
        self.wait(lambda: (self.cell("web-b", "td.state") or "").startswith("draining"), timeout=3,
                  what="web-b draining", exact=True)
        self.assertEqual(self.js("return window.__same_page"), 1, "the page was reloaded")
        print("lbctl changes shown after %.1f s" % (time.monotonic() - t0), file=sys.stderr)
        self.sys.lbctl("backends", "update", "web-b", "--state", "active")

    def test_02b_in_flight(self):
        # slow requests held open at the backends show as in flight, then go
        self.goto("overview")
        threads = [threading.Thread(target=self.sys.burst, args=(1, "/slow/4000"))
                   for _ in range(6)]
        for t in threads:
            t.start()
        try:
            self.wait(lambda: sum(int(self.cell(b, "td.in-flight") or "0")
                                  for b in lbsystem.BACKENDS) >= 3, timeout=8,
                      what="requests in flight")
        finally:
            for t in threads:
                t.join(timeout=lbsystem.scaled(15))
        self.wait(lambda: sum(int(self.cell(b, "td.in-flight") or "0")
                              for b in lbsystem.BACKENDS) <= 2, timeout=8,
                  what="in flight back to the light load's")

    def test_03_backend_down_breaker_open(self):
        self.goto("overview")
        self.sys.stop_proc("web-a")
        # requests at once, before the health checks take it out of rotation:
        # its connect failures open its breaker (threshold 3)
        self.sys.burst(40)
        try:
            self.wait(lambda: (self.cell("web-a", "td.state") or "").startswith("down"), timeout=15,
                      what="web-a down")
            self.assertIn("st-down", self.d.find_element(
                By.CSS_SELECTOR, '#ov-backends tr[data-backend="web-a"]').get_attribute("class"))
            self.wait(lambda: self.cell("web-a", "td.br-open") == "open", timeout=15,
                      what="web-a's breaker open")
        finally:
            self.sys.start_backend("web-a")
        self.wait(lambda: self.cell("web-a", "td.state") == "up", timeout=20, what="web-a up again")

    def test_04_rw_drain_then_rollback(self):
        self.logout()
        self.login(self.sys.rw)
        self.wait(lambda: "read-write" in (self.text("#who") or ""), what="rw login")
        self.goto("backends")
        self.wait(lambda: self.d.find_elements(
            By.CSS_SELECTOR, '#be-table tr[data-backend="web-c"] button.drain'), what="drain button")
        self.click('#be-table tr[data-backend="web-c"] button.drain')
        self.wait(lambda: "created config version" in (self.text("#be-msg") or ""), what="drain done")
        drained = int(self.text("#be-msg").rstrip(".").split()[-1])
        self.assertEqual(self.sys.backend("web-c")["state"], "draining")
        self.goto("versions")
        sel = 'button.rollback[data-version="%d"]' % (drained - 1)
        self.wait(lambda: self.d.find_elements(By.CSS_SELECTOR, sel), what="rollback button")
        self.click(sel)
        self.wait(lambda: self.d.find_element(By.ID, "rb-confirm").is_displayed(), what="confirmation")
        diff = self.d.find_element(By.ID, "rb-diff").text
        self.assertIn("web-c", diff)
        self.assertIn("draining", diff)
        self.d.find_element(By.ID, "rb-go").click()
        self.wait(lambda: "created version" in (self.text("#vs-msg") or ""), what="rollback done")
        rolled = int(self.text("#vs-msg").rstrip(".").split()[-1])
        self.assertEqual(rolled, drained + 1)
        self.assertEqual(self.sys.backend("web-c")["state"], "active")
        hist = json.loads(self.sys.lbctl("--json", "config", "history"))
        rows = {v["version"]: v for v in hist["versions"]}
        self.assertEqual(rows[drained]["author"], "token:dashboard-rw")
        self.assertEqual(rows[rolled]["author"], "token:dashboard-rw")
        table = self.sys.lbctl("config", "history")
        self.assertIn("token:dashboard-rw", table)

    def test_05_rollback_conflict(self):
        # the confirmation read the diff against one version; a change made
        # meanwhile gives a clear conflict instead of being overwritten
        self.goto("versions")
        sel = "button.rollback"
        self.wait(lambda: self.d.find_elements(By.CSS_SELECTOR, sel), what="a rollback button")
        self.click(sel, -1)
        self.wait(lambda: self.d.find_element(By.ID, "rb-confirm").is_displayed(), what="confirmation")
        self.sys.lbctl("backends", "update", "web-c", "--weight", "4")
        self.d.find_element(By.ID, "rb-go").click()
        self.wait(lambda: "Conflict" in (self.text("#vs-msg") or ""), what="the conflict message")

    def test_06_html_shown_as_text(self):
        req = urllib.request.Request(
            self.sys.url + "/api/v1/backends/web-c", method="PUT",
            data=json.dumps({"weight": 2, "comment": EVIL}).encode(),
            headers={"Authorization": "Bearer " + self.sys.rw, "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5).close()
        bad = urllib.request.Request(
            self.sys.url + "/api/v1/backends", method="POST",
            data=json.dumps({"id": "<script>x</script>", "url": "http://127.0.0.1:1"}).encode(),
            headers={"Authorization": "Bearer " + self.sys.rw, "Content-Type": "application/json"})
        with self.assertRaises(urllib.error.HTTPError) as ctx:
            urllib.request.urlopen(bad, timeout=5)
        self.assertEqual(ctx.exception.code, 400)
        self.goto("versions")
        self.wait(lambda: EVIL in [e.get_attribute("textContent") for e in
                                   self.d.find_elements(By.CSS_SELECTOR, "#vs-table td.comment")],
                  what="the comment as text")
        self.goto("audit")
        self.d.find_element(By.ID, "au-text").send_keys("onerror")
        self.d.find_element(By.CSS_SELECTOR, "#au-form button").click()
        self.wait(lambda: self.d.find_elements(By.CSS_SELECTOR, "#au-table tbody tr"), what="audit rows")
        for table in ("#vs-table", "#au-table", "main"):
            self.assertEqual(self.d.find_elements(By.CSS_SELECTOR, table + " img, " + table + " script"), [])
        self.assertIsNone(self.js("return window.__pwned"))

    def test_07_wrong_token(self):
        self.logout()
        self.login("not-a-token-" + "0" * 20)
        self.wait(lambda: "Token refused" in (self.text("#login-error") or ""),
                  what="the error, not %r" % self.text("#login-error"))
        self.assertFalse(self.d.find_element(By.ID, "nav").is_displayed())
        self.assertIsNone(self.js("return sessionStorage.getItem('lb-token')"))

    def test_08_survives_controlplane_restart(self):
        self.login(self.sys.ro)
        self.goto("overview")
        self.wait(lambda: self.cell("web-a", "td.state") == "up", what="overview")
        self.js("window.__same_page = 2")
        self.sys.stop_proc("controlplane")
        self.wait(lambda: "Control plane not answering" in (self.text("#banner") or ""), timeout=10,
                  what="the banner")
        self.sys.start_controlplane()
        self.wait(lambda: not self.d.find_element(By.ID, "banner").is_displayed(), timeout=20,
                  what="the banner to clear")
        self.wait(lambda: self.cell("web-a", "td.state") == "up", what="overview after restart")
        self.assertEqual(self.js("return window.__same_page"), 2, "the page was reloaded")

    def test_09_dataplane_silent_banner(self):
        self.goto("overview")
        dp = self.sys.procs["dataplane"]
        dp.send_signal(signal.SIGSTOP)
        try:
            self.wait(lambda: "dp-1 has not reported" in (self.text("#banner") or ""), timeout=25,
                      what="the data plane banner")
        finally:
            dp.send_signal(signal.SIGCONT)
        self.wait(lambda: not self.d.find_element(By.ID, "banner").is_displayed(), timeout=15,
                  what="the banner to clear")


def screenshots(out, warmup):
    s = lbsystem.System(BUILD).start()
    d = None
    try:
        os.makedirs(out, exist_ok=True)
        # steady load, then a config change followed by errors and slow answers
        quarter = time.monotonic() + warmup / 4
        half = time.monotonic() + warmup / 2
        end = time.monotonic() + warmup
        rolled = False
        while time.monotonic() < half:
            s.burst(5, "/slow/5")
            if not rolled and time.monotonic() > quarter:
                # a rollout replacing web-b by web-d: its steps are markers
                # on the traffic page
                s.lbctl("rollout", "start", "--add", "web-d=" + s.start_extra_backend("web-d"),
                        "--remove", "web-b", "--bake", "2s", "--interval", "1s", "--comment",
                        "web-d replaces web-b")
                rolled = True
            time.sleep(0.5)
        lbsystem.wait_for(lambda: s.api_json("/api/v1/rollouts/1")["rollout"]["status"] not in
                          ("running", "paused"), 30, "rollout 1 to end")
        s.lbctl("backends", "update", "web-c", "--weight", "4", "--comment", "more weight to web-c")
        while time.monotonic() < end:
            s.burst(4, "/status/500")
            s.burst(4, "/slow/40")
            time.sleep(0.5)
        # and one still baking while the pictures are taken: the overview's banner
        s.lbctl("rollout", "start", "--add", "web-e=" + s.start_extra_backend("web-e"),
                "--remove", "web-c", "--bake", "5m", "--interval", "1s", "--comment",
                "web-e replaces web-c")
        lbsystem.wait_for(lambda: s.api_json("/api/v1/rollouts/2")["rollout"]["phase"] == "bake",
                          20, "rollout 2 baking")
        d = make_driver()
        d.set_window_size(1400, 900)
        d.get(s.url + "/ui/#overview")
        d.find_element(By.ID, "token").send_keys(s.ro)
        d.find_element(By.ID, "login-button").click()
        WebDriverWait(d, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#ov-dataplanes table"))
        time.sleep(2.5)
        d.save_screenshot(os.path.join(out, "overview.png"))
        d.execute_script("location.hash = 'traffic'")
        time.sleep(3)
        d.save_screenshot(os.path.join(out, "traffic.png"))
        d.execute_script("location.hash = 'rollouts'")
        time.sleep(3)
        d.save_screenshot(os.path.join(out, "rollouts.png"))
        print("wrote overview.png, traffic.png and rollouts.png into %s" % out)
    finally:
        if d is not None:
            d.quit()
        s.stop()


def main():
    global BUILD
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--screenshots")
    ap.add_argument("--warmup", type=float, default=90)
    args, rest = ap.parse_known_args()
    BUILD = args.build
    for f in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.path.exists(f):
            sys.exit("%s is missing: install chromium and chromium-driver (deploy/packages.txt)" % f)
    if args.screenshots:
        screenshots(args.screenshots, args.warmup)
        return
    unittest.main(argv=[sys.argv[0], "-v"] + rest)


if __name__ == "__main__":
    main()
