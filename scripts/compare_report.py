#!/usr/bin/python3
"""compare_report.py — turns a scripts/compare.sh folder into report.md and three plots.

    compare_report.py DIR            (DIR/manifest, DIR/runs/*.jsonl|.meta -> DIR/report.md, *.png)
    compare_report.py --json DIR     print the computed table as JSON (tests compare it
                                     with their own reading of the JSONL files)

Every number in the table is computed from the metrics JSONL that ./train wrote (one object
per step, one per evaluation with "eval": true) and from the .meta facts compare.sh
recorded (wall time, veth byte counters). Definitions (also printed in the report):
  time/epoch      mean over the epochs run of the sum of t_step of that epoch's steps
                  (training only: the per-epoch evaluation is not counted)
  median step     median of t_step (robust to a busy neighbour on a shared machine)
  time to target  sum of t_step up to the first evaluation whose top1 >= target
  final top1      top1 of the last evaluation; final loss: mean train loss of the last epoch
  bytes/step      mean of bytes_sent (the engine's model of this rank's wire bytes)
  veth/step       measured: bytes the ranks' veth links sent during the run / ranks / steps
  exposed comm    sum of t_comm_exposed / sum of t_step
  speedup         time/epoch of the baseline (`none`, else the first variant) / this one's
Deterministic columns (same seed, same binary, same rank count => same values on a re-run):
final top1, final loss, loss digest, bytes/step, compression ratio, steps. Timing columns
(time/epoch, median step, time to target, exposed comm, encode, speedup) vary with load.
"""
import hashlib
import json
import math
import os
import statistics
import sys

PLOT_W, PLOT_H, PLOT_DPI = 8.0, 5.0, 100  # every PNG is 800 x 500 pixels


def read_kv(path):
    out = {}
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line:
                k, v = line.split("=", 1)
                out[k] = v
    return out


def label_file(v):
    return "".join(c if (c.isalnum() or c in "._-") else "_" for c in v)


def read_jsonl(path):
    steps, evals = [], []
    if not os.path.exists(path):
        return steps, evals
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise SystemExit("error: compare_report: %s:%d: not JSON: %s" % (path, n, e))
            (evals if rec.get("eval") else steps).append(rec)
    return steps, evals


def loss_digest(steps):
    """First 12 hex digits of SHA-1 over the per-step losses as logged: equal digests mean
    the two runs took bit-identical training trajectories (to the logged precision)."""
    h = hashlib.sha1()
    for s in steps:
        h.update(("%.6f\n" % s["loss"]).encode())
    return h.hexdigest()[:12]


def summarize(variant, steps, evals, meta, ranks):
    r = {"variant": variant, "ok": bool(steps) and meta.get("rc", "0") == "0", "steps": len(steps)}
    r["rc"] = meta.get("rc", "?")
    if not steps:
        return r
    by_epoch = {}
    for s in steps:
        by_epoch.setdefault(s["epoch"], []).append(s)
    epochs = sorted(by_epoch)
    # Only whole epochs count towards time/epoch (a max_steps run may stop mid-epoch).
    full = [e for e in epochs if len(by_epoch[e]) == len(by_epoch[epochs[0]])] or epochs
    t_ep = [sum(s["t_step"] for s in by_epoch[e]) for e in full]
    sum_t = sum(s["t_step"] for s in steps)
    r["epochs"] = len(epochs)
    r["steps_per_epoch"] = len(by_epoch[epochs[0]])
    r["time_per_epoch"] = sum(t_ep) / len(t_ep)
    r["median_step"] = statistics.median(s["t_step"] for s in steps)
    r["mean_step"] = sum_t / len(steps)
    r["t_compute"] = sum(s["t_compute"] for s in steps) / len(steps)
    r["t_encode"] = sum(s["t_encode"] for s in steps) / len(steps)
    r["t_decode"] = sum(s["t_decode"] for s in steps) / len(steps)
    r["t_exposed"] = sum(s["t_comm_exposed"] for s in steps) / len(steps)
    r["t_data"] = sum(s.get("t_data", 0.0) for s in steps) / len(steps)
    r["exposed_share"] = sum(s["t_comm_exposed"] for s in steps) / sum_t if sum_t > 0 else 0.0
    r["bytes_per_step"] = sum(s["bytes_sent"] for s in steps) / len(steps)
    r["compression"] = sum(s["compression_ratio"] for s in steps) / len(steps)
    last = by_epoch[epochs[-1]]
    r["final_loss"] = sum(s["loss"] for s in last) / len(last)
    r["loss_digest"] = loss_digest(steps)
    r["wall_s"] = float(meta["wall_s"]) if meta.get("wall_s") else None
    per_rank = [int(x) for x in meta.get("veth_tx_bytes_per_rank", "").split(",") if x.strip()]
    if not per_rank and int(meta.get("veth_tx_bytes", "0") or 0) > 0:  # older folders: the total only
        per_rank = [int(meta["veth_tx_bytes"]) / ranks] * ranks
    r["veth_per_step"] = sum(per_rank) / len(per_rank) / len(steps) if per_rank else None
    r["veth_max_per_step"] = max(per_rank) / len(steps) if per_rank else None
    # Accuracy against training time: evaluation k (after k epochs) at the sum of t_step
    # of the steps before it.
    curve = []
    for ev in evals:
        t = sum(s["t_step"] for s in steps if s["step"] <= ev["step"])
        curve.append((t, ev["top1"], ev["epoch"]))
    r["curve"] = curve
    r["final_top1"] = evals[-1]["top1"] if evals else None
    r["final_top5"] = evals[-1]["top5"] if evals else None
    return r


