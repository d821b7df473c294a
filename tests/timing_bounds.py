"""Bounds a measured time must respect whatever the machine's load, for the benchmark tests (a time cannot be
checked against a reference value, but it can be checked against arithmetic):

- above: no run can do its floating-point work faster than the CPU's peak rate. One x86 core does at most
  2 FMA units x 16 float32 lanes (AVX-512) x 2 FLOP x 5 GHz = 320 GFLOP/s; a time 1000x too small (seconds
  read as milliseconds) breaks it;
- below: the medians of timings taken one after another inside a run sum to at most the run's wall time (each
  median is at most the largest of its runs, and those runs do not overlap); a time 1000x too large breaks it.
"""

from __future__ import annotations

import os

CORE_PEAK_TFLOPS = 2 * 16 * 2 * 5e9 / 1e12  # 0.32 TFLOP/s per core, float32


def cpu_peak_tflops() -> float:
    return (os.cpu_count() or 1) * CORE_PEAK_TFLOPS


def check_rate(tflop: float, ms: float, what="") -> None:
    """tflop of work done in ms milliseconds: at most the CPU's peak rate."""
    rate = tflop / (ms * 1e-3)
    assert 0 < rate <= cpu_peak_tflops(), f"{what}: {tflop} TFLOP in {ms} ms is {rate:.3g} TFLOP/s, beyond the CPU"


def check_within_wall(medians_ms, wall_s: float, what="") -> None:
    """Medians of sequential timings (ms) within the run's wall time (s)."""
    total = sum(medians_ms)
    assert 0 < total <= wall_s * 1e3, f"{what}: timings sum to {total:.1f} ms, the run took {wall_s * 1e3:.1f} ms"


def model_flop(checkpoint, batch: int, frames: int | None = None) -> tuple[float, float]:
    """TFLOP of one encode of a clip of ``frames`` frames (default: the checkpoint's num_frames) and of one decode
    of ``batch`` queries, counted by torch's own FlopCounterMode (matmuls and attention; the rest is small, so the
    count is a lower bound of the work), independent of the benchmark's code."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from d4rt import D4RT

    model = D4RT.from_pretrained(checkpoint).eval()
    cfg = model.config
    frames = frames or cfg.num_frames
    video = torch.rand(1, frames, 3, cfg.image_size, cfg.image_size)
    uv, t = torch.rand(1, batch, 2), torch.randint(0, frames, (1, batch))
    with torch.no_grad():
        with FlopCounterMode(display=False) as enc:
            memory = model.encode(video, 1.0)
            keys, values = model.memory_kv(memory)
        with FlopCounterMode(display=False) as dec:
            model.decode(memory, video, uv, t, t, t)
    return enc.get_total_flops() / 1e12, dec.get_total_flops() / 1e12


def check_bench_times(results, checkpoint, batch_sizes, wall_s: float, frames: int | None = None) -> None:
    """`d4rt bench` rows against arithmetic: no rate beyond the CPU's peak for the FLOPs torch counts, queries / s
    each batch over its time, every median within the run's wall time."""
    medians = []
    for B in [batch_sizes] if isinstance(batch_sizes, int) else batch_sizes:
        encode_tflop, decode_tflop = model_flop(checkpoint, B, frames)
        for r in results:
            q = r["query"][str(B)]
            assert abs(q["queries_per_s"] / (B / (q["ms"] * 1e-3)) - 1) < 1e-9, (B, r)
            check_rate(decode_tflop, q["ms"], f"{r['backend']} query x {B}")  # + the runtime's own numpy work
            medians.append(q["ms"])
    for r in results:
        check_rate(encode_tflop, r["encode_ms"], f"{r['backend']} encode")
        medians.append(r["encode_ms"])
    check_within_wall(medians, wall_s, "d4rt bench")
