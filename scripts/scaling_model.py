#!/usr/bin/python3
"""scaling_model.py — predicts qtrain's step time on N ranks from a per-layer profile.

    scripts/scaling_model.py --profile PROF.json --bandwidth 10gbit [--latency 20us]
        [--codecs none,qsgd:b=4,qsgd:b=8,ecq:b=2] [--ranks 2,4,...,256]
        [--collective allgather|rsag] [--allreduce ring|binomial|redscat]
        [--quantbench QB.txt | --enc-gbps X --dec-gbps Y] [--bucket-kb 4096] [--min-size 10000]
        [--no-overlap] [--compute-scale F | --compute-time SECONDS] [--batch B]
        [--plot FILE.png] [--json]

Inputs. PROF.json is what `./train --profile` writes: per layer (forward order) its
forward and backward seconds, parameter count and offset in the gradient arena (laid out
in backward order), plus t_other (optimizer and the rest of the step). Codec costs come
from `./quantbench` output (bits/element, encode and decode GB/s of fp32 input, matched by
method, encoding, bits and bucket) or from --enc-gbps/--dec-gbps with the wire size
computed as b + 32/d bits per element (fixed packing, one fp32 scale per codec bucket).
The network is one full-duplex link per rank of --bandwidth in each direction plus a
per-message --latency.

The step, as src/dist/exchange.c runs it:
  forward (sum of t_forward), then backward layer by layer in reverse order; after each
  layer the gradient arena is final up to that layer's end (the watermark). The arena is
  cut into buckets as src/dist/plan.c does: each layer is classed coded (conv/linear/lstm
  with >= min_size parameters, and a codec other than fp32 allreduce) or fp32 (BatchNorm,
  biases, small layers); large layers are cut into pieces of bucket_kb; pieces fill one
  open bucket per class in arena order, a bucket closing when it reaches bucket_kb; buckets
  are started in the order of their end. A bucket is ready when backward has passed its
  end. One communication thread encodes a ready bucket (4n bytes / encode rate), posts its
  collective, and decodes finished ones (decode rate), serially, the earliest job first
  (encode before decode on a tie, as the engine starts before it advances). Collectives
  occupy the rank's link one after another (FIFO), each for its occupancy below. Times of one collective, message m
  bytes per rank, n elements, N ranks, bandwidth B, latency a:
    allreduce fp32, ring      2(N-1) a + 2 (N-1)/N * 4n / B
    allreduce fp32, binomial  2 ceil(log2 N) (a + 4n / B)   (reduce to rank 0 + broadcast:
                              what Open MPI's libnbc picks for MPI_IN_PLACE, N < 4 or < 64 KiB);
                              it occupies the link for only half of that: the reduce loads
                              the root's inbound direction, the broadcast its outbound one,
                              so the next bucket's reduce overlaps this one's broadcast
                              (only the first --pipeline-max bytes of each message: see Net)
    allreduce fp32, redscat   2 ceil(log2 N) a + 2 (N-1)/N * 4n / B   (Rabenseifner)
    allgather                 (N-1) a + (N-1) m / B; then decode N messages of n elements
    rsag                      reduce-scatter (N-1) a + (N-1)/N m / B; the owner decodes N
                              chunks of n/N and re-encodes one; all-gather (N-1) a +
                              (N-1)/N m / B; decode N chunks of n/N
  Without overlap every bucket is ready when backward ends. Exposed communication = when
  the last bucket is decoded minus when backward ended (>= 0), plus the end-of-step NaN
  agreement (a small allreduce: 2 ceil(log2 N) a). Step time = forward + backward +
  t_other + exposed. Compute per rank does not change with N (weak scaling: fixed batch
  per rank), so speedup over fp32 = step(fp32 allreduce) / step(codec) at the same N.

Not modelled: CPU contention between the communication thread and compute (it matters
when ranks share cores, as on the 2-core test machine), stragglers, congestion inside the
switch (the netcluster bridge and a full-bisection fabric have none), TCP slow start.
"""
import argparse
import json
import math
import re
import sys