TIMING = ("time_per_epoch", "median_step", "mean_step", "t_compute", "t_encode", "t_decode", "t_exposed", "t_data",
          "exposed_share", "wall_s", "veth_per_step", "veth_max_per_step")


def combine(reps):
    """One row per variant: the seeded columns from the first repeat (and whether every
    repeat agrees on them), the timing columns as the median over the repeats, and the
    accuracy curve re-timed with the median time/epoch."""
    ok = [r for r in reps if r.get("steps")]
    if not ok:
        return dict(reps[0])
    row = dict(ok[0])
    row["repeats"] = len(reps)
    row["repeats_ok"] = len(ok)
    row["ok"] = all(r.get("ok") for r in reps)
    row["reproducible"] = all(r["loss_digest"] == ok[0]["loss_digest"] and r["final_top1"] == ok[0]["final_top1"]
                              and r["steps"] == ok[0]["steps"] for r in ok)
    for k in TIMING:
        vals = [r[k] for r in ok if r.get(k) is not None]
        row[k] = statistics.median(vals) if vals else None
    row["time_per_epoch_all"] = [r["time_per_epoch"] for r in ok]
    # The curve of the repeat whose time/epoch is closest to the median.
    mid = min(ok, key=lambda r: abs(r["time_per_epoch"] - row["time_per_epoch"]))
    row["curve"] = mid["curve"]
    row["file"] = mid["file"]
    row["reps"] = ok
    return row


