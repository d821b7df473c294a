"""Hand-made geometry for the occupancy tests: pinhole cameras looking at axis-aligned boxes and planes, rendered
analytically in float64 (ray-box slabs, ray-plane), independent of the code under test."""

from __future__ import annotations

import numpy as np


def intrinsics(size: int, focal: float) -> np.ndarray:
    c = (size - 1) / 2
    return np.array([[focal, 0.0, c], [0.0, focal, c], [0.0, 0.0, 1.0]])


def pose(R: np.ndarray | None = None, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    T = np.eye(4)
    if R is not None:
        T[:3, :3] = R
    T[:3, 3] = t
    return T


def rotation_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def pixel_rays(K: np.ndarray, size: int) -> np.ndarray:
    """[size, size, 3] camera-frame ray directions with z = 1 through each pixel centre (integer coordinates)."""
    rows, cols = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    return np.stack([(cols - K[0, 2]) / K[0, 0], (rows - K[1, 2]) / K[1, 1], np.ones_like(cols)], -1)


def ray_box(origin: np.ndarray, dirs: np.ndarray, lo, hi) -> np.ndarray:
    """Entry parameter of rays origin + s * dirs into the box [lo, hi] (inf when missed or behind). dirs [..., 3]."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (lo - origin) / dirs
        b = (hi - origin) / dirs
    s_in = np.nanmax(np.minimum(a, b), -1)
    s_out = np.nanmin(np.maximum(a, b), -1)
    hit = (s_in <= s_out) & (s_in > 0)
    return np.where(hit, s_in, np.inf)


def ray_plane(origin: np.ndarray, dirs: np.ndarray, axis: int, value: float) -> np.ndarray:
    """Parameter where rays reach the plane x[axis] = value (inf when parallel or behind)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (value - origin[axis]) / dirs[..., axis]
    return np.where(np.isfinite(s) & (s > 0), s, np.inf)


def render(K: np.ndarray, T_wc: np.ndarray, size: int, boxes=(), planes=()):
    """Render one frame. boxes: [(lo, hi)] world boxes; planes: [(axis, value)] world planes.

    Returns:
        xyz_cam [size, size, 3] (NaN where nothing is hit) and z-depth [size, size] (inf where nothing is hit).
    """
    dirs_cam = pixel_rays(K, size)
    R, c = T_wc[:3, :3], T_wc[:3, 3]
    dirs_world = dirs_cam @ R.T
    s = np.full((size, size), np.inf)
    for lo, hi in boxes:
        s = np.minimum(s, ray_box(c, dirs_world, lo, hi))
    for axis, value in planes:
        s = np.minimum(s, ray_plane(c, dirs_world, axis, value))
    xyz_cam = dirs_cam * np.where(np.isfinite(s), s, np.nan)[..., None]
    depth = np.where(np.isfinite(s), s, np.inf)  # the camera-frame ray has z = 1, so s is the z-depth
    return xyz_cam, depth


def render_clip(K, T_wc, size, boxes_per_frame, planes=()):
    """Render T frames; boxes_per_frame[t] lists frame t's boxes. Returns xyz_cam [T, S, S, 3], depth [T, S, S]."""
    frames = [render(K, T_wc[t], size, boxes_per_frame[t], planes) for t in range(len(T_wc))]
    return np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames])


def reference_cast(origin_grid: np.ndarray, voxel: float, shape, origins: np.ndarray, points: np.ndarray):
    """Brute-force occupancy of one frame, voxel by voxel: a voxel is free when some segment origin -> point
    crosses its interior over a positive length and it holds no point (slab test on every voxel-ray pair)."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    lo = origin_grid + ijk * voxel  # [V, 3]
    hi = lo + voxel
    points = np.asarray(points, np.float64).reshape(-1, 3)
    origins = np.broadcast_to(origins, points.shape)
    crossed = np.zeros(len(ijk), bool)
    for c, p in zip(origins, points, strict=True):
        d = p - c
        with np.errstate(divide="ignore", invalid="ignore"):
            a = (lo - c) / d
            b = (hi - c) / d
        inside_slab = (lo <= c) & (c <= hi)  # only matters on an axis with d == 0
        t_in = np.where(d == 0, np.where(inside_slab, -np.inf, np.inf), np.minimum(a, b)).max(1)
        t_out = np.where(d == 0, np.where(inside_slab, np.inf, -np.inf), np.maximum(a, b)).min(1)
        crossed |= np.maximum(t_in, 0.0) < np.minimum(t_out, 1.0)
    point_ijk = np.floor((points - origin_grid) / voxel).astype(np.int64)
    inside = ((point_ijk >= 0) & (point_ijk < np.asarray(shape))).all(1)
    occupied = np.unique(np.ravel_multi_index(point_ijk[inside].T, shape))
    free = np.setdiff1d(np.flatnonzero(crossed), occupied)
    return occupied, free


class AnalyticRuntime:
    """A stand-in for a loaded d4rt runtime with the real one's signatures (``query``, ``camera_poses``), answering
    the queries occupancy makes (t_src = t_tgt = t_cam) from known geometry. Test double: the real runtime is
    exercised end to end in test_occupancy_cli.py; this one checks the geometry exactly."""

    def __init__(self, K, T_wc, boxes, planes, size):
        self.K, self.T_wc, self.boxes, self.planes, self.size = K, T_wc, boxes, planes, size
        self.calls = []

    def query(self, scene, uv, t_src, t_tgt, t_cam, batch_size=8192, progress=False):
        t_src, t_tgt, t_cam = (np.broadcast_to(t, (len(uv),)) for t in (t_src, t_tgt, t_cam))
        assert np.array_equal(t_src, t_tgt) and np.array_equal(t_src, t_cam) and len(np.unique(t_src)) == 1
        self.calls.append((len(uv), int(t_src[0])))
        t = int(t_src[0])
        px = uv * (self.size - 1)
        dirs = np.stack(
            [(px[:, 0] - self.K[0, 2]) / self.K[0, 0], (px[:, 1] - self.K[1, 2]) / self.K[1, 1], np.ones(len(uv))], -1
        )
        R, c = self.T_wc[t, :3, :3], self.T_wc[t, :3, 3]
        d_w = dirs @ R.T
        s = np.full(len(uv), np.inf)
        for lo, hi in self.boxes[t]:
            s = np.minimum(s, ray_box(c, d_w, lo, hi))
        for axis, value in self.planes:
            s = np.minimum(s, ray_plane(c, d_w, axis, value))
        hit = np.isfinite(s)
        return {
            "xyz": (dirs * np.where(hit, s, 1.0)[:, None]).astype(np.float32),
            "confidence": hit.astype(np.float32),
            "visibility": np.ones(len(uv), np.float32),
        }

    def camera_poses(self, scene, size=None, batch_size=8192, progress=False):
        return self.T_wc


class Scene:
    def __init__(self, T, S):
        self.num_frames, self.image_size = T, S