HEADER_BYTES = 16  # src/quant: every encoded message carries a 16-byte header


# ---- parsing ---------------------------------------------------------------------------

def parse_rate(s):
    """'200mbit', '100gbit', '12.5GB/s', '500MB/s', '1e9' (bytes/s) -> bytes per second."""
    t = s.strip().lower()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z/]*)", t)
    if not m:
        raise ValueError("bad rate '%s' (e.g. 200mbit, 100gbit, 12.5GB/s)" % s)
    x, u = float(m.group(1)), m.group(2)
    bits = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}
    byts = {"": 1, "b/s": 1, "bps": 1, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9, "kbps": 1e3, "mbps": 1e6,
            "gbps": 1e9}
    if u in bits:
        return x * bits[u] / 8.0
    if u in byts:
        return x * byts[u]
    raise ValueError("bad rate unit in '%s'" % s)


def parse_time(s):
    """'100us', '1ms', '0.5s', '0' -> seconds."""
    t = s.strip().lower()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(s|ms|us|ns|)", t)
    if not m:
        raise ValueError("bad time '%s' (e.g. 100us, 1ms)" % s)
    return float(m.group(1)) * {"": 1, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[m.group(2)]


class Codec:
    """A gradient codec and its costs. spec: METHOD[:key=value...] as scripts/compare.sh."""

    def __init__(self, spec):
        self.spec = spec
        parts = spec.split(":")
        self.method = parts[0]
        if self.method not in ("none", "fp16", "bf16", "qsgd", "ecq", "onebit", "terngrad", "topk"):
            raise ValueError("codec '%s': unknown method" % spec)
        self.bits, self.bucket, self.encoding, self.norm = 4, 0, "fixed", "max"
        self.topk, self.collective = 0.01, None
        self.bits_per_elem, self.enc_Bps, self.dec_Bps = None, None, None
        for kv in parts[1:]:
            if "=" not in kv:
                raise ValueError("codec '%s': '%s' is not key=value" % (spec, kv))
            k, v = kv.split("=", 1)
            if k in ("b", "bits"):
                self.bits = int(v)
            elif k in ("d", "bucket"):
                self.bucket = int(v)
            elif k in ("enc", "encoding"):
                self.encoding = v
            elif k == "norm":
                self.norm = v
            elif k == "topk":
                self.topk = float(v)
            elif k in ("coll", "collective"):
                self.collective = v
            elif k in ("bpe", "bits_per_elem"):
                self.bits_per_elem = float(v)
            elif k in ("alpha", "beta", "clip", "min_size", "warmup_steps", "overlap", "bucket_kb") or "." in k:
                pass  # no effect on the wire size or the codec's speed (x.y: another setting)
            else:
                raise ValueError("codec '%s': unknown key '%s'" % (spec, k))
        if self.method == "onebit":
            self.bits = 1
        if self.bucket == 0:
            self.bucket = 128 if self.bits <= 2 else 512
        if self.method == "none":
            self.collective = "allreduce"

    @property
    def is_fp32_allreduce(self):
        return self.method == "none" and self.collective == "allreduce"

    def wire_bits(self):
        """Bits per element on the wire (without the per-message header)."""
        if self.bits_per_elem is not None:
            return self.bits_per_elem
        if self.method == "none":
            return 32.0
        if self.method in ("fp16", "bf16"):
            return 16.0
        if self.method == "onebit":
            return 1.0 + 64.0 / self.bucket  # a sign bit + two fp32 level means per bucket
        if self.method == "topk":
            return self.topk * 64.0  # value + index per kept element (upper bound)
        return self.bits + 32.0 / self.bucket  # qsgd, ecq, terngrad: b bits + fp32 scale

    def message_bytes(self, n):
        return math.ceil(n * self.wire_bits() / 8.0) + HEADER_BYTES

    def quantbench_key(self):
        m = self.method
        if m in ("qsgd", "ecq"):
            name = "%s/%s" % (m, self.norm)
        else:
            name = m
        return name, self.encoding, self.bits, self.bucket


def read_quantbench(path):
    """Rows of ./quantbench's table: (codec, encoding, bits, bucket) -> (bits/elem, enc, dec GB/s)."""
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            p = line.split()
            if len(p) != 9 or p[0] == "codec":
                continue
            try:
                bpe, enc, dec = float(p[4]), float(p[7]), float(p[8])
            except ValueError:
                continue
            bits = int(p[2]) if p[2].isdigit() else None
            bucket = int(p[3]) if p[3].isdigit() else None
            rows[(p[0], p[1], bits, bucket)] = (bpe, enc * 1e9, dec * 1e9)
    return rows


def attach_costs(codec, qb, enc_gbps, dec_gbps):
    """Fills codec.enc_Bps / dec_Bps (and bits/elem from quantbench when it has the row)."""
    if codec.method == "none":
        codec.enc_Bps = codec.dec_Bps = math.inf  # fp32 is reduced by MPI itself
        return
    if qb is not None:
        name, enc, bits, bucket = codec.quantbench_key()
        cands = [(name, enc, bits, bucket), (name, "-", None, None), (name, "-", bits, bucket),
                 (name, "varint" if enc == "fixed" else enc, None, None)]
        for k in list(qb):
            if k[0] == name and codec.method in ("onebit", "topk", "fp16", "bf16"):
                cands.append(k)
        for k in cands:
            if k in qb:
                bpe, e, d = qb[k]
                if codec.bits_per_elem is None:
                    # quantbench's bits/elem counts its one 16-byte header over its whole
                    # input; the model adds the header per message, so take b + 32/d form
                    # from the table only for variable-length encodings.
                    if codec.encoding != "fixed" or codec.method in ("topk",):
                        codec.bits_per_elem = bpe
                codec.enc_Bps, codec.dec_Bps = e, d
                return
        raise ValueError("codec '%s': no matching row %s in the quantbench table" % (codec.spec, cands[0]))
    if enc_gbps is None or dec_gbps is None:
        raise ValueError("codec '%s': give --quantbench FILE or --enc-gbps and --dec-gbps" % codec.spec)
    codec.enc_Bps, codec.dec_Bps = enc_gbps * 1e9, dec_gbps * 1e9


# ---- the model -------------------------------------------------------------------------

class Net:
    """Per-rank full-duplex link of B bytes/s each way and a per-message latency a.
    pipeline_max (binomial only): the eager limit E of the transport. Of a message of M
    bytes, the first min(M, E) go out eagerly and can overlap the previous bucket's
    broadcast; the rest waits for the receiver's clear-to-send, which queues behind that
    broadcast on the same connection (Open MPI ob1 over TCP: E = 64 KiB), so it cannot.
    Default: no limit (everything overlaps)."""

    def __init__(self, bandwidth_Bps, latency_s, allreduce="ring", pipeline_max=math.inf):
        if allreduce not in ("ring", "binomial", "redscat"):
            raise ValueError("allreduce algorithm must be ring, binomial or redscat")
        self.B, self.a, self.allreduce = bandwidth_Bps, latency_s, allreduce
        self.pipeline_max = pipeline_max


def clog2(n):
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


def allreduce_time(nbytes, N, net):
    """(occupancy, duration) of one fp32 allreduce: how long it keeps the busiest link
    direction busy, and how long until its result is complete. They differ for the
    binomial tree, whose reduce phase uses the root's inbound direction and whose
    broadcast uses its outbound one: with full-duplex links the next bucket's reduce can
    run under this bucket's broadcast."""
    if N <= 1:
        return 0.0, 0.0
    if net.allreduce == "ring":
        t = 2 * (N - 1) * net.a + 2.0 * (N - 1) / N * nbytes / net.B
        return t, t
    if net.allreduce == "binomial":
        t = clog2(N) * (net.a + nbytes / net.B)
        late = max(0.0, nbytes - net.pipeline_max) if net.pipeline_max < math.inf else 0.0
        occ = clog2(N) * (net.a + (nbytes + late) / net.B)
        return min(occ, 2 * t), 2 * t
    t = 2 * clog2(N) * net.a + 2.0 * (N - 1) / N * nbytes / net.B
    return t, t


def plan_buckets(profile, codec, bucket_kb, min_size):
    """Buckets as src/dist/plan.c cuts them: list of dicts {n, coded, end} sorted by end."""
    target = max(bucket_kb * 1024 // 4, 1)
    all_fp32 = codec.collective == "allreduce"
    pieces = []
    for L in sorted(profile["layers"], key=lambda L: L["param_offset"]):
        n = int(L["params"])
        if n == 0:
            continue
        coded = (not all_fp32) and L["kind"] not in ("bn", "batchnorm") and n >= min_size
        unit = codec.bucket if coded and codec.method in ("qsgd", "ecq", "onebit", "terngrad") else 1
        ln = target // unit * unit if target >= unit else unit
        off = 0
        while off < n:
            c = min(ln, n - off)
            pieces.append({"offset": L["param_offset"] + off, "count": c, "coded": coded})
            off += c
    buckets, open_ = [], {True: None, False: None}
    for p in pieces:
        cls = p["coded"]
        if open_[cls] is None:
            open_[cls] = {"n": 0, "coded": cls, "end": 0}
            buckets.append(open_[cls])
        b = open_[cls]
        b["n"] += p["count"]
        b["end"] = p["offset"] + p["count"]
        if b["n"] >= target:
            open_[cls] = None
    buckets.sort(key=lambda b: b["end"])
    return buckets


def simulate(profile, codec, net, N, bucket_kb=4096, min_size=10000, overlap=True, compute_scale=1.0,
             fp32_codec=None):
    """One step on N ranks. Returns a dict of times (seconds) and the bucket timeline."""
    layers = profile["layers"]
    t_fwd = sum(L["t_forward"] for L in layers) / compute_scale
    # Backward in reverse forward order; the watermark after a layer is its arena end.
    t, marks = t_fwd, []
    for L in reversed(layers):
        t += L["t_backward"] / compute_scale
        marks.append((L["param_offset"] + L["params"], t))
    t_bwd_end = t
    t_other = profile.get("t_other", 0.0) / compute_scale

    def ready_time(end):
        if not overlap:
            return t_bwd_end
        for wm, tt in marks:
            if wm >= end:
                return tt
        return t_bwd_end

    fp32 = fp32_codec or Codec("none")
    buckets = plan_buckets(profile, codec, bucket_kb, min_size)
    coll = codec.collective or "allgather"
    # Jobs for the communication thread: (available_at, order, kind, bucket index, phase).
    link_free, thread_free = 0.0, 0.0
    timeline = []
    pend_enc = list(range(len(buckets)))
    pend_dec = []  # (available_at, bucket, phase)
    done_at = [0.0] * len(buckets)
    for i, b in enumerate(buckets):
        b["ready"] = ready_time(b["end"])

    def post(i, t0, seconds, occupancy=None):
        """A collective posted at t0: starts when the link is free, keeps it busy for
        `occupancy` (default: its whole duration), completes after `seconds`."""
        nonlocal link_free
        s = max(t0, link_free)
        link_free = s + (seconds if occupancy is None else occupancy)
        timeline.append(("xfer", i, s, s + seconds))
        return s + seconds

    while pend_enc or pend_dec:
        ne = (max(buckets[pend_enc[0]]["ready"], thread_free), 0) if pend_enc else (math.inf, 0)
        pend_dec.sort()
        nd = (max(pend_dec[0][0], thread_free), 1) if pend_dec else (math.inf, 1)
        if ne <= nd:  # start the next bucket (encode, post)
            i = pend_enc.pop(0)
            b = buckets[i]
            start = ne[0]
            n = b["n"]
            if not b["coded"] or coll == "allreduce":
                # fp32 (or fp16-on-the-wire) allreduce: MPI reduces, no codec work.
                wire = 2 if (b["coded"] and codec.method in ("fp16", "bf16")) else 4
                occ, dur = allreduce_time(wire * n, N, net)
                end_x = post(i, start, dur, occ)
                done_at[i] = end_x
                continue
            enc = 4.0 * n / codec.enc_Bps
            thread_free = start + enc
            timeline.append(("encode", i, start, thread_free))
            if coll == "allgather":
                m = codec.message_bytes(n)
                end_x = post(i, thread_free, (N - 1) * (net.a + m / net.B) if N > 1 else 0.0)
                pend_dec.append((end_x, i, "final"))
            elif coll == "rsag":
                m = codec.message_bytes(n)
                end_x = post(i, thread_free, (N - 1) * net.a + (N - 1) / N * m / net.B if N > 1 else 0.0)
                pend_dec.append((end_x, i, "owner"))
            else:
                raise ValueError("collective must be allgather, rsag or allreduce")
        else:  # advance a finished collective (decode)
            avail, i, phase = pend_dec.pop(0)
            b = buckets[i]
            start = nd[0]
            n = b["n"]
            if coll == "allgather":
                dec = N * 4.0 * n / codec.dec_Bps
                thread_free = start + dec
                timeline.append(("decode", i, start, thread_free))
                done_at[i] = thread_free
            elif phase == "owner":
                work = N * 4.0 * (n / N) / codec.dec_Bps + 4.0 * (n / N) / codec.enc_Bps
                thread_free = start + work
                timeline.append(("reencode", i, start, thread_free))
                m = codec.message_bytes(n)
                end_x = post(i, thread_free, (N - 1) * net.a + (N - 1) / N * m / net.B if N > 1 else 0.0)
                pend_dec.append((end_x, i, "final"))
            else:
                dec = N * 4.0 * (n / N) / codec.dec_Bps
                thread_free = start + dec
                timeline.append(("decode", i, start, thread_free))
                done_at[i] = thread_free
    comm_end = max(done_at) if done_at else t_bwd_end
    sync = 2 * clog2(N) * net.a
    exposed = max(0.0, comm_end - t_bwd_end) + sync
    return {"t_step": t_bwd_end + exposed + t_other, "t_forward": t_fwd, "t_backward": t_bwd_end - t_fwd,
            "t_other": t_other, "t_exposed": exposed, "comm_end": comm_end, "n_buckets": len(buckets),
            "bytes_wire": sum(codec.message_bytes(b["n"]) if (b["coded"] and coll != "allreduce") else 4 * b["n"]
                              for b in buckets),
            "timeline": timeline, "buckets": buckets}


def load_profile(path, compute_time=None, batch=None, compute_scale=1.0):
    """Reads a --profile JSON. batch rescales layer times linearly with the per-rank batch;
    compute_time sets forward+backward to that many seconds (shape kept); both scale t_other."""
    with open(path, encoding="utf-8") as f:
        prof = json.load(f)
    for k in ("layers", "t_other"):
        if k not in prof:
            raise ValueError("%s: not a train --profile file (no '%s')" % (path, k))
    factor = 1.0 / compute_scale
    if batch is not None:
        factor *= batch / float(prof["batch"])
    if compute_time is not None:
        tc = sum(L["t_forward"] + L["t_backward"] for L in prof["layers"])
        factor = compute_time / tc
    if factor != 1.0:
        for L in prof["layers"]:
            L["t_forward"] *= factor
            L["t_backward"] *= factor
        prof["t_other"] *= factor
    return prof


# ---- command line ----------------------------------------------------------------------

def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--bandwidth", required=True, help="per-link rate each way: 200mbit, 100gbit, 12.5GB/s")
    ap.add_argument("--latency", default="0", help="per message: 20us, 1ms (default 0)")
    ap.add_argument("--codecs", default="none,qsgd:b=4,qsgd:b=8,ecq:b=2")
    ap.add_argument("--ranks", default="2,4,8,16,32,64,128,256")
    ap.add_argument("--collective", default="allgather", choices=["allgather", "rsag"],
                    help="for codecs that do not name coll= (fp32 `none` always uses allreduce)")
    ap.add_argument("--allreduce", default="ring", choices=["ring", "binomial", "redscat"])
    ap.add_argument("--pipeline-max", type=float, default=math.inf,
                    help="binomial: eager limit in bytes; the rest of a message cannot overlap the previous "
                         "bucket's broadcast (65536 for Open MPI 4.1 over TCP; default: no limit)")
    ap.add_argument("--quantbench")
    ap.add_argument("--enc-gbps", type=float)
    ap.add_argument("--dec-gbps", type=float)
    ap.add_argument("--bucket-kb", type=int, default=4096)
    ap.add_argument("--min-size", type=int, default=10000)
    ap.add_argument("--no-overlap", action="store_true")
    ap.add_argument("--compute-scale", type=float, default=1.0, help="divide profiled compute by this")
    ap.add_argument("--compute-time", type=float, help="forward+backward seconds per step (shape kept)")
    ap.add_argument("--batch", type=int, help="per-rank batch (profile times scale linearly)")
    ap.add_argument("--plot")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv[1:])
    try:
        prof = load_profile(a.profile, a.compute_time, a.batch, a.compute_scale)
        net = Net(parse_rate(a.bandwidth), parse_time(a.latency), a.allreduce, a.pipeline_max)
        codecs = [Codec(s) for s in a.codecs.split(",") if s]
        qb = read_quantbench(a.quantbench) if a.quantbench else None
        for c in codecs:
            if c.collective is None:
                c.collective = a.collective
            attach_costs(c, qb, a.enc_gbps, a.dec_gbps)
        ranks = [int(x) for x in a.ranks.split(",")]
    except (ValueError, OSError) as e:
        print("error: scaling_model: %s" % e, file=sys.stderr)
        return 2
    base = Codec("none")
    attach_costs(base, None, None, None)
    res = []
    for N in ranks:
        b = simulate(prof, base, net, N, a.bucket_kb, a.min_size, not a.no_overlap)
        row = {"ranks": N, "fp32_step": b["t_step"], "codecs": {}}
        for c in codecs:
            r = simulate(prof, c, net, N, a.bucket_kb, a.min_size, not a.no_overlap)
            row["codecs"][c.spec] = {"t_step": r["t_step"], "t_exposed": r["t_exposed"],
                                     "speedup": b["t_step"] / r["t_step"], "wire_bytes": r["bytes_wire"]}
        res.append(row)
    if a.json:
        print(json.dumps({"profile": a.profile, "bandwidth": a.bandwidth, "latency": a.latency,
                          "allreduce": a.allreduce, "rows": res}, indent=1))
    else:
        tc = sum(L["t_forward"] + L["t_backward"] for L in prof["layers"])
        print("# %s: %d params, compute %.2f ms/step (+ %.2f ms other), link %s each way, latency %s, "
              "fp32 allreduce %s, bucket %d KiB, overlap %s" % (
                  a.profile, sum(L["params"] for L in prof["layers"]), 1e3 * tc, 1e3 * prof["t_other"],
                  a.bandwidth, a.latency, a.allreduce, a.bucket_kb, "off" if a.no_overlap else "on"))
        hdr = "| N | fp32 step ms | " + " | ".join("%s step ms | speedup" % c.spec for c in codecs) + " |"
        print(hdr)
        print("|---" * (2 + 2 * len(codecs)) + "|")
        for row in res:
            cells = ["%d" % row["ranks"], "%.2f" % (1e3 * row["fp32_step"])]
            for c in codecs:
                r = row["codecs"][c.spec]
                cells += ["%.2f" % (1e3 * r["t_step"]), "%.2fx" % r["speedup"]]
            print("| " + " | ".join(cells) + " |")
    if a.plot:
        plot(res, codecs, a.plot, "%s, %s/link" % (prof.get("config", a.profile), a.bandwidth))
    return 0


def plot(res, codecs, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    xs = [r["ranks"] for r in res]
    for c in codecs:
        ax.plot(xs, [r["codecs"][c.spec]["speedup"] for r in res], marker="o", label=c.spec)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ranks N")
    ax.set_ylabel("speedup over fp32 allreduce (step time)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
