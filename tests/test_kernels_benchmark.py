"""The attention benchmark's code path (table, JSON, Markdown) on the CPU: ``benchmarks/attention.py --cpu-smoke``.
The times of a smoke run mean nothing; what is checked is that every method ran or said why not, and that the
baselines agree with our kernels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_attention_benchmark_smoke(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "attention.py"), "--cpu-smoke", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
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


def test_end_to_end_benchmark_smoke(tmp_path):
    """benchmarks/end_to_end.py --cpu-smoke: every backend timed, rows written, outputs agree with eager."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "end_to_end.py"), "--cpu-smoke", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
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
    assert json_path.with_suffix(".md").read_text().count("| tiny |") == 6
