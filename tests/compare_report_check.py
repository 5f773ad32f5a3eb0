#!/usr/bin/env python3
"""Checks a scripts/compare.sh folder: every number of report.md's tables against this
file's own reading of the JSONL metrics (independent code: it shares nothing with
scripts/compare_report.py), and the three PNGs (signature, IHDR size).

    compare_report_check.py DIR WIDTH HEIGHT
Prints one line per problem and exits 1 if there is any.
"""
import json
import os
import statistics
import struct
import sys


def jsonl(path):
    with open(path) as f:
        recs = [json.loads(x) for x in f if x.strip()]
    return [r for r in recs if not r.get("eval")], [r for r in recs if r.get("eval")]


def table(md, first_header):
    """Rows of the markdown table whose header starts with first_header: {variant: [cells]}."""
    lines = md.splitlines()
    i = next(k for k, l in enumerate(lines) if l.startswith("| " + first_header))
    out = {}
    for l in lines[i + 2:]:
        if not l.startswith("|"):
            break
        cells = [c.strip() for c in l.strip().strip("|").split("|")]
        out[cells[0]] = cells
    return out


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def main(d, width, height):
    bad = []
    man = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(d, "manifest")) if "=" in l)
    variants = man["variants"].split(",")
    repeat = int(man.get("repeat", "1"))
    md = open(os.path.join(d, "report.md")).read()
    main_t = table(md, "variant | time/epoch")
    step_t = table(md, "variant | steps")
    per = {}
    for v in variants:
        f = "".join(c if c.isalnum() or c in "._-" else "_" for c in v)
        runs = [jsonl(os.path.join(d, "runs", "%s.r%d.jsonl" % (f, k))) for k in range(1, repeat + 1)]
        steps, evals = runs[0]
        if not steps or not evals:
            bad.append("%s: no metrics" % v)
            continue

        def t_epoch(st):
            ep = {}
            for s in st:
                ep[s["epoch"]] = ep.get(s["epoch"], 0.0) + s["t_step"]
            return sum(ep.values()) / len(ep)

        per[v] = {
            "time_per_epoch": statistics.median(t_epoch(r[0]) for r in runs),
            "median_step_ms": statistics.median(statistics.median(s["t_step"] for s in r[0]) for r in runs) * 1e3,
            "top1": evals[-1]["top1"],
            "bytes": sum(s["bytes_sent"] for s in steps) / len(steps),
            "ratio": sum(s["compression_ratio"] for s in steps) / len(steps),
            "exposed": statistics.median(sum(s["t_comm_exposed"] for s in r[0]) / sum(s["t_step"] for s in r[0])
                                         for r in runs) * 100,
            "steps": len(steps),
            "same": all([round(s["loss"], 6) for s in r[0]] == [round(s["loss"], 6) for s in steps] and
                        r[1][-1]["top1"] == evals[-1]["top1"] for r in runs),
        }
    base = per.get("none") or per[variants[0]]
    for v, p in per.items():
        row, srow = main_t.get(v), step_t.get(v)
        if not row or not srow:
            bad.append("%s: missing from report.md" % v)
            continue

        def check(name, cell, want, fmt):
            if cell != fmt % want:
                bad.append("%s: %s is '%s' in report.md, the JSONL gives '%s'" % (v, name, cell, fmt % want))

        check("time/epoch", row[1], p["time_per_epoch"], "%.2f")
        check("median step", row[2], p["median_step_ms"], "%.1f")
        check("final top1", row[4], p["top1"], "%.4f")
        b = p["bytes"]
        check("bytes/step", row[7], b / 1e6 if b >= 1e6 else b / 1e3, "%.3f MB" if b >= 1e6 else "%.1f kB")
        check("compression", row[9], p["ratio"], "%.2fx")
        check("exposed comm", row[10], p["exposed"], "%.1f%%")
        check("speedup/epoch", row[12], base["time_per_epoch"] / p["time_per_epoch"], "%.3fx")
        check("steps", srow[1], p["steps"], "%d")
        check("repeats agree", srow[10], "%d: %s" % (repeat, "yes" if p["same"] else "NO"), "%s")
    for name in ("acc_vs_time.png", "loss_vs_step.png", "time_breakdown.png"):
        path = os.path.join(d, name)
        if not os.path.exists(path):
            bad.append("%s: missing" % name)
            continue
        size = png_size(path)
        if size != (width, height):
            bad.append("%s: PNG size %s, expected %dx%d" % (name, size, width, height))
        if "(%s)" % name not in md:
            bad.append("report.md does not link %s" % name)
    for b in bad:
        print("FAIL: " + b)
    if not bad:
        print("report.md matches the JSONL of %d variant(s) x %d run(s); PNGs %dx%d" % (
            len(per), repeat, width, height))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
