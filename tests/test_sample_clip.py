"""The committed demo clip (assets/) reads back and matches the scene it was rendered from."""

from pathlib import Path

import cv2
import numpy as np

from d4rt.data.synthetic import read_clip

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def test_sample_clip_matches_its_scene():
    gt = read_clip(ASSETS / "sample_clip_gt.npz")
    assert gt.rgb.shape == (16, 128, 128, 3) and gt.normal is not None
    assert gt.room.seed >= 2_000_000  # a held-out seed: never used for training
    np.testing.assert_array_equal(gt.room.render_clip(128, 128).depth, gt.depth)

    cap = cv2.VideoCapture(str(ASSETS / "sample_clip.mp4"))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    cap.release()
    assert len(frames) == 16 and frames[0].shape == (192, 256, 3)
    original = gt.room.render_clip(192, 256).rgb
    assert np.abs(np.stack(frames).astype(int) - original).mean() < 10  # mp4v is lossy
    assert gt.aspect_ratio == 256 / 192