def compute(out_dir):
    man = read_kv(os.path.join(out_dir, "manifest"))
    if not man:
        raise SystemExit("error: compare_report: %s/manifest: missing (not a compare.sh folder)" % out_dir)
    ranks = int(man.get("ranks", "1"))
    variants = [v for v in man.get("variants", "").split(",") if v]
    repeat = int(man.get("repeat", "1") or 1)
    rows = []
    for v in variants:
        reps = []
        for k in range(1, repeat + 1):
            f = "%s.r%d" % (label_file(v), k)
            steps, evals = read_jsonl(os.path.join(out_dir, "runs", f + ".jsonl"))
            meta = read_kv(os.path.join(out_dir, "runs", f + ".meta"))
            r = summarize(v, steps, evals, meta, ranks)
            r["sets"] = meta.get("sets", "")
            r["file"] = f
            reps.append(r)
        rows.append(combine(reps))
    done = [r for r in rows if r.get("final_top1") is not None]
    best = max((r["final_top1"] for r in done), default=None)
    if man.get("target"):
        target, target_why = float(man["target"]), "given with --target"
    elif best is not None:
        target, target_why = 0.95 * best, "95%% of the best final top-1 across variants (%.4f)" % best
    else:
        target, target_why = None, "no evaluation"
    base = next((r for r in rows if r["variant"].split(":")[0] == "none" and r.get("steps")), None)
    base = base or next((r for r in rows if r.get("steps")), None)
    band = float(man["band"]) if man.get("band") else 0.02
    # Load-robust view: the same compute time C for every variant (the median of their
    # t_compute) plus each variant's own non-compute time per step (exposed communication,
    # data wait, optimizer). On a shared machine a neighbour's load moves t_compute by up to
    # 2x between runs; this isolates what the exchange itself costs.
    ran = [r for r in rows if r.get("steps")]
    C = statistics.median(r["t_compute"] for r in ran) if ran else 0.0
    for r in ran:
        r["t_noncompute"] = max(0.0, r["mean_step"] - r["t_compute"])
    for r in rows:
        if not r.get("steps"):
            continue
        # Median over the runs of each run's own time to target (None if any run missed it).
        ttts = []
        for rep in r.get("reps", [r]):
            hit = next((t for t, a, _ in rep["curve"] if a >= target), None) if target is not None else None
            ttts.append(hit)
        r["time_to_target"] = statistics.median(ttts) if ttts and None not in ttts else None
        r["speedup"] = base["time_per_epoch"] / r["time_per_epoch"] if base and r["time_per_epoch"] > 0 else None
        r["speedup_median"] = base["median_step"] / r["median_step"] if base and r["median_step"] > 0 else None
        r["speedup_equal_compute"] = (C + base["t_noncompute"]) / (C + r["t_noncompute"]) if base else None
        bt, rt = (base or {}).get("time_to_target"), r.get("time_to_target")
        r["speedup_to_target"] = bt / rt if bt and rt else None
        if base and base.get("final_top1") is not None and r.get("final_top1") is not None:
            r["in_band"] = abs(r["final_top1"] - base["final_top1"]) <= band
        else:
            r["in_band"] = None
    return {"manifest": man, "rows": rows, "target": target, "target_why": target_why,
            "baseline": base["variant"] if base else None, "band": band}


def fmt(x, spec, none="–"):
    return none if x is None else format(x, spec)


def save_plot(fig, ax, out_dir, name, made, legend=None, grid_axis="both"):
    """Legend and grid, then out_dir/name at the report's size (PLOT_*), recorded in made.
    (Only write_plots calls this, after it has imported pyplot.)"""
    import matplotlib.pyplot as plt
    ax.grid(axis=grid_axis, alpha=0.3)
    ax.legend(**(legend or {}))
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=PLOT_DPI)
    plt.close(fig)
    made.append(name)


