#!/usr/bin/env python3
"""Unit tests of scripts/scaling_model.py against step times computed by hand.

Every expected value below is written out as the arithmetic of the model's documented
formulas (scaling_model.py's docstring), not taken from a run of the code: a change to the
simulator that moves any number fails here. Run by tests/scaling_model.sh.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
import scaling_model as sm  # noqa: E402

B = 1e8  # bytes per second (800 Mbit/s)


def one_layer():
    """One linear layer of 1,000,000 parameters: forward 0.1 s, backward 0.2 s, other 0.05 s."""
    return {"batch": 32, "t_other": 0.05, "layers": [
        {"name": "fc", "kind": "linear", "params": 1000000, "param_offset": 0, "grad_bytes": 4000000,
         "t_forward": 0.1, "t_backward": 0.2}]}


def two_layers():
    """conv (forward first, 400k params, arena offset 600000) then fc (600k params, offset 0)."""
    return {"batch": 32, "t_other": 0.05, "layers": [
        {"name": "conv", "kind": "conv", "params": 400000, "param_offset": 600000, "grad_bytes": 1600000,
         "t_forward": 0.1, "t_backward": 0.2},
        {"name": "fc", "kind": "linear", "params": 600000, "param_offset": 0, "grad_bytes": 2400000,
         "t_forward": 0.05, "t_backward": 0.1}]}


def qsgd4(enc=2e9, dec=1e10, coll="allgather"):
    c = sm.Codec("qsgd:b=4:coll=" + coll)
    c.enc_Bps, c.dec_Bps = enc, dec
    return c


def fp32():
    c = sm.Codec("none")
    sm.attach_costs(c, None, None, None)
    return c


class Parsing(unittest.TestCase):
    def test_rates(self):
        self.assertEqual(sm.parse_rate("200mbit"), 25e6)
        self.assertEqual(sm.parse_rate("100gbit"), 12.5e9)
        self.assertEqual(sm.parse_rate("12.5GB/s"), 12.5e9)
        self.assertEqual(sm.parse_rate("1e8"), 1e8)
        self.assertRaises(ValueError, sm.parse_rate, "fast")

    def test_times(self):
        self.assertAlmostEqual(sm.parse_time("100us"), 1e-4, places=15)
        self.assertAlmostEqual(sm.parse_time("2ms"), 2e-3, places=15)
        self.assertEqual(sm.parse_time("0"), 0.0)

    def test_codec_wire_size(self):
        # b + 32/d bits per element plus the 16-byte header, rounded up to whole bytes.
        self.assertEqual(qsgd4().message_bytes(1000000), math.ceil(1000000 * 4.0625 / 8) + 16)
        self.assertEqual(sm.Codec("ecq:b=2").wire_bits(), 2 + 32 / 128)
        self.assertEqual(sm.Codec("qsgd:b=8").wire_bits(), 8 + 32 / 512)
        self.assertRaises(ValueError, sm.Codec, "zip:b=3")

    def test_quantbench_table(self):
        text = ("codec          encoding bits   bucket bits/elem    ratio rel_l2_err  enc_GB/s  dec_GB/s\n"
                "qsgd/max       fixed    4      512       4.0627     7.88     0.1906     3.088    10.071\n"
                "qsgd/l2        elias    4      512       1.5395    20.79     1.2583     0.469     2.522\n")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(text)
        try:
            qb = sm.read_quantbench(f.name)
            c = sm.Codec("qsgd:b=4")
            sm.attach_costs(c, qb, None, None)
            self.assertEqual((c.enc_Bps, c.dec_Bps), (3.088e9, 10.071e9))
            self.assertEqual(c.wire_bits(), 4 + 32 / 512)  # fixed: formula, not the table's average
            e = sm.Codec("qsgd:b=4:norm=l2:enc=elias")
            sm.attach_costs(e, qb, None, None)
            self.assertEqual(e.wire_bits(), 1.5395)  # variable length: the measured size
            self.assertRaises(ValueError, sm.attach_costs, sm.Codec("ecq:b=2"), qb, None, None)
        finally:
            os.unlink(f.name)


class OneLayer(unittest.TestCase):
    def test_fp32_ring_two_ranks(self):
        # Ready when backward ends (0.1 + 0.2); ring allreduce of 4e6 bytes on 2 ranks:
        # 2 (N-1)/N * 4e6 / B = 0.04 s, all exposed.
        r = sm.simulate(one_layer(), fp32(), sm.Net(B, 0.0), 2)
        self.assertAlmostEqual(r["t_step"], 0.1 + 0.2 + 0.04 + 0.05, places=12)
        self.assertAlmostEqual(r["t_exposed"], 0.04, places=12)

    def test_fp32_ring_four_ranks_with_latency(self):
        # 2*3*1e-3 latency + 2*3/4 * 4e6/B, then the NaN agreement 2*ceil(log2 4)*1e-3.
        r = sm.simulate(one_layer(), fp32(), sm.Net(B, 1e-3), 4)
        xfer = 2 * 3 * 1e-3 + 1.5 * 4e6 / B
        self.assertAlmostEqual(r["t_step"], 0.3 + xfer + 2 * 2 * 1e-3 + 0.05, places=12)

    def test_fp32_binomial(self):
        # Open MPI's in-place Iallreduce: reduce + broadcast, 2 ceil(log2 N) messages of 4e6.
        r = sm.simulate(one_layer(), fp32(), sm.Net(B, 0.0, "binomial"), 4)
        self.assertAlmostEqual(r["t_step"], 0.3 + 2 * 2 * 4e6 / B + 0.05, places=12)
        r = sm.simulate(one_layer(), fp32(), sm.Net(B, 0.0, "redscat"), 4)
        self.assertAlmostEqual(r["t_step"], 0.3 + 1.5 * 4e6 / B + 0.05, places=12)

    def test_binomial_buckets_pipeline_on_full_duplex_links(self):
        # bucket_kb 1000 -> fp32 buckets of 256000 x 3 + 232000 elements, all ready at 0.3.
        # Binomial on 4 ranks: each bucket keeps the link busy log2(4) * 4n / B (its reduce
        # on the inbound direction, then its broadcast on the outbound one) and completes
        # after twice that; so bucket k starts when bucket k-1's reduce half is done.
        r = sm.simulate(one_layer(), fp32(), sm.Net(B, 0.0, "binomial"), 4, bucket_kb=1000)
        self.assertEqual([b["n"] for b in r["buckets"]], [256000, 256000, 256000, 232000])
        half = 2 * 4 * 256000 / B
        start_last = 0.3 + 3 * half
        self.assertAlmostEqual(r["comm_end"], start_last + 2 * 2 * 4 * 232000 / B, places=12)
        ring = sm.simulate(one_layer(), fp32(), sm.Net(B, 0.0, "ring"), 4, bucket_kb=1000)
        self.assertAlmostEqual(ring["comm_end"], 0.3 + 1.5 * 4e6 / B, places=12)

    def test_binomial_beyond_eager_limit_does_not_pipeline(self):
        # Eager limit 65536 bytes: a 1,024,000-byte bucket occupies the link for
        # log2(4) * (1024000 + (1024000 - 65536)) / B, i.e. all but the eager part twice.
        r = sm.simulate(one_layer(), fp32(), sm.Net(B, 0.0, "binomial", 65536), 4, bucket_kb=1000)
        occ = 2 * (1024000 + 1024000 - 65536) / B
        self.assertAlmostEqual(r["comm_end"], 0.3 + 3 * occ + 2 * 2 * 4 * 232000 / B, places=12)
        # A limit above the message size changes nothing; one below zero-size caps at 2t.
        r = sm.simulate(one_layer(), fp32(), sm.Net(B, 0.0, "binomial", 2e6), 4, bucket_kb=1000)
        self.assertAlmostEqual(r["comm_end"], 0.3 + 3 * 2 * 4 * 256000 / B + 2 * 2 * 4 * 232000 / B, places=12)
        r = sm.simulate(one_layer(), fp32(), sm.Net(B, 0.0, "binomial", 0), 4, bucket_kb=1000)
        self.assertAlmostEqual(r["comm_end"], 0.3 + 2 * 2 * 4e6 / B, places=12)

    def test_qsgd_allgather_one_bucket(self):
        # encode 4e6 B at 2 GB/s, send the 507829-byte message to 3 peers, decode 4 messages
        # of 1e6 elements (16e6 bytes of fp32) at 10 GB/s.
        m = math.ceil(1e6 * 4.0625 / 8) + 16
        self.assertEqual(m, 507829)
        r = sm.simulate(one_layer(), qsgd4(), sm.Net(B, 0.0), 4)
        expect = 0.3 + 4e6 / 2e9 + 3 * m / B + 4 * 4e6 / 1e10
        self.assertAlmostEqual(r["t_step"], expect + 0.05, places=12)
        self.assertAlmostEqual(r["t_step"], 0.36883487, places=12)

    def test_qsgd_allgather_pipelined_buckets(self):
        # bucket_kb 1000 -> 256000 elements (500 codec buckets of 512): buckets of 256000,
        # 256000, 256000, 232000, all ready at 0.3. The thread encodes all four back to back
        # (each encode is ready before any transfer ends), the link carries them in order,
        # and each decode starts when its transfer ends.
        net = sm.Net(B, 0.0)
        r = sm.simulate(one_layer(), qsgd4(), net, 4, bucket_kb=1000)
        self.assertEqual([b["n"] for b in r["buckets"]], [256000, 256000, 256000, 232000])
        m_full, m_last = 130016, 117829  # ceil(n * 4.0625 / 8) + 16
        enc_end_0 = 0.3 + 4 * 256000 / 2e9
        x = enc_end_0
        for m in (m_full, m_full, m_full, m_last):
            x += 3 * m / B  # link busy back to back from the first post
        comm_end = x + 4 * 4 * 232000 / 1e10  # the last decode
        self.assertAlmostEqual(r["comm_end"], comm_end, places=12)
        self.assertAlmostEqual(r["t_step"], 0.36611951, places=12)
        self.assertAlmostEqual(r["t_step"], comm_end + 0.05, places=12)

    def test_slow_encoder_encodes_before_decoding(self):
        # Encoding at 0.1 GB/s is slower than a transfer, so the thread is the bottleneck:
        # when it frees up, the next encode and a finished transfer's decode are both
        # waiting; the engine starts the next bucket first (exchange.c run_step), so all
        # four encodes run back to back, then the decodes.
        r = sm.simulate(one_layer(), qsgd4(enc=1e8), sm.Net(B, 0.0), 4, bucket_kb=1000)
        enc_end = 0.3 + 3 * 4 * 256000 / 1e8 + 4 * 232000 / 1e8  # = 0.34
        decodes = 3 * 4 * 4 * 256000 / 1e10  # buckets 0-2: their transfers ended long ago
        xfer3_end = enc_end + 3 * 117829 / B  # link idle by then
        self.assertLess(enc_end + decodes, xfer3_end)
        self.assertAlmostEqual(r["comm_end"], xfer3_end + 4 * 4 * 232000 / 1e10, places=12)

    def test_rsag(self):
        # encode 4e6 B; reduce-scatter 3/4 of m; owner decodes 4 chunks of 250000 and
        # re-encodes one; all-gather 3/4 of m; decode 4 chunks of 250000.
        m = 507829
        r = sm.simulate(one_layer(), qsgd4(coll="rsag"), sm.Net(B, 0.0), 4)
        t = 0.3 + 4e6 / 2e9 + 0.75 * m / B
        t += 4 * 4 * 250000 / 1e10 + 4 * 250000 / 2e9
        t += 0.75 * m / B + 4 * 4 * 250000 / 1e10
        self.assertAlmostEqual(r["t_step"], t + 0.05, places=12)

    def test_compute_rescaling(self):
        prof = one_layer()
        r = sm.simulate(prof, fp32(), sm.Net(B, 0.0), 2, compute_scale=10.0)
        self.assertAlmostEqual(r["t_step"], 0.03 + 0.04 + 0.005, places=12)


class Overlap(unittest.TestCase):
    def test_two_layers_overlap_hides_first_bucket(self):
        # bucket_kb 2048 -> 524288 elements. fc (offset 0, 600000) is cut into 524288 +
        # 75712; conv adds 400000 to the second bucket (475712 < target, ends at 1e6).
        # Backward: fc ends at 0.15 + 0.1 = 0.25 (bucket 1 ready), conv at 0.45.
        r = sm.simulate(two_layers(), fp32(), sm.Net(B, 0.0), 2, bucket_kb=2048)
        self.assertEqual([b["n"] for b in r["buckets"]], [524288, 475712])
        self.assertEqual([b["ready"] for b in r["buckets"]], [0.25, 0.45])
        # bucket 1 travels 0.25 .. 0.25 + 4*524288/B, hidden under conv's backward;
        # bucket 2 is exposed: 4*475712/B.
        self.assertAlmostEqual(r["t_exposed"], 4 * 475712 / B, places=12)
        self.assertAlmostEqual(r["t_step"], 0.45 + 4 * 475712 / B + 0.05, places=12)

    def test_two_layers_without_overlap(self):
        r = sm.simulate(two_layers(), fp32(), sm.Net(B, 0.0), 2, bucket_kb=2048, overlap=False)
        self.assertAlmostEqual(r["t_exposed"], 4 * 1e6 / B, places=12)
        self.assertAlmostEqual(r["t_step"], 0.45 + 0.04 + 0.05, places=12)

    def test_small_layers_go_fp32(self):
        prof = two_layers()
        prof["layers"][0]["params"] = 5000  # below min_size: an fp32 bucket
        r = sm.simulate(prof, qsgd4(), sm.Net(B, 0.0), 2, min_size=10000)
        self.assertEqual([(b["n"], b["coded"]) for b in r["buckets"]], [(600000, True), (5000, False)])


class CommandLine(unittest.TestCase):
    def test_table(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "prof.json")
            with open(p, "w") as f:
                json.dump(one_layer(), f)
            out = subprocess.run([sys.executable, os.path.join(HERE, "..", "scripts", "scaling_model.py"),
                                  "--profile", p, "--bandwidth", "800mbit", "--codecs", "qsgd:b=4",
                                  "--enc-gbps", "2", "--dec-gbps", "10", "--ranks", "2,4", "--json"],
                                 capture_output=True, text=True, check=True).stdout
            res = json.loads(out)
            row4 = res["rows"][1]
            self.assertEqual(row4["ranks"], 4)
            self.assertAlmostEqual(row4["fp32_step"], 0.3 + 1.5 * 4e6 / B + 0.05, places=9)
            self.assertAlmostEqual(row4["codecs"]["qsgd:b=4"]["t_step"], 0.36883487, places=9)
            self.assertAlmostEqual(row4["codecs"]["qsgd:b=4"]["speedup"], 0.41 / 0.36883487, places=9)


if __name__ == "__main__":
    unittest.main(verbosity=1)
