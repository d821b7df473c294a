"""Where a measured number came from, and the one way we time things on the host.

Every benchmark (``d4rt bench``, ``benchmarks/*.py``) records :func:`run_record` beside its numbers, times
host-side work with :func:`median_seconds` and writes its results with :class:`RowWriter` (JSON + Markdown rewritten
after every row, so a benchmark killed by a time-out keeps what finished). No torch here: the runtime's bench runs on
machines without it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
VERSIONED = ("numpy", "torch", "triton", "onnx", "onnxruntime", "tensorrt", "cv2", "lightning")


def git_commit(root: str | Path = REPO) -> str:
    """HEAD of the checkout at ``root``, with "+dirty" when tracked files differ; outside git the environment's
    ``D4RT_COMMIT`` (set by ``scripts/gpu_check.sh`` on a machine the tree was copied to without ``.git``), else
    "unknown"."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return os.environ.get("D4RT_COMMIT") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
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


def format_number(value: float | None, digits: int = 3) -> str:
    """A table cell: ``digits`` significant digits below 1000, whole numbers above, "-" for None."""
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"


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


class RowWriter:
    """A benchmark's results file, written row by row: ``<path>.json`` and ``<path>.md`` are rewritten (atomically)
    after every :meth:`add`, so a time-out or a crash keeps every row that finished.

    JSON: ``{"environment": run_record, **info, "complete": bool, "results": [row, ...]}``; ``complete`` turns true
    at :meth:`close`, so a reader can tell a finished run from one that was cut off. Markdown: a title, the
    environment, ``notes`` and one table line per row (``cells(row)`` gives the row's cells under ``header``).

        writer = RowWriter("out/attention.json", run_record(), ["shape", "ms"], lambda r: [r["shape"], r["ms"]])
        for case in cases:
            writer.add(measure(case))        # both files now hold every finished row
        writer.close()                       # "complete": true

    Rows are dicts of JSON values; a row may be updated after it was added (e.g. speed-ups once a group of rows is
    in): call :meth:`flush` to write again.
    """

    def __init__(
        self,
        path: str | Path,
        environment: dict,
        header: Sequence[str],
        cells: Callable[[dict], Sequence[Any]],
        title: str | None = None,
        notes: str = "",
        **info: Any,
    ):
        path = Path(path)
        if path.suffix != ".json":
            raise ValueError(f"RowWriter: path must end in .json (the Markdown goes beside it), got {path}")
        self.json_path, self.md_path = path, path.with_suffix(".md")
        self.environment, self.header, self.cells = environment, list(header), cells
        self.title, self.notes, self.info = title or path.stem, notes, dict(info)
        self.rows: list[dict] = []
        self.complete = False
        self.flush()

    def add(self, row: dict) -> None:
        """Append ``row`` and rewrite both files."""
        self.rows.append(row)
        self.flush()

    def close(self, **info: Any) -> Path:
        """Record ``info`` (e.g. totals), mark the run complete, write; returns the JSON path."""
        self.info.update(info)
        self.complete = True
        self.flush()
        return self.json_path

    def flush(self) -> None:
        from d4rt.runtime.files import write_text_atomic

        payload = {"environment": self.environment, **self.info, "complete": self.complete, "results": self.rows}
        write_text_atomic(self.json_path, json.dumps(payload, indent=2, default=str) + "\n")
        write_text_atomic(self.md_path, self.markdown())

    def markdown(self) -> str:
        env = "\n".join(f"- {k}: `{v}`" for k, v in self.environment.items())
        lines = ["| " + " | ".join(self.header) + " |", "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(str(c) for c in self.cells(r)) + " |" for r in self.rows]
        state = "" if self.complete else f"\n\n(incomplete: {len(self.rows)} rows so far; the run did not finish)"
        notes = f"{self.notes}\n\n" if self.notes else ""
        return f"# {self.title}\n\n{env}\n\n{notes}" + "\n".join(lines) + state + "\n"


def parse_torch_backend(name: str) -> tuple[str, str]:
    """"torch[-attention[-dtype]]" -> (attention, dtype); defaults "sdpa" (the torch backend's), "float32"."""
    parts = name.split("-")
    if parts[0] != "torch" or len(parts) > 3:
        raise ValueError(
            f"{name!r} is not a torch backend name; write torch[-ATTENTION[-DTYPE]], e.g. torch-sdpa-bfloat16"
        )
    attention = parts[1] if len(parts) > 1 else "sdpa"
    dtype = parts[2] if len(parts) > 2 else "float32"
    return attention, dtype


def load_for_bench(directory: str, name: str, threads: int | None):
    """A runtime over an export folder (or a save_pretrained directory for the torch backends) on backend
    ``name``: an engine backend, or ``torch[-attention[-dtype]]`` (e.g. ``torch-triton-bfloat16``)."""
    from d4rt.runtime import load
    from d4rt.runtime.precision import precision_from_dtype

    if name.startswith("torch"):
        attention, dtype = parse_torch_backend(name)
        return load(directory, backend="torch", attention=attention, precision=precision_from_dtype(dtype))
    return load(directory, backend=name, threads=threads)


def load_model_for_bench(model: str, name: str, seed: int = 0):
    """A torch runtime straight from a model, without any export: ``model`` is a preset name (seeded random
    weights, built directly on the GPU when there is one and cast to the backend's dtype) or a save_pretrained
    directory; ``name`` is ``torch[-attention[-dtype]]``."""
    import torch

    from d4rt.config import PRESETS, D4RTConfig
    from d4rt.runtime import load
    from d4rt.runtime.backend_torch import TorchBackend
    from d4rt.runtime.runtime import Runtime

    from d4rt.runtime.precision import precision_from_dtype

    attention, dtype = parse_torch_backend(name)
    if model not in PRESETS:
        return load(model, backend="torch", attention=attention, precision=precision_from_dtype(dtype))
    from d4rt.models import D4RT

    config = D4RTConfig.preset(model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.device(device):
            net = D4RT(config, attention)
    finally:
        torch.random.set_rng_state(state)
    net = net.to(getattr(torch, dtype)).eval()
    label = f"torch-{attention}-{dtype}" if (attention, dtype) != ("sdpa", "float32") else "torch"
    return Runtime(TorchBackend(net, label), config.num_frames, config.image_size, None)


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

