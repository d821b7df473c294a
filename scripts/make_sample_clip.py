"""Regenerate the demo's sample clip and its ground truth, deterministically.

    python scripts/make_sample_clip.py            # -> assets/sample_clip.mp4, assets/sample_clip_gt.npz

- assets/sample_clip.mp4: 16 frames at 256 x 192 (aspect 4:3, square pixels), mp4v, 8 fps: what a user's video
  looks like before the network resizes it to S x S.
- assets/sample_clip_gt.npz: the same scene rendered at the tiny preset's network input (16 x 128 x 128), in the
  d4rt clip format (read with d4rt.data.synthetic.read_clip): rgb, depth, normal, instance ids, K (pixels of the
  128 x 128 input), T_wc, per-instance poses T_wo and the scene (exact answers to any query: clip.query(...)).

The scene's seed lies in the held-out range (2_000_000+): the bundled checkpoint never saw it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from d4rt.data.synthetic import Room, write_clip
from d4rt.runtime.files import atomic_path

SAMPLE_SEED = 2_000_100
FRAMES, WIDTH, HEIGHT, NETWORK_SIZE, FPS = 16, 256, 192, 128, 8


def write_mp4(path: Path, rgb: np.ndarray, fps: int) -> None:
    """rgb [T, H, W, 3] uint8 -> mp4 (mp4v), atomically; checked by reading it back."""
    T, H, W = rgb.shape[:3]
    with atomic_path(path) as tmp:
        tmp_mp4 = tmp.with_suffix(".mp4")  # OpenCV picks the container from the extension
        writer = cv2.VideoWriter(str(tmp_mp4), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
        if not writer.isOpened():
            raise RuntimeError("OpenCV cannot write mp4v here (no FFmpeg backend?)")
        for frame in rgb:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
        writer.release()
        tmp_mp4.replace(tmp)
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if len(frames) != T or frames[0].shape[:2] != (H, W):
        raise RuntimeError(f"{path} reads back as {len(frames)} frames of {frames[0].shape[:2] if frames else None}, "
                           f"expected {T} of {(H, W)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out_dir", type=Path, default=Path(__file__).resolve().parents[1] / "assets")
    args = p.parse_args()
    scene = Room.random(SAMPLE_SEED, num_frames=FRAMES, aspect=WIDTH / HEIGHT)
    video = scene.render_clip(HEIGHT, WIDTH)
    write_mp4(args.out_dir / "sample_clip.mp4", video.rgb, FPS)
    write_clip(args.out_dir / "sample_clip_gt.npz", scene.render_clip(NETWORK_SIZE, NETWORK_SIZE))
    print(f"-> {args.out_dir / 'sample_clip.mp4'} ({FRAMES} x {WIDTH} x {HEIGHT}), "
          f"{args.out_dir / 'sample_clip_gt.npz'} ({FRAMES} x {NETWORK_SIZE} x {NETWORK_SIZE})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
