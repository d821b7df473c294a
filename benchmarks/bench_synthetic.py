"""Speed of the synthetic renderer and of the dataset's per-item work, on one CPU core.

    OMP_NUM_THREADS=1 python benchmarks/bench_synthetic.py      # prints a table, writes benchmarks/results/*.json

Medians over ``--repeats`` runs after one warm-up run, each on a fresh random scene (seeds 0, 1, ...).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from d4rt.data.synthetic import Scene, write_clip
from d4rt.runtime.files import write_text_atomic


def timed(fn, repeats: int) -> float:
    fn(0)  # warm-up
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i + 1)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "synthetic_cpu.json")
    args = p.parse_args()

    rows = []
    for frames, size in ((48, 256), (16, 128)):
        t = timed(lambda s: Scene.random(s, num_frames=frames).render_clip(size, size), args.repeats)
        rows.append((f"render {frames} x {size}^2", t))
    from d4rt.data.dataset import D4RTDataset

    with tempfile.TemporaryDirectory() as tmp:
        paths = [write_clip(Path(tmp) / f"{s}.npz", Scene.random(s, num_frames=16).render_clip(128, 128))
                 for s in range(args.repeats + 1)]
        ds = D4RTDataset(paths, 16, 128, 2048)
        rows.append(("dataset item, first draw (read + edges + 2048 queries)", timed(lambda s: ds[s], args.repeats)))
        rows.append(("dataset item, cached clip (2048 exact queries)", timed(lambda s: ds[s], args.repeats)))
        uv = np.random.default_rng(0).random((2048, 2))
        t_rand = np.random.default_rng(1).integers(0, 16, (3, 2048))
        clip = ds.load(0)[0]
        rows.append(("clip.query, 2048 queries", timed(lambda s: clip.query(uv, *t_rand), args.repeats)))

    print(f"{'what':58s} {'median s':>9s}")
    for name, t in rows:
        print(f"{name:58s} {t:9.3f}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"CPU ({platform.processor() or platform.machine()}), 1 thread", "commit": commit,
        "command": "OMP_NUM_THREADS=1 python benchmarks/bench_synthetic.py", "repeats": args.repeats,
        "median_seconds": dict(rows),
    }
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
