"""Speed of the synthetic renderer and of the dataset's per-item work, on one CPU core.

    OMP_NUM_THREADS=1 python benchmarks/bench_synthetic.py      # prints a table, writes benchmarks/results/*.json

Medians over ``--repeats`` runs after one warm-up run, each on a fresh random scene (seeds 0, 1, ...).
"""

from __future__ import annotations

import argparse
import itertools
import os
import json
import tempfile
from pathlib import Path

import numpy as np

from d4rt.data.synthetic import Room, write_clip
from d4rt.runtime.files import write_text_atomic
from d4rt.benchmarking import host_description, median_seconds, run_record


def timed(fn, repeats: int) -> float:
    """Median seconds of fn(i), i = 0 (the warm-up), 1, 2, ...: a fresh seed or clip per run."""
    calls = itertools.count()
    return median_seconds(lambda: fn(next(calls)), repeats, warmup=1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "synthetic_cpu.json")
    args = p.parse_args()

    rows = []
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    record = run_record(device=f"CPU ({host_description()}), OMP_NUM_THREADS={threads}")

    def save(complete: bool) -> None:  # after every row: a run cut short keeps what finished
        report = {**record, "repeats": args.repeats, "complete": complete, "median_seconds": dict(rows)}
        write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")

    def add(name: str, seconds: float) -> None:
        rows.append((name, seconds))
        save(complete=False)

    for frames, size in ((48, 256), (16, 128)):
        t = timed(lambda s: Room.random(s, num_frames=frames).render_clip(size, size), args.repeats)
        add(f"render {frames} x {size}^2", t)
    from d4rt.data.dataset import D4RTDataset

    with tempfile.TemporaryDirectory() as tmp:
        paths = [write_clip(Path(tmp) / f"{s}.npz", Room.random(s, num_frames=16).render_clip(128, 128))
                 for s in range(args.repeats + 1)]
        ds = D4RTDataset(paths, 16, 128, 2048)
        add("dataset item, first draw (read + edges + 2048 queries)", timed(lambda s: ds[s], args.repeats))
        add("dataset item, cached clip (2048 exact queries)", timed(lambda s: ds[s], args.repeats))
        uv = np.random.default_rng(0).random((2048, 2))
        t_rand = np.random.default_rng(1).integers(0, 16, (3, 2048))
        clip = ds.load(0)[0]
        add("clip.query, 2048 queries", timed(lambda s: clip.query(uv, *t_rand), args.repeats))

    print(f"{'what':58s} {'median s':>9s}")
    for name, t in rows:
        print(f"{name:58s} {t:9.3f}")
    save(complete=True)
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
