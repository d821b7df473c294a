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