def write_plots(out_dir, res):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    rows = [r for r in res["rows"] if r.get("steps")]
    made = []

    fig, ax = plt.subplots(figsize=(PLOT_W, PLOT_H), dpi=PLOT_DPI)
    for r in rows:
        if r["curve"]:
            ax.plot([0] + [c[0] for c in r["curve"]], [0.1] + [c[1] for c in r["curve"]], marker="o",
                    label=r["variant"])
    if res["target"] is not None:
        ax.axhline(res["target"], color="grey", ls="--", lw=1, label="target %.3f" % res["target"])
    ax.set_xlabel("training wall time, s (sum of t_step; chance level drawn at t=0)")
    ax.set_ylabel("test top-1")
    ax.set_title("accuracy vs wall time")
    save_plot(fig, ax, out_dir, "acc_vs_time.png", made)

    fig, ax = plt.subplots(figsize=(PLOT_W, PLOT_H), dpi=PLOT_DPI)
    for r in rows:
        steps, _ = read_jsonl(os.path.join(out_dir, "runs", r["file"] + ".jsonl"))
        xs = [s["step"] for s in steps]
        ys = [s["loss"] for s in steps]
        k = max(1, len(ys) // 30)
        sm = [sum(ys[max(0, i - k + 1):i + 1]) / len(ys[max(0, i - k + 1):i + 1]) for i in range(len(ys))]
        line, = ax.plot(xs, sm, label="%s (mean of %d)" % (r["variant"], k))
        ax.plot(xs, ys, color=line.get_color(), alpha=0.2, lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("loss vs step (faint: per step)")
    save_plot(fig, ax, out_dir, "loss_vs_step.png", made)

    fig, ax = plt.subplots(figsize=(PLOT_W, PLOT_H), dpi=PLOT_DPI)
    x = list(range(len(rows)))
    comp = [1e3 * r["t_compute"] for r in rows]
    expo = [1e3 * r["t_exposed"] for r in rows]
    other = [max(0.0, 1e3 * r["mean_step"] - c - e) for r, c, e in zip(rows, comp, expo)]
    enc = [1e3 * (r["t_encode"] + r["t_decode"]) for r in rows]
    w = 0.38
    ax.bar([i - w / 2 for i in x], comp, w, label="compute (forward + backward)")
    ax.bar([i - w / 2 for i in x], expo, w, bottom=comp, label="exposed communication")
    ax.bar([i - w / 2 for i in x], other, w, bottom=[c + e for c, e in zip(comp, expo)],
           label="other (data wait, optimizer)")
    ax.bar([i + w / 2 for i in x], enc, w, hatch="//", fill=False,
           label="encode + decode (comm thread, overlaps compute)")
    ax.set_xticks(x)
    ax.set_xticklabels([r["variant"] for r in rows])
    ax.set_ylabel("ms per step (mean)")
    ax.set_title("where a step goes")
    save_plot(fig, ax, out_dir, "time_breakdown.png", made, legend={"fontsize": 8}, grid_axis="y")
    return made


def write_report(out_dir, res, plots):
    man = res["manifest"]
    L = []
    L.append("# compare: %s, %s rank(s)" % (man.get("config"), man.get("ranks")))
    L.append("")
    net = man.get("netcluster")
    if net:
        delay_note = ""
        if man.get("netcluster_delay_applied") == "0" and man.get("netcluster_delay_s", "0") not in ("0", ""):
            delay_note = " (delay %s requested but NOT applied: no sch_netem in this kernel)" % man.get(
                "netcluster_delay")
        L.append("Network: scripts/netcluster.sh, one rank per namespace, %s per link in each direction%s; "
                 "Open MPI over TCP on the veth links only (pml ob1, btl tcp,self)." % (
                     man.get("netcluster_rate", net), delay_note))
    else:
        L.append("Network: none (ranks on one host, Open MPI's shared memory transport).")
    if man.get("sanitizer_build") == "1":
        L.append("**Warning: the binary was a sanitizer (ASan) build: the timing columns are not representative.**")
    L.append("Host: %s cores, load average %s before and %s after (other work on the machine slows "
             "every variant; --repeat interleaves runs to share it out). Extra settings: `%s`. "
             "Runs per variant: %s. Started %s." % (
                 man.get("host_cores"), man.get("load_before", "?"), man.get("load_after", "?"),
                 man.get("sets") or "-", man.get("repeat", "1"), man.get("date")))
    L.append("Target accuracy: %s%s. Baseline for speedups: `%s`. Equal-accuracy band: final top-1 "
             "within %.3f of the baseline's." % (fmt(res["target"], ".4f"),
                                                 " (" + res["target_why"] + ")", res["baseline"], res["band"]))
    L.append("")
    L.append("| variant | time/epoch s | median step ms | time to target s | final top1 | in band | final loss "
             "| bytes/step | veth/step mean, max rank | compression | exposed comm | encode+decode ms | speedup/epoch "
             "| speedup median | speedup to target | loss digest | speedup at equal compute |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        if not r.get("steps"):
            L.append("| %s | failed (exit %s) |%s" % (r["variant"], r["rc"], " |" * 15))
            continue
        band = {True: "yes", False: "no", None: "–"}[r["in_band"]]
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | `%s` | %s |" % (
            r["variant"], fmt(r["time_per_epoch"], ".2f"), fmt(1e3 * r["median_step"], ".1f"),
            fmt(r["time_to_target"], ".2f", "not reached"), fmt(r["final_top1"], ".4f"), band,
            fmt(r["final_loss"], ".4f"), human_bytes(r["bytes_per_step"]),
            ("%s, %s" % (human_bytes(r["veth_per_step"]), human_bytes(r["veth_max_per_step"])))
            if r["veth_per_step"] else "–", fmt(r["compression"], ".2f") + "x",
            fmt(100 * r["exposed_share"], ".1f") + "%", fmt(1e3 * (r["t_encode"] + r["t_decode"]), ".2f"),
            fmt(r["speedup"], ".3f") + ("x" if r["speedup"] else ""),
            fmt(r["speedup_median"], ".3f") + ("x" if r["speedup_median"] else ""),
            fmt(r["speedup_to_target"], ".2f") + ("x" if r["speedup_to_target"] else ""), r["loss_digest"],
            fmt(r["speedup_equal_compute"], ".3f") + ("x" if r["speedup_equal_compute"] else "")))
    L.append("")
    L.append("Per step (means over steps, ms; with several runs, the median over runs):")
    L.append("")
    L.append("| variant | steps | epochs | t_step | t_compute | t_comm_exposed | t_encode | t_decode | t_data | "
             "run wall s | runs: seeded columns equal | time/epoch of each run s | settings |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        if not r.get("steps"):
            continue
        L.append("| %s | %d | %d | %.1f | %.1f | %.1f | %.2f | %.2f | %.1f | %s | %d: %s | %s | `%s` |" % (
            r["variant"], r["steps"], r["epochs"], 1e3 * r["mean_step"], 1e3 * r["t_compute"],
            1e3 * r["t_exposed"], 1e3 * r["t_encode"], 1e3 * r["t_decode"], 1e3 * r["t_data"],
            fmt(r["wall_s"], ".1f"), r["repeats_ok"], "yes" if r["reproducible"] else "NO",
            ", ".join("%.2f" % t for t in r["time_per_epoch_all"]), r["sets"]))
    L.append("")
    L.append("Columns. Deterministic (identical when the same folder is re-run with the same binary and rank "
             "count): final top1, in band, final loss, bytes/step, compression, steps, loss digest (SHA-1 of the "
             "logged per-step losses). Timing (differ run to run, more so on a shared machine): time/epoch, "
             "median step, time to target, veth/step (TCP/IP headers and launch traffic included), exposed comm, "
             "encode+decode, the speedups.")
    L.append("")
    L.append("Definitions: time/epoch = mean over epochs of the summed t_step (evaluation excluded); time to "
             "target = summed t_step until the first per-epoch evaluation with top1 >= target (resolution: one "
             "epoch); bytes/step = the exchange engine's count of this rank's wire bytes (bandwidth-optimal "
             "schedule); veth/step = measured bytes leaving the ranks' veth interfaces per step, mean over ranks and the busiest rank (Open MPI's in-place Iallreduce is a binomial tree: rank 0 sends more); exposed "
             "comm = time the step waited for the exchange after backward, as a share of step time; speedup = "
             "baseline time/epoch / variant time/epoch; speedup at equal compute = (C + baseline's t_step - "
             "t_compute) / (C + this variant's), C = the median t_compute of all variants: the exchange's effect "
             "with the neighbours' load on compute taken out (it assumes the codec does not slow compute).")
    if plots:
        L.append("")
        L.append("Plots (%dx%d px): %s" % (int(PLOT_W * PLOT_DPI), int(PLOT_H * PLOT_DPI),
                                           ", ".join("[%s](%s)" % (p, p) for p in plots)))
    else:
        L.append("")
        L.append("Plots: not drawn (matplotlib unavailable).")
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")


def human_bytes(b):
    if b is None:
        return "–"
    if b >= 1e6:
        return "%.3f MB" % (b / 1e6)
    if b >= 1e3:
        return "%.1f kB" % (b / 1e3)
    return "%.0f B" % b


def main(argv):
    if len(argv) == 3 and argv[1] == "--json":
        res = compute(argv[2])
        for r in res["rows"]:
            r.pop("reps", None)
        print(json.dumps(res, indent=1, default=lambda o: None))
        return 0
    if len(argv) != 2 or argv[1].startswith("-"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    res = compute(argv[1])
    plots = write_plots(argv[1], res)
    write_report(argv[1], res, plots)
    bad = [r["variant"] for r in res["rows"] if not r.get("ok")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
