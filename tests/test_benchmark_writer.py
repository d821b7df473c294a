"""Benchmarks keep what finished: ``d4rt.benchmarking.RowWriter`` rewrites JSON + Markdown after every row, and
``d4rt bench --model`` times the PyTorch model straight from a checkpoint folder (no export), row by row."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from d4rt.benchmarking import RowWriter, parse_torch_backend
from d4rt.cli import main
from tests.timing_bounds import check_bench_times

CHECKPOINT = str(Path(__file__).resolve().parent.parent / "checkpoints" / "tiny-synthetic")


def test_rows_are_on_disk_as_soon_as_they_are_added(tmp_path):
    path = tmp_path / "sub" / "run.json"
    writer = RowWriter(path, {"date": "2026-01-01", "device": "cpu"}, ["case", "ms"], lambda r: [r["case"], r["ms"]],
                       notes="a note", dtype="bfloat16")  # fmt: skip
    assert json.loads(path.read_text())["results"] == []  # the files exist before the first row
    rng_rows = [{"case": f"r{i}", "ms": float(i) + 0.5} for i in range(3)]
    for i, row in enumerate(rng_rows, 1):
        writer.add(row)
        on_disk = json.loads(path.read_text())  # what a run killed right now would leave
        assert on_disk["results"] == rng_rows[:i] and on_disk["complete"] is False
        assert on_disk["dtype"] == "bfloat16" and on_disk["environment"]["device"] == "cpu"
        md = path.with_suffix(".md").read_text()
        assert md.count("| r") == i and "incomplete" in md and "a note" in md
    writer.rows[0]["ms"] = 9.25  # filled in later (speed-ups of a finished group)
    writer.close(total=3)
    final = json.loads(path.read_text())
    assert final["complete"] is True and final["total"] == 3 and final["results"][0]["ms"] == 9.25
    assert "incomplete" not in path.with_suffix(".md").read_text()
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(ValueError, match="must end in .json"):
        RowWriter(tmp_path / "run.txt", {}, ["a"], lambda r: [r])


def test_torch_backend_names():
    assert parse_torch_backend("torch") == ("sdpa", "float32")  # the torch backend's default
    assert parse_torch_backend("torch-triton-bfloat16") == ("triton", "bfloat16")
    with pytest.raises(ValueError, match="torch-sdpa-bfloat16"):
        parse_torch_backend("onnxruntime-cpu")


def test_bench_a_checkpoint_without_export(tmp_path):
    out = tmp_path / "bench.json"
    started = time.perf_counter()
    assert main(["bench", "--model", CHECKPOINT, "--backends", "torch-eager-float32,torch-sdpa-float32",
                 "--batch-sizes", "32", "--repeats", "1", "--warmup", "0", "--json", str(out)]) == 0  # fmt: skip
    wall_s = time.perf_counter() - started
    report = json.loads(out.read_text())
    assert report["complete"] is True and report["model"]["weights"] == "checkpoint"
    assert [r["backend"] for r in report["results"]] == ["torch-eager-float32", "torch"]  # torch = sdpa float32
    check_bench_times(report["results"], CHECKPOINT, 32, wall_s)  # the checkpoint's 16 frames
    assert {"date", "device", "commit", "command"} <= report["environment"].keys()
    assert out.with_suffix(".md").read_text().count("| torch") == 2


def test_bench_arguments_are_checked_before_loading(tmp_path, capsys):
    assert main(["bench", "--model", "no-such-preset"]) == 2
    assert "neither a preset" in capsys.readouterr().err
    assert main(["bench", "--model", "tiny", "--backends", "onnxruntime-cpu"]) == 2
    assert main(["bench", "--model", "tiny", "--batch-sizes", "0"]) == 2
    assert main(["bench", "--export", str(tmp_path / "missing")]) == 2
