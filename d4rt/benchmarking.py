"""Where a measured number came from, and the one way we time things on the host.

Every benchmark (``d4rt bench``, ``benchmarks/*.py``) records :func:`run_record` beside its numbers and times
host-side work with :func:`median_seconds`. No torch here: the runtime's bench runs on machines without it.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
VERSIONED = ("numpy", "torch", "triton", "onnx", "onnxruntime", "tensorrt", "cv2", "lightning")


def git_commit(root: str | Path = REPO) -> str:
    """HEAD of the checkout at ``root``, with "+dirty" when tracked files differ; "unknown" outside git."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or "unknown"
    if commit != "unknown" and git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    return commit


def host_description() -> str:
    """'x86_64, 2 CPU cores' (the processor name where the platform gives one)."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"


def gpu_names() -> list[str]:
    """The NVIDIA GPUs nvidia-smi lists here (none on machines without the driver)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def run_record(device: str | None = None, command: str | None = None) -> dict:
    """Date (UTC), device, commit, command and the versions of the libraries this process has loaded.

    device: what ran the work (default: the host's CPU and any NVIDIA GPU); command: default the current
    process's command line.
    """
    if device is None:
        device = " + ".join([*gpu_names(), f"CPU ({host_description()})"])
    versions = {"python": platform.python_version()}
    for module in VERSIONED:
        if module in sys.modules:
            versions[module] = str(getattr(sys.modules[module], "__version__", "?"))
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device,
        "commit": git_commit(),
        "command": command or " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "platform": platform.platform(),
        "versions": versions,
    }


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones (perf_counter)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def load_for_bench(directory: str, name: str, threads: int | None):
    from d4rt.runtime import load

    if name.startswith("torch"):
        parts = name.split("-")  # torch[-attention[-dtype]]
        attention = parts[1] if len(parts) > 1 else "sdpa"
        dtype = parts[2] if len(parts) > 2 else "float32"
        return load(directory, backend="torch", attention=attention, dtype=dtype)
    return load(directory, backend=name, threads=threads)


def bench_runtime(rt, batch_sizes: list[int], repeats: int, warmup: int) -> dict:
    """Encode latency (ms) and query throughput (queries / s) of one runtime, medians."""
    rng = np.random.default_rng()
    T, S = rt.num_frames, rt.image_size
    frames = rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8)
    scene = rt.encode(frames)
    backend = rt.backend
    sync = getattr(backend, "synchronize", lambda: None)
    aspect = np.array([scene.aspect_ratio], np.float32)

    def encode():
        backend.encode(scene.video, aspect)
        sync()

    result = {"backend": rt.name, "encode_ms": 1e3 * median_seconds(encode, repeats, warmup), "query": {}}
    for B in batch_sizes:
        uv = rng.random((B, 2), dtype=np.float32)
        t = rng.integers(0, T, (3, B))
        seconds = median_seconds(lambda: rt.query(scene, uv, t[0], t[1], t[2], batch_size=B), repeats, warmup)
        result["query"][str(B)] = {"ms": 1e3 * seconds, "queries_per_s": B / seconds}
    return result

