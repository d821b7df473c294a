"""What every benchmark script shares: timing (medians, warm-up excluded), the run's environment, and writing the
results as JSON + Markdown to ``benchmarks/results/<date>-<gpu>-<name>.{json,md}``, row by row
(``d4rt.benchmarking.RowWriter``: a time-out keeps what finished)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "results"


def choose_device(script: str, cpu_smoke: bool, out_dir: Path | None) -> tuple[str, Path | None] | None:
    """("cpu", a temporary results folder unless given) for a smoke run, ("cuda", out_dir) when a GPU can be
    benchmarked, or None after saying why not. Call it before anything imports triton: a smoke run sets
    TRITON_INTERPRET=1."""
    import os

    if cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"
        import tempfile

        return "cpu", out_dir or Path(tempfile.mkdtemp(prefix="d4rt-bench-smoke-"))
    import torch

    if not torch.cuda.is_available():
        print(f"{script} needs a CUDA GPU and none was found. Run it with --cpu-smoke to check the code path on a CPU.")
        return None
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("TRITON_INTERPRET is set: the kernels would run in the interpreter. Unset it to benchmark.")
        return None
    return "cuda", out_dir


def median_ms(fn: Callable[[], object], device: str, warmup: int = 25, rep: int = 100) -> float:
    """Median time of ``fn()`` in milliseconds: ``triton.testing.do_bench`` on a GPU (CUDA events, L2 flushed
    between runs, warm-up runs excluded), a perf_counter loop on the CPU (smoke runs)."""
    if device == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))
    from d4rt.benchmarking import median_seconds

    return 1e3 * median_seconds(fn, repeats=3, warmup=1)  # the warm-up compiles / autotunes


def measure_rates(device: str) -> dict:
    """Measured matmul rate (TFLOP/s, bf16 8192^3) and copy bandwidth (GB/s, 1 GiB read + written) of the GPU: the
    floors of the attention and end-to-end benchmarks are counted against these, not against the data sheet."""
    import torch

    if device != "cuda":
        return {}
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    t_mm = median_ms(lambda: a @ a, device)
    x = torch.empty(2**29, device=device, dtype=torch.bfloat16)
    y = torch.empty_like(x)
    t_copy = median_ms(lambda: y.copy_(x), device)
    return {"matmul_tflops": 2 * 8192**3 / t_mm / 1e9, "copy_gbps": 2 * x.numel() * 2 / t_copy / 1e6}


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one ``fn()`` (matmuls and attention: 2 per multiply-add), counted by
    ``torch.utils.flop_counter`` while it runs."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def environment(device: str) -> dict:
    """Date, device, commit, exact command and library versions of this run (runtime.provenance), plus the GPU's
    compute capability, SM count and CUDA version."""
    import torch
    import triton  # noqa: F401  (loaded, so its version is recorded)

    from d4rt.benchmarking import host_description, run_record

    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({host_description()})"
    env = run_record(device=name)
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env["compute_capability"] = f"{props.major}.{props.minor}"
        env["sm_count"] = props.multi_processor_count
        env["cuda"] = torch.version.cuda
    return env


def device_slug(env: dict) -> str:
    """'NVIDIA H200' -> 'h200' (for file names)."""
    name = re.sub(r"^nvidia\s+", "", env["device"].lower())
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "device"


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def results_writer(name: str, env: dict, header: list[str], cells: Callable[[dict], list], notes: str = "",
                   out_dir: Path | None = None, **info):
    """A ``RowWriter`` for ``<out_dir>/<date>-<gpu>-<name>.json`` (+ ``.md``); the files exist (with no rows) as soon
    as it is made."""
    from d4rt.benchmarking import RowWriter

    out_dir = Path(out_dir) if out_dir else RESULTS
    stem = f"{env['date'][:10]}-{device_slug(env)}-{name}"
    return RowWriter(out_dir / f"{stem}.json", env, header, cells, title=f"{name} ({env['device']})", notes=notes,
                     **info)  # fmt: skip


def write_results(name: str, env: dict, payload: dict, markdown: str, out_dir: Path | None = None) -> Path:
    """Write ``<date>-<gpu>-<name>.json`` (env + payload) and ``.md`` (env header + ``markdown``) atomically."""
    from d4rt.runtime.files import write_text_atomic

    out_dir = Path(out_dir) if out_dir else RESULTS
    stem = f"{env['date'][:10]}-{device_slug(env)}-{name}"
    json_path = out_dir / f"{stem}.json"
    write_text_atomic(json_path, json.dumps({"environment": env, **payload}, indent=2) + "\n")
    header = "\n".join(f"- {k}: `{v}`" for k, v in env.items())
    write_text_atomic(out_dir / f"{stem}.md", f"# {name} ({env['device']})\n\n{header}\n\n{markdown}\n")
    return json_path


def fmt(value: float | None, digits: int = 3) -> str:
    from d4rt.benchmarking import format_number

    return format_number(value, digits)
