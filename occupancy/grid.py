"""4D occupancy: one voxel grid per frame, carved by ray casting through each frame's point map. Numpy only.

L3ROcc builds one static point cloud, voxelises it and ray-casts each frame's visibility, so anything that moves
is smeared along its path. D4RT gives a point map per time step (queries with t_src = t_tgt = t_cam = t), so
here every frame gets its own grid with three states:

- occupied: a voxel that holds at least one of the frame's (confident) points;
- free: a voxel that a ray from the frame's camera centre to one of its points crosses before reaching the
  point's voxel, and that holds no point of that frame (a hit wins over a pass: thin surfaces stay solid);
- unobserved: everything else (behind surfaces, outside the view, or never reached).

World frame: frame 0's camera (OpenCV axes, +y down), as ``rt.camera_poses`` returns ``T_wc``. Positions are
multiplied by ``metric_scale`` before voxelising, so ``voxel_size`` is in metres when the clip's scale is known
and in scene units otherwise (metric_scale = 1). The lattice puts voxel centres at integer multiples of
``voxel_size``: frame 0's camera sits at a voxel centre, and grids built from different data line up.

Confidence: points whose confidence is below ``min_confidence`` are dropped (no hit and no ray); the states are
binary, so the remaining points count fully. Temporal smoothing and the sliding-window union live in
``d4rt.occupancy.temporal``; scores in ``d4rt.occupancy.metrics``; files in ``d4rt.occupancy.io``.

Ray casting is an exact 3D DDA (Amanatides & Woo) run for all rays of a frame at once: rays are sorted by their
number of voxel steps, so step k works on a contiguous prefix of the arrays, and visits are scattered into a
reusable boolean grid instead of being sorted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from d4rt.runtime.geometry import focal_from_points, transform_points
from d4rt.runtime.runtime import check_grid_size, point_maps, renamed

DEFAULT_MAX_VOXELS = 2**27  # 134 M voxels: two boolean scratch grids of 134 MB each
MAX_VOXELS_LIMIT = 2**31 - 1  # flat indices are int32 inside the ray caster

UNOBSERVED, FREE, OCCUPIED = 0, 1, 2


@dataclass(frozen=True)
class VoxelGrid:
    """An axis-aligned grid in the world frame.

    Voxel (i, j, k) spans ``origin + [i, i+1) * voxel_size`` (likewise j, k); its flat index is
    ``(i * ny + j) * nz + k``.

    Attributes:
        origin: [3] world position of the min corner of voxel (0, 0, 0), in metric units (scaled scene units).
        voxel_size: edge length, same units.
        shape: (nx, ny, nz).
    """

    origin: np.ndarray
    voxel_size: float
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        origin = np.asarray(self.origin, np.float64)
        shape = tuple(int(n) for n in self.shape)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "voxel_size", float(self.voxel_size))
        object.__setattr__(self, "shape", shape)
        check_voxel_size(self.voxel_size)
        if origin.shape != (3,) or not np.isfinite(origin).all():
            raise ValueError(f"VoxelGrid origin must be 3 finite numbers, got {self.origin!r}")
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"VoxelGrid shape must be 3 positive sizes (nx, ny, nz), got {self.shape!r}")
        if self.num_voxels > MAX_VOXELS_LIMIT:
            raise ValueError(f"VoxelGrid {shape} has more than 2**31 - 1 voxels; use a larger voxel size")

    @property
    def num_voxels(self) -> int:
        nx, ny, nz = self.shape
        return nx * ny * nz

    @classmethod
    def covering(cls, points: np.ndarray, voxel_size: float, max_voxels: int = DEFAULT_MAX_VOXELS) -> "VoxelGrid":
        """The smallest lattice-aligned grid (voxel centres at integer multiples of voxel_size) holding
        ``points`` [N, 3]."""
        check_voxel_size(voxel_size)
        points = np.asarray(points, np.float64).reshape(-1, 3)
        if len(points) == 0:
            raise ValueError("cannot size a voxel grid from zero points: the scene is empty")
        lo = np.floor(points.min(0) / voxel_size + 0.5)
        hi = np.floor(points.max(0) / voxel_size + 0.5)
        shape = tuple(int(n) for n in hi - lo + 1)
        count = int(np.prod(np.array(shape, dtype=np.float64)))
        if count > max_voxels:
            extent = (hi - lo + 1) * voxel_size
            raise ValueError(
                f"the scene spans {extent[0]:.3g} x {extent[1]:.3g} x {extent[2]:.3g} units, {shape[0]} x "
                f"{shape[1]} x {shape[2]} = {count:,} voxels of {voxel_size:g}, more than max_voxels="
                f"{max_voxels:,}; use a larger voxel size, drop far points with max_range, or pass a smaller grid"
            )
        return cls((lo - 0.5) * voxel_size, voxel_size, shape)

    def same_as(self, other: "VoxelGrid") -> bool:
        return (
            self.shape == other.shape
            and self.voxel_size == other.voxel_size
            and bool(np.array_equal(self.origin, other.origin))
        )

    def to_grid_coords(self, xyz: np.ndarray) -> np.ndarray:
        """World [..., 3] -> continuous grid coordinates [..., 3]: voxel (i, j, k) spans [i, i+1) x ..."""
        return (np.asarray(xyz, np.float64) - self.origin) / self.voxel_size

    def flat_index(self, ijk: np.ndarray) -> np.ndarray:
        """[N, 3] integer voxel coordinates (inside the grid) -> [N] int64 flat indices."""
        ijk = np.asarray(ijk, np.int64)
        _, ny, nz = self.shape
        return (ijk[:, 0] * ny + ijk[:, 1]) * nz + ijk[:, 2]

    def voxel_coords(self, flat: np.ndarray) -> np.ndarray:
        """[N] flat indices -> [N, 3] int64 voxel coordinates."""
        return np.stack(np.unravel_index(np.asarray(flat, np.int64), self.shape), -1).astype(np.int64)

    def centers(self, flat: np.ndarray) -> np.ndarray:
        """[N] flat indices -> [N, 3] world positions of the voxel centres."""
        return self.origin + (self.voxel_coords(flat) + 0.5) * self.voxel_size


@dataclass
class Occupancy:
    """Per-frame occupancy of one clip: three states per voxel and frame, stored sparsely.

    Attributes:
        grid: the voxel grid (world frame = frame 0's camera, metric units = scene units * metric_scale).
        occupied: T arrays of sorted, unique int64 flat voxel indices.
        free: T arrays likewise, disjoint from ``occupied`` of the same frame. Every other voxel is unobserved.
        T_wc: [T, 4, 4] camera-to-world poses in scene units (before metric_scale).
        K: [T, 3, 3] intrinsics in pixels of the network's S x S input.
        metric_scale: metres per scene unit used to build the grid (1.0: the grid is in scene units).
    """

    grid: VoxelGrid
    occupied: list[np.ndarray]
    free: list[np.ndarray]
    T_wc: np.ndarray
    K: np.ndarray
    metric_scale: float = 1.0

    @property
    def num_frames(self) -> int:
        return len(self.occupied)

    def observed(self, t: int) -> np.ndarray:
        """Sorted flat indices of the voxels observed (occupied or free) at frame t."""
        return np.union1d(self.occupied[t], self.free[t])

    def dense(self, t: int) -> np.ndarray:
        """Frame t as a dense uint8 grid [nx, ny, nz] of UNOBSERVED (0), FREE (1), OCCUPIED (2)."""
        state = np.zeros(self.grid.num_voxels, np.uint8)
        state[self.free[t]] = FREE
        state[self.occupied[t]] = OCCUPIED
        return state.reshape(self.grid.shape)

    def counts(self) -> np.ndarray:
        """[T, 3] int64 numbers of (occupied, free, unobserved) voxels per frame."""
        occ = np.array([len(a) for a in self.occupied], np.int64)
        free = np.array([len(a) for a in self.free], np.int64)
        return np.stack([occ, free, self.grid.num_voxels - occ - free], -1)

    def camera_centers(self) -> np.ndarray:
        """[T, 3] camera centres in the grid's (metric) world units."""
        return self.T_wc[:, :3, 3] * self.metric_scale


# ----- input checks ---------------------------------------------------------------------------------------------


def check_voxel_size(voxel_size: float) -> None:
    if not (np.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel_size must be a positive number of scene units (e.g. 0.05), got {voxel_size!r}")


def _check_poses(T_wc: np.ndarray, num_frames: int) -> np.ndarray:
    T_wc = np.asarray(T_wc, np.float64)
    if T_wc.shape != (num_frames, 4, 4):
        raise ValueError(f"T_wc must be [T, 4, 4] = [{num_frames}, 4, 4] camera-to-world poses, got {T_wc.shape}")
    if not np.isfinite(T_wc).all():
        raise ValueError("T_wc contains NaN or infinite values; pass valid camera-to-world poses")
    if np.abs(T_wc[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > 1e-6:
        raise ValueError("T_wc must be homogeneous 4x4 matrices whose last row is [0, 0, 0, 1]")
    return T_wc


def _check_intrinsics(K: np.ndarray, num_frames: int) -> np.ndarray:
    K = np.asarray(K, np.float64)
    if K.shape == (3, 3):
        K = np.broadcast_to(K, (num_frames, 3, 3)).copy()
    if K.shape != (num_frames, 3, 3):
        raise ValueError(f"K must be [3, 3] or [T, 3, 3] = [{num_frames}, 3, 3] intrinsics, got {K.shape}")
    if not np.isfinite(K).all() or (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
        raise ValueError("K must be finite with positive focal lengths K[0, 0] and K[1, 1]")
    return K


def _check_positive(name: str, value: float | None, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


# ----- ray casting ----------------------------------------------------------------------------------------------


def _clip_segments(start: np.ndarray, end: np.ndarray, shape: Sequence[int]):
    """Clip segments (grid coordinates) to the grid box. Liang-Barsky.

    Returns (keep [N] bool, t0 [N], t1 [N]): the part of segment n inside the box is start + t (end - start) for
    t in [t0, t1]. The box is shrunk by a hair so that floor() of a clipped end stays inside the grid.
    """
    hi = np.asarray(shape, np.float64) - 1e-9
    lo = 1e-9
    d = end - start
    t0 = np.zeros(len(start))
    t1 = np.ones(len(start))
    keep = np.ones(len(start), bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for a in range(3):
            flat = d[:, a] == 0
            keep &= ~flat | ((start[:, a] >= lo) & (start[:, a] <= hi[a]))
            ta = (lo - start[:, a]) / d[:, a]
            tb = (hi[a] - start[:, a]) / d[:, a]
            t0 = np.where(flat, t0, np.maximum(t0, np.minimum(ta, tb)))
            t1 = np.where(flat, t1, np.minimum(t1, np.maximum(ta, tb)))
    keep &= t0 <= t1
    return keep, t0, t1


def _cast_into(grid: VoxelGrid, origins: np.ndarray, points: np.ndarray, hit: np.ndarray, passed: np.ndarray):
    """Mark the voxels of ``points`` in ``hit`` and the voxels their rays cross before them in ``passed``.

    Args:
        origins: [N, 3] or [3] world positions of the rays' camera centres; points: [N, 3] their end points.
        hit, passed: [num_voxels] bool scratch grids, updated in place.
    """
    shape = np.array(grid.shape)
    g1 = grid.to_grid_coords(points)
    g0 = np.broadcast_to(grid.to_grid_coords(origins), g1.shape)
    inside = ((g1 >= 0) & (g1 < shape)).all(1)
    if inside.any():
        hit[grid.flat_index(np.floor(g1[inside]))] = True

    keep, t0, t1 = _clip_segments(g0, g1, grid.shape)
    g0, g1, t0, t1, inside = g0[keep], g1[keep], t0[keep], t1[keep], inside[keep]
    d = g1 - g0
    start = g0 + t0[:, None] * d
    end = g0 + t1[:, None] * d
    voxel = np.clip(np.floor(start), 0, shape - 1).astype(np.int64)
    voxel_end = np.clip(np.floor(end), 0, shape - 1).astype(np.int64)
    # Voxels visited: the start voxel and one per boundary crossed, minus the end voxel when it holds the point
    # (a clipped ray leaves the grid through its end voxel, which it crosses: free).
    steps = np.abs(voxel_end - voxel).sum(1) + (~inside)
    order = np.argsort(-steps, kind="stable")
    steps = steps[order]
    if len(steps) == 0 or steps[0] == 0:
        return
    d, start, voxel = d[order], start[order], voxel[order]

    # Flat indices fit int32: grids are capped below 2**31 voxels.
    strides = np.array([grid.shape[1] * grid.shape[2], grid.shape[2], 1], np.int64)
    flat = (voxel @ strides).astype(np.int32)
    step_sign = np.sign(d).astype(np.int32)
    flat_step = [step_sign[:, a] * np.int32(strides[a]) for a in range(3)]
    moving = d != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t_step_all = np.where(moving, 1.0 / np.abs(d), 0.0)  # segment parameter per voxel along each axis
        boundary = np.where(d > 0, voxel + 1 - start, start - voxel)
    t_next = [np.where(moving[:, a], boundary[:, a] * t_step_all[:, a], np.inf) for a in range(3)]
    t_step = [np.ascontiguousarray(t_step_all[:, a]) for a in range(3)]
    # Rays are sorted by step count (descending), so rays still walking at step k are the prefix [:active[k]].
    # Masked ufuncs (where=) are slow on random masks; multiplying by the 0/1 masks is branch-free.
    active = np.searchsorted(-steps, -np.arange(steps[0]), side="left")
    n = len(steps)
    move_x, move_y, move_z = np.empty(n, bool), np.empty(n, bool), np.empty(n, bool)
    dt, df = np.empty(n), np.empty(n, np.int32)
    for k in range(int(steps[0])):
        m = int(active[k])
        f = flat[:m]
        passed[f] = True
        tx, ty, tz = t_next[0][:m], t_next[1][:m], t_next[2][:m]
        mx, my, mz = move_x[:m], move_y[:m], move_z[:m]
        # one axis per step, ties broken x, y, z: the axis whose next boundary comes first
        np.less_equal(tx, ty, out=mx)
        np.less_equal(tx, tz, out=mz)
        np.logical_and(mx, mz, out=mx)
        np.less_equal(ty, tz, out=mz)
        np.greater(mz, mx, out=my)  # ty <= tz and not x
        np.logical_or(mx, my, out=mz)
        np.logical_not(mz, out=mz)
        for a, move in enumerate((mx, my, mz)):
            np.multiply(t_step[a][:m], move, out=dt[:m])
            np.add(t_next[a][:m], dt[:m], out=t_next[a][:m])
            np.multiply(flat_step[a][:m], move, out=df[:m])
            np.add(f, df[:m], out=f)


def cast_rays(grid: VoxelGrid, origins: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame's occupied and free voxels from rays ``origins[n] -> points[n]``.

    Args:
        grid: the voxel grid; parts of rays outside it are ignored.
        origins: [N, 3] or [3] ray starts (camera centres), world frame, the grid's (metric) units.
        points: [N, 3] ray ends (surface points), world frame, the grid's units.
    Returns:
        occupied, free: sorted unique int64 flat indices (disjoint).
    """
    points = np.asarray(points, np.float64).reshape(-1, 3)
    hit = np.zeros(grid.num_voxels, bool)
    passed = np.zeros(grid.num_voxels, bool)
    _cast_into(grid, origins, points, hit, passed)
    return np.flatnonzero(hit), np.flatnonzero(passed & ~hit)


# ----- building a clip's occupancy ------------------------------------------------------------------------------


def _progress(iterable: Iterable, enabled: bool, desc: str, total: int):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is in the runtime extra; the core works without it
        return iterable
    return tqdm(iterable, desc=desc, total=total, unit="frame")


def occupancy_from_rays(
    points_world: list[np.ndarray],
    T_wc: np.ndarray,
    K: np.ndarray,
    voxel_size: float = 0.05,
    metric_scale: float = 1.0,
    grid: VoxelGrid | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    progress: bool = False,
) -> Occupancy:
    """Per-frame occupancy from each frame's surface points in the world frame (scene units).

    Args:
        points_world: T arrays [N_t, 3], the points frame t sees, already filtered (finite, confident).
        T_wc: [T, 4, 4] camera-to-world poses (scene units); the rays start at their centres.
        K: [3, 3] or [T, 3, 3] intrinsics (stored, not used for casting).
        grid: a grid to cast into (metric units); default: the lattice-aligned grid covering every point and
            camera centre.
    """
    T = len(points_world)
    if T == 0:
        raise ValueError("the scene is empty: no frames")
    T_wc = _check_poses(T_wc, T)
    K = _check_intrinsics(K, T)
    check_voxel_size(voxel_size)
    _check_positive("metric_scale", metric_scale)
    centers = T_wc[:, :3, 3] * metric_scale
    points = [np.asarray(p, np.float64).reshape(-1, 3) * metric_scale for p in points_world]
    if sum(len(p) for p in points) == 0:
        raise ValueError("the scene is empty: no frame has a usable point (check confidences / depth validity)")
    if grid is None:
        grid = VoxelGrid.covering(np.concatenate([centers, *points]), voxel_size, max_voxels)
    elif grid.num_voxels > max_voxels:
        raise ValueError(f"the grid has {grid.num_voxels:,} voxels, more than max_voxels={max_voxels:,}")

    hit = np.zeros(grid.num_voxels, bool)
    passed = np.zeros(grid.num_voxels, bool)
    occupied, free = [], []
    for t in _progress(range(T), progress, "ray casting", T):
        _cast_into(grid, centers[t], points[t], hit, passed)
        occ = np.flatnonzero(hit)
        passed[occ] = False
        fr = np.flatnonzero(passed)
        occupied.append(occ)
        free.append(fr)
        hit[occ] = False
        passed[fr] = False
    return Occupancy(grid, occupied, free, T_wc, K, float(metric_scale))


def occupancy_from_point_maps(
    xyz_cam: np.ndarray,
    T_wc: np.ndarray,
    K: np.ndarray,
    confidence: np.ndarray | None = None,
    voxel_size: float = 0.05,
    metric_scale: float = 1.0,
    min_confidence: float = 0.5,
    max_range: float | None = None,
    grid: VoxelGrid | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    progress: bool = False,
) -> Occupancy:
    """Per-frame occupancy from per-frame point maps, each in its own camera frame.

    Args:
        xyz_cam: [T, H, W, 3] (or [T, N, 3]) points of frame t in camera t's frame (scene units). Must be finite:
            to leave a pixel out, give it confidence 0.
        T_wc: [T, 4, 4] camera-to-world poses, world = frame 0's camera.
        K: [3, 3] or [T, 3, 3] intrinsics in pixels of the S x S input (stored with the result).
        confidence: [T, H, W] (or [T, N]) probabilities in [0, 1]; points below ``min_confidence`` are dropped.
            None: every point counts.
        voxel_size: voxel edge in metric units (scene units * metric_scale).
        metric_scale: metres per scene unit when known; 1 keeps scene units.
        max_range: drop points farther than this from their camera (scene units * metric_scale); None: keep all.
        grid: cast into this grid (e.g. a ground truth's); default: the grid covering all points and cameras.
        progress: show a tqdm bar over frames.
    Returns:
        Occupancy with one (occupied, free) pair per frame.
    """
    xyz = np.asarray(xyz_cam, np.float64)
    if xyz.ndim < 3 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz_cam must be [T, H, W, 3] or [T, N, 3] point maps, got shape {xyz.shape}")
    T = xyz.shape[0]
    if xyz.size == 0:
        raise ValueError(f"the scene is empty: xyz_cam has shape {np.shape(xyz_cam)}; pass at least one point")
    xyz = xyz.reshape(T, -1, 3)
    bad = ~np.isfinite(xyz).all(-1)
    if bad.any():
        t = int(np.argmax(bad.any(1)))
        raise ValueError(
            f"xyz_cam has {int(bad.sum())} NaN or infinite points (first in frame {t}); replace them with any "
            "finite value and give them confidence 0 to leave them out"
        )
    if confidence is None:
        keep = np.ones(xyz.shape[:2], bool)
    else:
        conf = np.asarray(confidence, np.float64)
        if conf.shape[0] != T or conf.size != T * xyz.shape[1]:
            raise ValueError(
                f"confidence must match the point maps: xyz_cam is {np.shape(xyz_cam)}, so confidence should be "
                f"{np.shape(xyz_cam)[:-1]}, got {conf.shape}"
            )
        conf = conf.reshape(T, -1)
        if not np.isfinite(conf).all() or conf.min() < 0 or conf.max() > 1:
            raise ValueError("confidence must be probabilities in [0, 1] (apply a sigmoid to logits first)")
        if not 0 <= min_confidence <= 1:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
        keep = conf >= min_confidence
    _check_positive("max_range", max_range, optional=True)
    _check_positive("metric_scale", metric_scale)
    if max_range is not None:
        keep &= np.linalg.norm(xyz, axis=-1) * metric_scale <= max_range
    T_wc = _check_poses(T_wc, T)
    points_world = [transform_points(T_wc[t], xyz[t][keep[t]]) for t in range(T)]
    return occupancy_from_rays(points_world, T_wc, K, voxel_size, metric_scale, grid, max_voxels, progress)


def point_maps_from_depth(depth: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unproject z-depth maps with a pinhole model (pixel centres at integer coordinates).

    Args:
        depth: [T, H, W] z-depth in scene units; <= 0 or non-finite means no surface (sky, invalid).
        K: [3, 3] or [T, 3, 3] intrinsics in pixels of these maps.
    Returns:
        xyz_cam [T, H, W, 3] (0 where invalid) and valid [T, H, W] bool.
    """
    depth = np.asarray(depth, np.float64)
    if depth.ndim != 3:
        raise ValueError(f"depth must be [T, H, W] z-depth maps, got shape {depth.shape}")
    T, H, W = depth.shape
    if T * H * W == 0:
        raise ValueError(f"the scene is empty: depth has shape {depth.shape}")
    K = _check_intrinsics(K, T)
    valid = np.isfinite(depth) & (depth > 0)
    z = np.where(valid, depth, 0.0)
    rows, cols = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    fx, fy, cx, cy = (K[:, i, j][:, None, None] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    x = (cols - cx) / fx * z
    y = (rows - cy) / fy * z
    return np.stack([x, y, z], -1), valid


def ground_truth_occupancy(
    depth: np.ndarray,
    K: np.ndarray,
    T_wc: np.ndarray,
    voxel_size: float = 0.05,
    metric_scale: float = 1.0,
    grid: VoxelGrid | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
) -> Occupancy:
    """Ground-truth per-frame occupancy from ground-truth z-depth maps (e.g. the synthetic scenes).

    Same rule as the predictions: every valid pixel casts a ray from its camera to its surface point.

    Args:
        depth: [T, H, W] z-depth (scene units); <= 0 or non-finite = no surface.
        K: [3, 3] or [T, 3, 3] intrinsics in pixels of the depth maps.
        T_wc: [T, 4, 4] camera-to-world poses.
    """
    xyz_cam, valid = point_maps_from_depth(depth, K)
    return occupancy_from_point_maps(
        xyz_cam, T_wc, K, valid.astype(np.float64), voxel_size, metric_scale, 0.5, None, grid, max_voxels
    )


# ----- from a D4RT scene ----------------------------------------------------------------------------------------


def dense_point_maps(rt, scene, size: int | None = None, batch_size: int = 65536, progress: bool = True,
                     grid_size: int | None = None):
    """Query a size x size point map per frame with t_src = t_tgt = t_cam = t.

    Args:
        rt: a runtime from ``d4rt.runtime.load``; scene: ``rt.encode(frames)``.
        size: n for an n x n grid of queries per frame (default: the scene's S, one query per input pixel);
            grid_size: its deprecated name.
    Returns:
        xyz_cam [T, n, n, 3] (frame t's camera, scene units), confidence [T, n, n] (probabilities), uv [n * n, 2].
    """
    n = check_grid_size("size", renamed(size, grid_size, "grid_size", "size"), scene.image_size)
    T = scene.num_frames
    xyz = np.empty((T, n, n, 3), np.float64)
    conf = np.empty((T, n, n), np.float64)
    for t in _progress(range(T), progress, "querying point maps", T):  # frame by frame: bounded memory
        maps = point_maps(rt, scene, t, n, None, batch_size)
        xyz[t], conf[t], uv = maps["xyz"][0], maps["confidence"][0], maps["uv"]
    return xyz, conf, uv


def intrinsics_from_point_maps(xyz_cam: np.ndarray, uv: np.ndarray, image_size: int) -> np.ndarray:
    """K [T, 3, 3] (pixels of the S x S input) from each frame's point map in its own camera: the median focal of
    :func:`d4rt.runtime.geometry.focal_from_points`, the solver ``rt.intrinsics`` uses, on the queried grid.

    Args:
        xyz_cam: [T, n, n, 3] from :func:`dense_point_maps`; uv: [n * n, 2] its query grid.
    """
    xyz = np.asarray(xyz_cam, np.float64).reshape(len(xyz_cam), -1, 3)
    K = np.stack([focal_from_points(uv, xyz[t], image_size) for t in range(len(xyz))])
    bad = (K[:, 0, 0] <= 0) | (K[:, 1, 1] <= 0)
    if bad.any():
        t = int(np.argmax(bad))
        raise ValueError(
            f"the point maps do not fit a pinhole camera: frame {t} gives focal lengths fx = {K[t, 0, 0]:.4g}, "
            f"fy = {K[t, 1, 1]:.4g} (must be > 0; points right of the image centre need x > 0, below it y > 0). "
            "Is the model trained, and do the engines match it?"
        )
    return K


def occupancy_from_scene(
    rt,
    scene,
    voxel_size: float = 0.05,
    size: int | None = None,
    pose_size: int | None = None,
    batch_size: int = 65536,
    progress: bool = True,
    grid_size: int | None = None,
    pose_grid: int | None = None,
    **options,
) -> Occupancy:
    """Per-frame occupancy of an encoded clip: dense point maps from D4RT queries, posed by rt.camera_poses.

    Args:
        rt: a runtime from ``d4rt.runtime.load``; scene: ``rt.encode(frames)``.
        size: n for an n x n query grid per frame (default: the scene's S, one query per input pixel).
        pose_size: ``rt.camera_poses(scene, size=pose_size)``: a pose_size x pose_size grid per frame, queried
            twice (default 32).
        grid_size, pose_grid: deprecated names of size, pose_size.
        options: passed to ``occupancy_from_point_maps`` (metric_scale, min_confidence, max_range, grid, ...).
    Returns:
        Occupancy in frame 0's camera; its K [T, 3, 3] comes from the same point maps
        (:func:`intrinsics_from_point_maps`), its T_wc [T, 4, 4] from ``rt.camera_poses``.
    """
    size = renamed(size, grid_size, "grid_size", "size")
    pose_size = renamed(pose_size, pose_grid, "pose_grid", "pose_size") or 32
    xyz_cam, confidence, uv = dense_point_maps(rt, scene, size, batch_size, progress)
    T_wc = np.asarray(rt.camera_poses(scene, size=pose_size, batch_size=batch_size, progress=progress), np.float64)
    K = intrinsics_from_point_maps(xyz_cam, uv, scene.image_size)
    return occupancy_from_point_maps(xyz_cam, T_wc, K, confidence, voxel_size=voxel_size, progress=progress, **options)


def occupancy_from_video(
    rt,
    video,
    voxel_size: float = 0.05,
    size: int | None = None,
    pose_size: int | None = None,
    start: int = 0,
    stride: int = 1,
    max_frames: int | None = None,
    batch_size: int = 65536,
    progress: bool = True,
    pose_grid: int | None = None,
    **options,
):
    """Per-frame occupancy of a video of any length: :func:`d4rt.runtime.windows.encode_video` runs it in the
    engines' windows, aligned by Sim(3) as ``d4rt infer`` does, and each frame's point map (its own camera, the
    video's scale) is ray-cast from the pose the windows give.

    Args:
        video: frames [F, H, W, 3] or a video file; start / stride / max_frames select frames.
        size: n for an n x n query grid per frame (default: the engines' S, one query per input pixel).
        pose_size: the windows' pose / alignment grid (default: encode_video's); pose_grid: its deprecated name.
        options: passed to :func:`occupancy_from_point_maps` (metric_scale, min_confidence, max_range, grid, ...).
    Returns:
        (Occupancy in frame 0's camera with K [F, 3, 3] from the point maps (:func:`intrinsics_from_point_maps`),
        the :class:`~d4rt.runtime.windows.VideoScene`).
    """
    from d4rt.runtime.geometry import grid_uv
    from d4rt.runtime.windows import encode_video

    pose_size = renamed(pose_size, pose_grid, "pose_grid", "pose_size")
    scene = encode_video(rt, video, start=start, stride=stride, max_frames=max_frames, depth_size=size,
                         pose_size=pose_size, keep_point_maps=True, batch_size=batch_size, progress=progress)
    n = scene.xyz_cam.shape[1]
    K = intrinsics_from_point_maps(scene.xyz_cam, grid_uv(n), scene.image_size)
    occ = occupancy_from_point_maps(scene.xyz_cam, scene.T_wc, K, scene.depth_confidence, voxel_size=voxel_size,
                                    progress=progress, **options)
    return occ, scene
