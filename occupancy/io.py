"""Occupancy files: the sparse per-frame npz (with its reader), a frame's occupied voxels as PLY, and a
bird's-eye view over time as PNG. Every file is written atomically (runtime/files.py).

The npz ("d4rt-occupancy-v1") holds each frame's occupied and free voxels as runs of consecutive flat indices
(start, length), in CSR form over frames, and what is needed to place them in the world. Runs, because the
fastest axis is z (forward at frame 0): free space comes in long runs along the rays, so a frame of 500 k free
voxels takes about 10 k runs, and writing and reading stay fast.

    format              str    "d4rt-occupancy-v1"
    origin              [3]    float64  world position of voxel (0, 0, 0)'s min corner (metric units)
    voxel_size          []     float64  (metric units = scene units * metric_scale)
    shape               [3]    int64    (nx, ny, nz); flat index = (i * ny + j) * nz + k
    metric_scale        []     float64
    T_wc                [T, 4, 4] float64  camera-to-world, scene units, world = frame 0's camera (OpenCV axes)
    K                   [T, 3, 3] float64  intrinsics in pixels of the network's S x S input
    occupied_indptr     [T + 1] int64  frame t's runs are occupied_starts/lengths[indptr[t]:indptr[t + 1]]
    occupied_starts     [R] int32      first flat index of each run (sorted, runs do not overlap)
    occupied_lengths    [R] int32      run lengths (>= 1)
    free_indptr, free_starts, free_lengths   the same for the free voxels
Every other voxel of frame t is unobserved.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from d4rt.runtime.files import atomic_path
from d4rt.occupancy.grid import Occupancy, VoxelGrid
from d4rt.runtime.outputs import write_ply

FORMAT = "d4rt-occupancy-v1"
_KEYS = ("format", "origin", "voxel_size", "shape", "metric_scale", "T_wc", "K") + tuple(
    f"{s}_{p}" for s in ("occupied", "free") for p in ("indptr", "starts", "lengths")
)


def _to_runs(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique indices -> (starts, lengths) of their maximal runs of consecutive values."""
    if len(indices) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    first = np.concatenate([[0], breaks])
    return indices[first], np.diff(np.concatenate([first, [len(indices)]]))


