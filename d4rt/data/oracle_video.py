"""An oracle backend for tests and benchmarks: exact answers from a rendered room (d4rt.data.synthetic), each
encoded window in its own camera 0 and at its own random scale (the ambiguity a real model has), optionally with
noise on xyz and a fraction of outliers. Installed with the package so the tests and benchmarks/ import it the same
way (no sys.path)."""

from __future__ import annotations

import numpy as np

from d4rt.runtime.runtime import Runtime
from d4rt.runtime.video import prepare_clip


class OracleVideo:
    """Backend: which source frames a window holds is read off its pixels (each rendered frame differs)."""

    name = "oracle"
    max_queries = None

    def __init__(self, clip, image_size: int, noise: float = 0.0, outliers: float = 0.0, seed: int | None = None):
        self.clip, self.S = clip, image_size
        self.video = prepare_clip(clip.rgb, image_size).video[0]  # [F, 3, S, S]
        self.noise, self.outliers = noise, outliers
        self.rng = np.random.default_rng(seed)
        self.windows = []  # (source frames, scale) per encode call

    def encode(self, video, aspect_ratio):
        v = video[0]
        diff = np.abs(v[:, None] - self.video[None]).reshape(len(v), len(self.video), -1).mean(-1)
        frames = diff.argmin(1)
        assert (diff.min(1) < 1e-6).all() and (np.diff(frames) == 1).all(), "windows hold consecutive frames"
        state = (frames, float(self.rng.uniform(0.5, 2.0)))
        self.windows.append(state)
        return state

    def decode(self, state, uv, t):
        frames, scale = state
        uv, t = uv[0].astype(np.float64), t[0]
        q = self.clip.query(uv, frames[t[:, 0]], frames[t[:, 1]], frames[t[:, 2]])
        xyz = q["xyz_cam"] * scale
        n = len(uv)
        conf = np.full(n, 4.0)
        if self.noise:
            xyz = xyz * (1 + self.noise * self.rng.standard_normal((n, 1)))  # relative noise along the ray
        if self.outliers:
            bad = self.rng.random(n) < self.outliers
            xyz[bad] = self.rng.uniform(-5, 5, (bad.sum(), 3)) * scale
            conf[bad] = self.rng.uniform(-4.0, 2.0, bad.sum())  # outliers: confidence 0.02 .. 0.88, inliers 0.98
        vis = np.where(q["visible"], 6.0, -6.0)
        f32 = lambda a: a[None].astype(np.float32)  # noqa: E731
        return {"xyz": f32(xyz), "uv_tgt": f32(np.nan_to_num(q["uv_tgt"], nan=-1.0)), "visibility": f32(vis),
                "displacement": f32(q["displacement"] * scale), "normal": f32(q["normal"]), "confidence": f32(conf)}


def oracle_runtime(clip, image_size: int, window: int, **options) -> Runtime:
    return Runtime(OracleVideo(clip, image_size, **options), window, image_size, min_frames=2, frame_step=2)


def render(num_frames: int, seed: int, height: int = 24, width: int = 32):
    from d4rt.data.synthetic import Room

    return Room.random(seed, num_frames=num_frames).render_clip(height, width)


def ground_truth_poses(clip) -> np.ndarray:
    """T_wc with frame 0's camera as the world."""
    return np.linalg.inv(clip.T_wc[0]) @ clip.T_wc
