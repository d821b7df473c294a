"""What reading only the scored frames saves: a PointOdyssey-sized sequence (120 frames of 960 x 540, written as
its writer does: JPEG frames, uint16 depth PNGs, anno.npz with 2,000 tracks) read whole and as a 16-frame window.

    python benchmarks/reader_window.py            # -> benchmarks/results/<date>-reader-window.json

Prints seconds (median of 3 after one warm-up) and the bytes of the arrays returned.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import cv2
import numpy as np


def write_sequence(root: Path, T: int = 120, H: int = 540, W: int = 960, N: int = 2000) -> None:
    rng = np.random.default_rng(0)
    (root / "rgbs").mkdir(parents=True)
    (root / "depths").mkdir()
    base = cv2.resize(rng.integers(0, 255, (H // 8, W // 8, 3), dtype=np.uint8), (W, H))
    for t in range(T):
        cv2.imwrite(str(root / "rgbs" / f"rgb_{t:05d}.jpg"), np.roll(base, t, axis=1))
        cv2.imwrite(str(root / "depths" / f"depth_{t:05d}.png"),
                    rng.integers(100, 5000, (H, W), dtype=np.uint16))
    E = np.tile(np.eye(4, dtype=np.float32), (T, 1, 1))
    K = np.tile(np.array([[500, 0, W / 2], [0, 500, H / 2], [0, 0, 1]], np.float32), (T, 1, 1))
    np.savez(root / "anno.npz", trajs_2d=rng.uniform(0, W, (T, N, 2)).astype(np.float32),
             trajs_3d=rng.uniform(1, 5, (T, N, 3)).astype(np.float32), visibs=rng.random((T, N)) < 0.8,
             valids=np.ones((T, N), bool), intrinsics=K, extrinsics=E)


def main() -> int:
    from d4rt.benchmarking import median_seconds, run_record
    from d4rt.data.formats import read_pointodyssey
    from d4rt.runtime.files import write_text_atomic

    record = run_record()
    out = Path("benchmarks/results") / f"{record['date'][:10]}-reader-window.json"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        seq = Path(tmp) / "seq"
        write_sequence(seq)
        print(f"{'read':24s} {'frames':>6s} {'seconds':>8s} {'MB':>8s}")
        for name, kwargs in (("whole sequence", {}), ("16-frame window", {"max_frames": 16})):
            ts = read_pointodyssey(seq, **kwargs)
            mb = sum(a.nbytes for a in (ts.rgb, ts.depth, ts.tracks_cam, ts.tracks_2d, ts.visible, ts.valid)) / 1e6
            sec = median_seconds(lambda: read_pointodyssey(seq, **kwargs), repeats=3)
            rows.append({"read": name, "frames": ts.num_frames, "seconds": sec, "megabytes": mb})
            print(f"{name:24s} {ts.num_frames:6d} {sec:8.2f} {mb:8.1f}")
            write_text_atomic(out, json.dumps({"run": record, "rows": rows}, indent=2) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
