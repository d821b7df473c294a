"""Dense tracking (paper Alg. 1): a track from every pixel of the video, without tracking a pixel twice.

An occupancy grid ``visited`` [F, n, n] over (frame, pixel) starts empty. Frame by frame, every pixel not yet
visited starts a track: one query per frame of its window (t_src = its frame, t_tgt = each frame); each frame where
the track is visible (visibility > 0.5) marks the pixel it lands on as visited. A later frame starts tracks only at
the pixels no visible track passed through, so a static scene seen by a still camera costs one frame of tracks
instead of F.

Pixels of one frame cannot visit each other (a track lands at its own pixel in its own frame), so each frame's new
tracks go to the engines as one batch. In a long video (:func:`d4rt.runtime.windows.encode_video` with
``dense_grid``) a track spans the frames of the window that started it; the visited grid carries over the windows'
shared frames, so they are not tracked again. Counts: ``queries_saved`` = 1 - queries / (every pixel of every frame
tracked through its window).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from d4rt.runtime.geometry import grid_uv

VISIBLE = 0.5  # visibility probability above which a track marks the pixel it lands on
FLOAT16_MAX = 65000.0  # below float16's largest finite value (65504), with room for rounding up


@dataclass
class DenseTracks:
    """Alg. 1's tracks. Track p starts at frame t_src[p], pixel uv[p]; it spans frames first_frame[p] +
    0 .. L-1 (L = its window's length; frames beyond the video are NaN): xyz [P, L, 3] (world), uv_tgt [P, L, 2],
    visibility [P, L], confidence [P, L]. visited [F, n, n]: the occupancy grid at the end."""

    uv: np.ndarray
    t_src: np.ndarray
    first_frame: np.ndarray
    xyz: np.ndarray
    uv_tgt: np.ndarray
    visibility: np.ndarray
    confidence: np.ndarray
    visited: np.ndarray
    queries: int = 0
    queries_all: int = 0
    seconds: float = 0.0
    parts: list = field(default_factory=list, repr=False)

    def arrays(self, compact: bool = False) -> dict[str, np.ndarray]:
        """The arrays by name; ``compact``: as ``dense_tracks.npz`` stores them, the per-frame arrays (xyz, uv_tgt,
        visibility, confidence) in float16 (relative rounding error <= 2^-11 = 4.9e-4, far below the model's own
        error; xyz stays float32 if any |value| reaches float16's 65504), frame numbers int32: half the bytes."""
        arrays = {k: getattr(self, k) for k in
                  ("uv", "t_src", "first_frame", "xyz", "uv_tgt", "visibility", "confidence", "visited")}
        if compact:
            for k in ("xyz", "uv_tgt", "visibility", "confidence"):
                finite = arrays[k][np.isfinite(arrays[k])]
                if not finite.size or np.abs(finite).max() < FLOAT16_MAX:
                    arrays[k] = arrays[k].astype(np.float16)
            arrays["t_src"] = arrays["t_src"].astype(np.int32)
            arrays["first_frame"] = arrays["first_frame"].astype(np.int32)
        return arrays

    def summary(self) -> dict:
        """tracks, coverage (fraction of (frame, pixel) visited), queries, queries_all (every pixel tracked),
        queries_saved (fraction), tracks_per_s."""
        return {
            "tracks": int(len(self.t_src)), "grid": int(self.visited.shape[1]),
            "coverage": float(self.visited.mean()), "queries": int(self.queries),
            "queries_all": int(self.queries_all), "queries_saved": float(1 - self.queries / max(self.queries_all, 1)),
            "tracks_per_s": float(len(self.t_src) / max(self.seconds, 1e-9)), "seconds": round(self.seconds, 4),
        }


class DenseTracker:
    """Alg. 1 over windows: call :meth:`window` for each encoded window in order, then :meth:`result`."""

    def __init__(self, num_frames: int, grid: int, length: int):
        self.n, self.F, self.L = int(grid), int(num_frames), int(length)
        self.visited = np.zeros((self.F, self.n, self.n), bool)
        self.uv_grid = grid_uv(self.n)
        self.parts: list[dict[str, np.ndarray]] = []
        self.queries = self.queries_all = 0
        self.seconds = 0.0

    def window(self, rt, scene, frames: range, seed_frames, world_from_window=None, batch_size: int = 8192,
               progress: bool = False) -> None:
        """Start tracks at the unvisited pixels of ``seed_frames`` (global indices inside ``frames``, the window's
        frames), track them through the window, mark what they visit. xyz is mapped by ``world_from_window``
        ([4, 4] Sim(3); identity when None) from the window's camera 0."""
        clock = time.perf_counter()
        n, L = self.n, len(frames)
        M = np.eye(4) if world_from_window is None else world_from_window
        for f in seed_frames:
            fresh = np.flatnonzero(~self.visited[f].reshape(-1))
            self.queries_all += n * n * L
            if not len(fresh):
                continue
            uv = self.uv_grid[fresh]
            P = len(fresh)
            res = rt.query(scene, np.repeat(uv, L, 0), np.full(P * L, f - frames.start), np.tile(np.arange(L), P),
                           np.zeros(P * L, np.int64), batch_size, progress)
            self.queries += P * L
            vis = res["visibility"].reshape(P, L)
            uv_tgt = res["uv_tgt"].reshape(P, L, 2)
            self.visited[f].reshape(-1)[fresh] = True  # a seed covers its own pixel
            seen = (vis > VISIBLE) & np.isfinite(uv_tgt).all(-1) & (uv_tgt >= 0).all(-1) & (uv_tgt <= 1).all(-1)
            p, k = np.nonzero(seen)
            x = np.rint(uv_tgt[p, k, 0] * (n - 1)).astype(np.int64)
            y = np.rint(uv_tgt[p, k, 1] * (n - 1)).astype(np.int64)
            self.visited[frames.start + k, y, x] = True
            xyz = res["xyz"].reshape(P, L, 3).astype(np.float64) @ M[:3, :3].T + M[:3, 3]
            pad = self.L - L
            self.parts.append({
                "uv": uv, "t_src": np.full(P, f, np.int64), "first_frame": np.full(P, frames.start, np.int64),
                "xyz": _pad(xyz.astype(np.float32), pad), "uv_tgt": _pad(uv_tgt, pad), "visibility": _pad(vis, pad),
                "confidence": _pad(res["confidence"].reshape(P, L), pad),
            })
        self.seconds += time.perf_counter() - clock

    def result(self) -> DenseTracks:
        keys = ("uv", "t_src", "first_frame", "xyz", "uv_tgt", "visibility", "confidence")
        if self.parts:
            arrays = {k: np.concatenate([p[k] for p in self.parts]) for k in keys}
        else:  # pragma: no cover - every video has a first frame with unvisited pixels
            arrays = {k: np.zeros((0,)) for k in keys}
        return DenseTracks(**arrays, visited=self.visited, queries=self.queries, queries_all=self.queries_all,
                           seconds=self.seconds)


def _pad(a: np.ndarray, pad: int) -> np.ndarray:
    if pad <= 0:
        return a
    width = [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a.astype(np.float32), width, constant_values=np.nan)


def dense_tracks(rt, scene, size: int | None = None, batch_size: int = 8192, progress: bool = False,
                 grid: int | None = None) -> DenseTracks:
    """Alg. 1 on one encoded clip: tracks from every pixel of a size x size grid (default S) of every frame, each
    pixel tracked once; xyz in frame 0's camera. See :class:`DenseTracks`. ``grid=``: the deprecated name of size."""
    from d4rt.runtime.inputs import check_grid_size
    from d4rt.runtime.runtime import renamed

    n = check_grid_size("size", renamed(size, grid, "grid", "size"), scene.image_size)
    tracker = DenseTracker(scene.num_frames, n, scene.num_frames)
    frames = range(scene.num_frames)
    tracker.window(rt, scene, frames, frames, None, batch_size, progress)
    return tracker.result()
