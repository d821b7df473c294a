"""The attention benchmark's code path (table, JSON, Markdown) on the CPU: ``benchmarks/attention.py --cpu-smoke``.
The times of a smoke run mean nothing; what is checked is that every method ran or said why not, and that the
baselines agree with our kernels, and the times against what arithmetic allows (tests/timing_bounds.py): each
row's FLOP count is 4 B H Nq K D counted by hand (K the keys per query: the window, or all keys), no rate beyond the
CPU's peak, the medians within the run's wall time, speed-ups the ratios of the times."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.timing_bounds import check_rate, check_within_wall

ROOT = Path(__file__).resolve().parent.parent


def test_attention_benchmark_smoke(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "attention.py"), "--cpu-smoke", "--out", str(tmp_path)]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    wall_s = time.perf_counter() - started
    [json_path] = tmp_path.glob("*-attention-cpu-smoke.json")
    result = json.loads(json_path.read_text())
    assert result["complete"] is True  # written row by row, then marked complete
    env = result["environment"]
    assert {"date", "device", "commit", "command", "versions"} <= env.keys()
    assert {"torch", "triton"} <= env["versions"].keys()
    assert json_path.with_suffix(".md").read_text().count("| triton |") == 2
    rows = result["results"]
    assert {r["op"] for r in rows} == {"local", "cross"}
    for r in rows:
        assert (r["ms"] is None) != (r["error"] is None), r  # timed, or a reason
        if r["method"] in ("eager", "sdpa:math"):
            assert r["ms"] > 0 and r["rel_diff_vs_triton"] <= 1e-5, r
        if r["method"] == "triton":
            assert r["ms"] > 0 and r["tflops"] > 0 and r["x_vs_eager"] > 0, r
        if r["ms"] is not None:
            keys = r["window"] if r["op"] == "local" else r["n_keys"]
            flop = 4 * r["batch"] * r["heads"] * r["n_queries"] * keys * r["head_dim"]
            assert r["tflops"] * 1e12 * r["ms"] * 1e-3 == pytest.approx(flop, rel=1e-9), r
            check_rate(flop / 1e12, r["ms"], f"{r['op']} {r['method']}")
            eager = next(e for e in rows if e["op"] == r["op"] and e["method"] == "eager")
            assert r["x_vs_eager"] == pytest.approx(eager["ms"] / r["ms"], rel=1e-9), r
    check_within_wall([r["ms"] for r in rows if r["ms"] is not None], wall_s, "attention smoke")


def test_end_to_end_benchmark_smoke(tmp_path):
    """benchmarks/end_to_end.py --cpu-smoke: every backend timed, rows written, outputs agree with eager."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "end_to_end.py"), "--cpu-smoke", "--out", str(tmp_path)]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    wall_s = time.perf_counter() - started
    [json_path] = tmp_path.glob("*-end-to-end-cpu-smoke.json")
    result = json.loads(json_path.read_text())
    assert result["complete"] is True
    rows = result["results"]
    assert [(r["stage"], r["backend"]) for r in rows] == [
        (stage, backend) for stage in ("encode", "decode") for backend in ("eager", "sdpa", "triton")
    ]
    for r in rows:
        assert r["error"] is None and r["ms"] > 0 and r["tflop"] > 0, r
        if r["backend"] != "eager":
            assert r["rel_diff_vs_eager"] <= 1e-5, r
        assert (r["queries_per_s"] is None) == (r["stage"] == "encode"), r
        if r["queries_per_s"] is not None:
            assert r["queries_per_s"] == pytest.approx(r["queries"] / (r["ms"] * 1e-3), rel=1e-9), r
        check_rate(r["tflop"], r["ms"], f"{r['stage']} {r['backend']}")
        eager = next(e for e in rows if e["stage"] == r["stage"] and e["backend"] == "eager")
        assert r["x_vs_eager"] == pytest.approx(eager["ms"] / r["ms"], rel=1e-9), r
    check_within_wall([r["ms"] for r in rows], wall_s, "end-to-end smoke")
    assert json_path.with_suffix(".md").read_text().count("| tiny |") == 6
