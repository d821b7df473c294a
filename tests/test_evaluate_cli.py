"""`d4rt evaluate` refuses bad arguments in one line (exit 2) before torch or a checkpoint is loaded."""

import subprocess
import sys

import pytest

CASES = [
    (["--test-data", "/nonexistent/d4rt-clips"], "--test-data /nonexistent/d4rt-clips does not exist"),
    (["--test-data", ".", "--ckpt", "/nonexistent/ckpt"], "--ckpt /nonexistent/ckpt does not exist"),
    (["--test-data", "x", "--synthetic", "2", "--format", "tapvid3d"], "use it with --format clips"),
    (["--test-data", ".", "--ckpt", "checkpoints/tiny-synthetic", "--image-size", "64"], "drop it"),
    (["--test-data", ".", "--output", "tests"], "is a folder"),
]


@pytest.mark.parametrize("argv, message", CASES)
def test_evaluate_refuses_in_one_line_before_loading(argv, message):
    code = ("import sys; from d4rt.cli import main; rc = main(['evaluate', *sys.argv[1:]]); "
            "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded'); sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert message in res.stderr
    assert "torch loaded" not in res.stdout