def _from_runs(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(starts, lengths) -> the indices they cover, int64."""
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def save_occupancy(path: str | Path, occ: Occupancy) -> Path:
    """Write ``occ`` to one compressed npz (atomically). Returns the path."""
    arrays = {
        "format": np.array(FORMAT),
        "origin": occ.grid.origin,
        "voxel_size": np.array(occ.grid.voxel_size),
        "shape": np.array(occ.grid.shape, np.int64),
        "metric_scale": np.array(occ.metric_scale),
        "T_wc": np.asarray(occ.T_wc, np.float64),
        "K": np.asarray(occ.K, np.float64),
    }
    for state in ("occupied", "free"):
        runs = [_to_runs(np.asarray(a, np.int64)) for a in getattr(occ, state)]
        counts = [len(starts) for starts, _ in runs]
        arrays[f"{state}_indptr"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        arrays[f"{state}_starts"] = np.concatenate([np.zeros(0, np.int64)] + [r[0] for r in runs]).astype(np.int32)
        arrays[f"{state}_lengths"] = np.concatenate([np.zeros(0, np.int64)] + [r[1] for r in runs]).astype(np.int32)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return Path(path)


def _csr(data, state: str, T: int, num_voxels: int, path) -> list[np.ndarray]:
    indptr = np.asarray(data[f"{state}_indptr"])
    starts = np.asarray(data[f"{state}_starts"]).astype(np.int64)
    lengths = np.asarray(data[f"{state}_lengths"]).astype(np.int64)
    if indptr.shape != (T + 1,) or indptr[0] != 0 or indptr[-1] != len(starts) or (np.diff(indptr) < 0).any():
        raise ValueError(f"{path}: {state}_indptr is not a valid [T + 1] = [{T + 1}] offset array; the file is corrupt")
    if lengths.shape != starts.shape or (lengths < 1).any():
        raise ValueError(f"{path}: {state}_lengths must be positive, one per run; the file is corrupt")
    if len(starts) and (starts.min() < 0 or (starts + lengths).max() > num_voxels):
        raise ValueError(f"{path}: {state} voxels fall outside the grid's {num_voxels} voxels; the file is corrupt")
    lists = []
    for t in range(T):
        s, n = starts[indptr[t] : indptr[t + 1]], lengths[indptr[t] : indptr[t + 1]]
        if (s[1:] < s[:-1] + n[:-1]).any():
            raise ValueError(f"{path}: frame {t}'s {state} runs are not sorted and disjoint; the file is corrupt")
        lists.append(_from_runs(s, n))
    return lists


def load_occupancy(path: str | Path) -> Occupancy:
    """Read an npz written by ``save_occupancy``, checking that it is whole and consistent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no occupancy file at {path}; write one with save_occupancy or `d4rt occupancy`")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in _KEYS if k not in data.files]
            if missing:
                raise ValueError(f"{path} is not a d4rt occupancy file: missing {missing}")
            arrays = {k: data[k] for k in _KEYS}
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable npz ({e}); the file is corrupt or truncated") from e
    if str(arrays["format"]) != FORMAT:
        raise ValueError(f"{path} has format {str(arrays['format'])!r}, this reader knows {FORMAT!r}")
    grid = VoxelGrid(arrays["origin"], float(arrays["voxel_size"]), tuple(arrays["shape"]))
    T_wc, K = arrays["T_wc"], arrays["K"]
    T = len(T_wc)
    if T_wc.shape != (T, 4, 4) or K.shape != (T, 3, 3):
        raise ValueError(f"{path}: T_wc {T_wc.shape} and K {K.shape} must be [T, 4, 4] and [T, 3, 3]")
    occupied = _csr(arrays, "occupied", T, grid.num_voxels, path)
    free = _csr(arrays, "free", T, grid.num_voxels, path)
    mask = np.zeros(grid.num_voxels, bool)
    for t in range(T):
        mask[occupied[t]] = True
        if mask[free[t]].any():
            raise ValueError(f"{path}: frame {t} has voxels both occupied and free; the file is corrupt")
        mask[occupied[t]] = False
    return Occupancy(grid, occupied, free, T_wc, K, float(arrays["metric_scale"]))


def _height_colors(height: np.ndarray) -> np.ndarray:
    """[N] heights -> [N, 3] uint8, blue (low) to red (high)."""
    span = np.ptp(height) if len(height) else 0.0
    h = (height - height.min()) / span if span > 0 else np.zeros_like(height)
    return np.stack([255 * h, 255 * (1 - np.abs(2 * h - 1)), 255 * (1 - h)], -1).round().astype(np.uint8)


def write_frame_ply(path: str | Path, occ: Occupancy, t: int) -> Path:
    """Frame t's occupied voxel centres as a binary PLY (world frame, metric units), coloured by height (-y)."""
    if not 0 <= t < occ.num_frames:
        raise ValueError(f"frame t={t} is out of range: the clip has {occ.num_frames} frames")
    xyz = occ.grid.centers(occ.occupied[t])
    comment = f"d4rt occupancy frame {t}, voxel size {occ.grid.voxel_size:g}, world = frame 0 camera"
    return write_ply(path, xyz, _height_colors(-xyz[:, 1].astype(np.float64)), comment)


def bev_states(occ: Occupancy, t: int, y_range: tuple[float, float] | None = None) -> np.ndarray:
    """Top-down view of frame t, [nx, nz] uint8: a column is OCCUPIED if any of its voxels is, else FREE if any
    is, else UNOBSERVED (the max of the states along y, frame 0's down axis).

    y_range: (y_min, y_max) world heights (metric units, +y down) of the voxels to look at, e.g. everything
    above the floor to see obstacles; None: all.
    """
    state = occ.dense(t)
    if y_range is not None:
        centres_y = occ.grid.origin[1] + (np.arange(occ.grid.shape[1]) + 0.5) * occ.grid.voxel_size
        keep = (centres_y >= y_range[0]) & (centres_y <= y_range[1])
        if not keep.any():
            raise ValueError(
                f"y_range {y_range} holds no voxel centre of the grid (y from {centres_y[0]:.3g} to "
                f"{centres_y[-1]:.3g})"
            )
        state = state[:, keep]
    return state.max(axis=1)


def plot_bev(
    path: str | Path,
    occ: Occupancy,
    frames: list[int] | None = None,
    max_panels: int = 8,
    y_range: tuple[float, float] | None = None,
) -> Path:
    """Bird's-eye views (x right, z forward) of several frames side by side as a PNG, with the camera path.

    frames: which frames (default: up to ``max_panels`` evenly spaced over the clip). y_range: the heights to
    look at (see ``bev_states``). Needs matplotlib.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import ListedColormap
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("the bird's-eye-view plot needs matplotlib: pip install matplotlib") from e
    T = occ.num_frames
    if frames is None:
        frames = sorted(set(np.linspace(0, T - 1, min(T, max_panels)).round().astype(int).tolist()))
    bad = [t for t in frames if not 0 <= t < T]
    if bad or not frames:
        raise ValueError(f"frames must be a non-empty list of frames in [0, {T}), got {frames}")
    g = occ.grid
    lo, hi = g.origin, g.origin + np.array(g.shape) * g.voxel_size
    extent = (lo[0], hi[0], lo[2], hi[2])
    cams = occ.camera_centers()
    cmap = ListedColormap(["#c8c8c8", "#ffffff", "#202020"])  # unobserved, free, occupied
    cols = min(4, len(frames))
    rows = -(-len(frames) // cols)
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows * (hi[2] - lo[2]) / max(hi[0] - lo[0], 1e-9) + 0.6))
    FigureCanvasAgg(fig)
    for i, t in enumerate(frames):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(
            bev_states(occ, t, y_range).T,
            origin="lower",
            extent=extent,
            cmap=cmap,
            vmin=0,
            vmax=2,
            interpolation="nearest",
        )
        ax.plot(cams[: t + 1, 0], cams[: t + 1, 2], color="tab:blue", lw=1)
        ax.plot(cams[t, 0], cams[t, 2], "o", color="tab:red", ms=4)
        ax.set_title(f"t = {t}", fontsize=9)
        ax.set_xlabel("x", fontsize=8)
        ax.set_ylabel("z (forward)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("occupancy, top view: black occupied, white free, grey unobserved", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    return Path(path)
