"""runtime.provenance: what every benchmark records beside its numbers, and the host timer."""

import re

import pytest

from d4rt.benchmarking import git_commit, median_seconds, run_record


def test_run_record_names_commit_date_device_and_command():
    record = run_record(command="d4rt bench --export e")
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?|unknown", record["commit"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["date"])
    assert "CPU" in record["device"] and record["command"] == "d4rt bench --export e"
    assert record["versions"]["numpy"] and record["versions"]["python"]
    assert run_record(device="NVIDIA H200")["device"] == "NVIDIA H200"


def test_git_commit_outside_a_checkout(tmp_path):
    assert git_commit(tmp_path) == "unknown"


def test_median_seconds_excludes_the_warmup():
    calls = []
    slow_first = iter([0.05] + [0.0] * 10)

    def fn():
        import time

        calls.append(1)
        time.sleep(next(slow_first))

    assert median_seconds(fn, repeats=5, warmup=1) < 0.02  # the slow first call is the warm-up
    assert len(calls) == 6
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        median_seconds(fn, repeats=0)
