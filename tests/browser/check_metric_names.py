#!/usr/bin/python3
"""tests/browser/check_metric_names.py BUILD_DIR

Every metric name and label that deploy/grafana/lb.json and
deploy/prometheus/lb-alerts.yml use must exist in the /metrics output of a
running system: both daemons (tests/browser/lbsystem.py, with a TLS frontend
and an https:// backend so that the certificate metrics have samples), under
light load. Labels Prometheus adds itself (instance, job) and le of a
histogram's buckets are exempt. Exit status 0 when everything is found."""

import json
import os
import re
import sys
import time
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lbsystem  # noqa: E402

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET_LABELS = {"instance", "job", "__name__"}
METRIC = re.compile(r"\b(lb_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\{([^{}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND = re.compile(r"\{\{\s*\$?(?:labels\.)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
LABEL_VALUES = re.compile(r"label_values\(\s*(lb_[a-z0-9_]+)\s*,\s*([a-zA-Z_]+)\s*\)")


def parse_exposition(text, samples):
    """samples: metric name -> set of label names seen on its samples."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
        if not m:
            continue
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
        samples.setdefault(m.group(1), set()).update(labels)


def uses(where, expr, extra_labels=()):
    """(where, metric names, label names) used by one PromQL expression."""
    metrics = set(METRIC.findall(expr))
    labels = set(extra_labels)
    for sel in SELECTOR.findall(expr):
        if sel.strip().startswith("{"):
            continue
        labels.update(MATCHER.findall(sel))
    for grp in GROUPING.findall(expr):
        labels.update(x.strip() for x in grp.split(",") if x.strip())
    return (where, metrics, labels)


def collect():
    items = []
    with open(os.path.join(SRC, "deploy/prometheus/lb-alerts.yml")) as f:
        rules = yaml.safe_load(f)
    for g in rules["groups"]:
        for r in g["rules"]:
            ann = " ".join(r.get("annotations", {}).values())
            labels = re.findall(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)", ann)
            items.append(uses("alert " + r["alert"], r["expr"], labels))
    with open(os.path.join(SRC, "deploy/grafana/lb.json")) as f:
        dash = json.load(f)
    for p in dash["panels"]:
        for t in p.get("targets", []):
            items.append(uses("panel " + p["title"], t["expr"],
                              LEGEND.findall(t.get("legendFormat", ""))))
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            items.append(uses("annotation " + a["name"], a["expr"]))
    for v in dash["templating"]["list"]:
        q = v.get("definition", "")
        for metric, label in LABEL_VALUES.findall(q):
            items.append(("variable " + v["name"], {metric}, {label}))
    return items


def check(items, samples):
    problems = []
    for where, metrics, labels in items:
        if not metrics:
            problems.append("%s: uses no lb_ metric" % where)
        for m in sorted(metrics):
            if m not in samples:
                problems.append("%s: metric %s is not in /metrics" % (where, m))
        have = set()
        for m in metrics:
            have |= samples.get(m, set())
        for lab in sorted(labels - TARGET_LABELS):
            if lab == "le" and any(m.endswith("_bucket") for m in metrics):
                continue
            if lab not in have:
                problems.append("%s: label %s is on none of %s" % (where, lab, sorted(metrics)))
    return problems


def main():
    build = sys.argv[1]
    s = lbsystem.System(build, tls=True)
    samples = {}
    try:
        s.start()
        # a few requests per backend, so the per-backend histograms have samples
        lbsystem.wait_for(lambda: all(b["requests"] > 0 for b in s.backends()
                                      if b["id"] in lbsystem.BACKENDS), 20, "traffic")
        time.sleep(1.5)
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % s.metrics, timeout=5) as r:
            parse_exposition(r.read().decode(), samples)
        req = urllib.request.Request(s.url + "/metrics", headers={"Authorization": "Bearer " + s.ro})
        with urllib.request.urlopen(req, timeout=5) as r:
            parse_exposition(r.read().decode(), samples)
    finally:
        codes = s.stop()
    items = collect()
    problems = check(items, samples)
    problems += ["%s exited with status %s" % (n, c) for n, c in codes.items() if c != 0]
    for p in problems:
        print("FAIL " + p)
    used = set().union(*(m for _, m, _ in items))
    print("%d expressions, %d metric names checked against %d exported series names: %s" %
          (len(items), len(used), len(samples), "ok" if not problems else "%d problems" % len(problems)))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
