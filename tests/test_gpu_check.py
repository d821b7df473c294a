"""scripts/gpu_check.sh's plumbing on the CPU (``--cpu-smoke``): $OUT, the steps table, time budgets, time-outs and
skipping. The whole dry run (every step run in its --cpu-smoke form) takes minutes and is recorded in docs/gpu.md;
here one step is made to time out (its budget overridden to 3 s) and the rest are skipped by a short total budget
(100 s: less than any other step's budget)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def run_script(out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "D4RT_COMMIT": "", **env}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def steps_table(out: Path) -> dict[str, dict[str, str]]:
    lines = [line for line in (out / "steps.md").read_text().splitlines() if line.startswith("| ")][1:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return {r[0]: {"budget": r[1], "rc": r[2], "seconds": r[3], "status": r[4]} for r in rows}


def test_budgets_timeouts_and_skipping(tmp_path):
    out = tmp_path / "gpu out"  # a space: paths are quoted
    result = run_script(out, "--cpu-smoke", "--budget", "100", GPU_CHECK_BUDGET_kernel_tests="3")
    assert result.returncode == 1, result.stdout + result.stderr  # a step timed out
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.tar.gz", "steps.md", "summary.txt"]

    steps = steps_table(out)
    assert set(steps) == {"preflight", "kernel_tests", "train_tiny", "attention_g", "end_to_end_g", "bench_model_g"}
    assert steps["preflight"]["status"] == "ok"
    killed = steps["kernel_tests"]
    assert killed["budget"] == "3" and killed["rc"] == "124" and killed["status"].startswith("timeout")
    assert 2.5 <= float(killed["seconds"]) < 20  # killed at its budget, not run to the end
    for name in ("train_tiny", "attention_g", "end_to_end_g", "bench_model_g"):  # budgets above the time left
        assert steps[name]["status"].startswith("skipped") and steps[name]["rc"] == "-", steps[name]

    summary = (out / "summary.txt").read_text()
    assert "failed or timed out: 1" in summary and "skipped: 4" in summary
    with tarfile.open(out / "gpu_check.tar.gz") as tar:
        names = {Path(n).as_posix().lstrip("./") for n in tar.getnames()}
        assert {"commit.txt", "preflight.txt", "versions.txt", "nvidia-smi.txt", "steps.tsv", "summary.txt",
                "logs/kernel_tests.log"} <= names  # fmt: skip
        versions = tar.extractfile("./versions.txt").read().decode()
    assert "torch" in versions and "triton" in versions and "cuda available False" in versions


def test_bad_arguments_and_no_gpu(tmp_path):
    assert run_script(tmp_path / "a", "--part", "3").returncode == 2
    assert run_script(tmp_path / "b", "--budget", "soon").returncode == 2
    import torch

    if torch.cuda.is_available():  # the check below would start the real GPU run
        return
    result = run_script(tmp_path / "c")  # a GPU run on a machine without one: says so and stops (exit 3)
    assert result.returncode == 3 and "no CUDA GPU" in result.stdout
    assert (tmp_path / "c" / "gpu_check.tar.gz").is_file()
