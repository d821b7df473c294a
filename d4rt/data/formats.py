"""Readers for public 3-D tracking data, into one :class:`TrackSet`. Numpy + OpenCV (no torch).

PointOdyssey (a sequence folder)::

    rgbs/rgb_00000.jpg ...        RGB frames
    depths/depth_00000.png ...    uint16 depth, metres = v / 65535 * 1000 (0: no depth)
    anno.npz                      trajs_2d [T, N, 2] pixels, trajs_3d [T, N, 3] world, visibs [T, N],
                                  valids [T, N], intrinsics [T, 3, 3], extrinsics [T, 4, 4] world-to-camera

    Real files hold NaN / inf in trajs_2d (and trajs_3d) where a point has no projection; those entries are
    marked invalid (pips2 ``datasets/pointodysseydataset_fullseq.py`` does the same) and a track left with no
    valid visible frame is dropped; the counts are in ``TrackSet.dropped``. Some scenes store trajs_3d as a 0-d
    NaN placeholder: they are read without 3-D tracks (``tracks_cam`` None; depth and poses still score).

TAPVid-3D (one ``.npz`` per clip; NaN points are kept, see :func:`read_tapvid3d`)::

    images_jpeg_bytes [T]         JPEG bytes per frame (fixed-width bytes, or an object array)
    queries_xyt [N, 3]            query pixel x, y and frame t
    tracks_XYZ [T, N, 3]          each point in frame t's camera
    visibility [T, N] bool
    fx_fy_cx_cy [4]               intrinsics in pixels
    extrinsics_w2c [T, 4, 4]      optional: world-to-camera poses (read as T_wc for the pose metrics)

Both readers read only the frames asked for (``start``, ``max_frames``): frames, depth maps and annotations of
other frames are never decoded.

Object arrays in npz files are pickles; they are read with an unpickler that accepts only numpy arrays of bytes,
never arbitrary objects.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from d4rt.runtime.geometry import invert_rigid

POINTODYSSEY_DEPTH_SCALE = 1000.0 / 65535.0  # metres per uint16 step


@dataclass
class TrackSet:
    """A video with 3-D point tracks.

    rgb [T, H, W, 3] uint8; K [T, 3, 3] (pixels of the frames); T_wc [T, 4, 4] camera-to-world or None;
    depth [T, H, W] metres (0 where unknown) or None; tracks_cam [T, N, 3] each point in frame t's camera, or
    None when the file has no 3-D tracks; tracks_2d [T, N, 2] pixels; visible [T, N] bool; valid [T, N] bool (the
    annotation exists and is finite); queries_xyt [N, 3] (x, y, t), t counted from ``start``: where each track is
    queried. ``start``: index in the file of frame 0; ``frames_in_file``; ``dropped``: tracks left out and why
    (counts), e.g. {"non_finite_entries": 96, "tracks_never_visible": 3}; ``pixel_centre``: the coordinate of
    the first pixel's centre in tracks_2d / queries_xyt (0.0: centres at integers; TAPVid-3D 0.5: its generators
    put the principal point at W / 2 and read pixel (row, col) at round(y - 0.5), round(x - 0.5));
    ``non_finite``: TAPVid-3D points kept as NaN (scored as the official code scores them), counted by the file's
    visibility, e.g. {"visible": 4, "occluded": 9}.
    """

    rgb: np.ndarray
    K: np.ndarray
    T_wc: np.ndarray | None
    depth: np.ndarray | None
    tracks_cam: np.ndarray
    tracks_2d: np.ndarray
    visible: np.ndarray
    valid: np.ndarray
    queries_xyt: np.ndarray
    start: int = 0
    frames_in_file: int = 0
    dropped: dict = field(default_factory=dict)
    pixel_centre: float = 0.0
    non_finite: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return self.rgb.shape[0]


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _read_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path} is not a readable image")
    return img[..., ::-1].copy()


def project(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels [..., 2] of camera-frame points [..., 3] with intrinsics K [..., 3, 3] (broadcast)."""
    z = points_cam[..., 2:3]
    safe = np.where(np.abs(z) > 1e-12, z, np.nan)
    fx, fy, cx, cy = K[..., 0, 0, None], K[..., 1, 1, None], K[..., 0, 2, None], K[..., 1, 2, None]
    return np.concatenate([fx * points_cam[..., :1] / safe + cx, fy * points_cam[..., 1:2] / safe + cy], -1)


def first_visible_queries(tracks_2d: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Query each track at its first visible frame: tracks_2d [T, N, 2], visible [T, N] -> [N, 3] (x, y, t)."""
    t = np.argmax(visible, 0)
    xy = tracks_2d[t, np.arange(tracks_2d.shape[1])]
    return np.concatenate([xy, t[:, None]], -1).astype(np.float64)


# ----------------------------------------------------------------------------------------------------------------
# PointOdyssey
# ----------------------------------------------------------------------------------------------------------------
def _frame_window(path: Path, total: int, start: int, max_frames: int | None) -> range:
    """Frames start .. start + max_frames - 1 of a file of ``total`` frames (all from start when None)."""
    if not 0 <= start < total:
        raise ValueError(f"{path}: start={start} is outside its {total} frames; pass 0 <= start < {total}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    stop = total if max_frames is None else min(total, start + max_frames)
    return range(start, stop)


def _array(path: Path, arrays: dict, key: str, shape: tuple) -> np.ndarray:
    """arrays[key] checked against shape (None: any size), else a ValueError naming the file and the key."""
    a = arrays[key]
    if a.ndim != len(shape) or any(w is not None and w != n for w, n in zip(shape, a.shape)):
        want = "[" + ", ".join("?" if w is None else str(w) for w in shape) + "]"
        raise ValueError(f"{path}: {key} has shape {list(a.shape)}, expected {want}; is the file complete?")
    return a


def _drop_bad_tracks(finite: np.ndarray, visible: np.ndarray, valid: np.ndarray):
    """Entries with non-finite values become invalid and invisible; tracks with no valid visible frame go.
    finite, visible, valid [T, N] bool -> keep [N], visible, valid [T, n], counts."""
    valid = valid & finite
    visible = visible & valid
    keep = visible.any(0)
    counts = {"non_finite_entries": int((~finite).sum()), "tracks_never_visible": int((~keep).sum())}
    return keep, visible[:, keep], valid[:, keep], counts


def read_pointodyssey(sequence_dir: str | Path, start: int = 0, max_frames: int | None = None) -> TrackSet:
    """Read frames start .. start + max_frames - 1 of a PointOdyssey sequence folder (see the module doc).

    Tracks are queried at their first valid visible frame within the window; tracks with none are dropped.
    """
    root = Path(sequence_dir)
    anno_path = _require(root / "anno.npz", "PointOdyssey annotation anno.npz")
    keys = ("trajs_2d", "trajs_3d", "visibs", "valids", "intrinsics", "extrinsics")
    with np.load(anno_path, allow_pickle=False) as z:
        missing = [k for k in keys if k not in z]
        if missing:
            raise ValueError(f"{anno_path} lacks {missing}; is this a PointOdyssey sequence folder?")
        anno = {k: z[k] for k in keys}
    total = _array(anno_path, anno, "trajs_2d", (None, None, 2)).shape[0]
    N = anno["trajs_2d"].shape[1]
    frames = _frame_window(anno_path, total, start, max_frames)
    sl = slice(frames.start, frames.stop)
    visible = _array(anno_path, anno, "visibs", (total, N))[sl].astype(bool)
    valid = _array(anno_path, anno, "valids", (total, N))[sl].astype(bool)
    K = _array(anno_path, anno, "intrinsics", (total, 3, 3))[sl].astype(np.float64)
    T_cw = _array(anno_path, anno, "extrinsics", (total, 4, 4))[sl].astype(np.float64)  # world-to-camera
    tracks_2d = anno["trajs_2d"][sl].astype(np.float64)
    finite = np.isfinite(tracks_2d).all(-1)
    world = None
    if anno["trajs_3d"].ndim == 0:  # a 0-d NaN placeholder: this scene has no 3-D tracks
        if np.isfinite(anno["trajs_3d"]):
            raise ValueError(f"{anno_path}: trajs_3d is a 0-d value {anno['trajs_3d']}, expected [T, N, 3]")
    else:
        world = _array(anno_path, anno, "trajs_3d", (total, N, 3))[sl].astype(np.float64)
        finite &= np.isfinite(world).all(-1)
    keep, visible, valid, dropped = _drop_bad_tracks(finite, visible, valid)
    if not np.isfinite(T_cw).all() or not np.isfinite(K).all():
        raise ValueError(f"{anno_path}: extrinsics or intrinsics hold NaN or inf in frames {frames.start}.."
                         f"{frames.stop - 1}")

    rgb_paths = [_require(root / "rgbs" / f"rgb_{t:05d}.jpg", "PointOdyssey frame") for t in frames]
    depth_paths = [_require(root / "depths" / f"depth_{t:05d}.png", "PointOdyssey depth") for t in frames]
    rgb = np.stack([_read_image(p) for p in rgb_paths])
    depth = []
    for p in depth_paths:
        raw = cv2.imread(str(p), cv2.IMREAD_ANYDEPTH)
        if raw is None or raw.dtype != np.uint16:
            raise ValueError(f"{p} must be a uint16 PNG (metres = v / 65535 * 1000)")
        depth.append(raw.astype(np.float32) * POINTODYSSEY_DEPTH_SCALE)
    depth = np.stack(depth)

    tracks_cam = None
    if world is not None:
        world = np.where(valid[..., None], world[:, keep], 0.0)
        tracks_cam = np.einsum("tij,tnj->tni", T_cw[:, :3, :3], world) + T_cw[:, None, :3, 3]
    tracks_2d = np.where(valid[..., None], tracks_2d[:, keep], 0.0)
    return TrackSet(
        rgb=rgb, K=K, T_wc=invert_rigid(T_cw), depth=depth, tracks_cam=tracks_cam, tracks_2d=tracks_2d,
        visible=visible, valid=valid, queries_xyt=first_visible_queries(tracks_2d, visible),
        start=frames.start, frames_in_file=total, dropped=dropped,
    )


# ----------------------------------------------------------------------------------------------------------------
# TAPVid-3D
# ----------------------------------------------------------------------------------------------------------------
class _BytesArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy object arrays of bytes and nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays of bytes")
        return super().find_class(module, name)


def _read_bytes_array(npz_path: Path, key: str) -> list[bytes]:
    """An array of byte strings from an npz member, fixed-width ('S') or object (restricted unpickling)."""
    with zipfile.ZipFile(npz_path) as zf:
        name = f"{key}.npy"
        if name not in zf.namelist():
            raise ValueError(f"{npz_path} has no {key}")
        with zf.open(name) as f:
            buf = io.BytesIO(f.read())
    version = np.lib.format.read_magic(buf)
    header_readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in header_readers:
        raise ValueError(f"{npz_path}:{key} uses .npy format {version}, expected 1.0 or 2.0")
    _, _, dtype = header_readers[version](buf)
    if dtype.kind == "S":
        buf.seek(0)
        return [bytes(x) for x in np.lib.format.read_array(buf, allow_pickle=False).reshape(-1)]
    if dtype.kind == "O":
        array = _BytesArrayUnpickler(buf).load()
        items = list(np.asarray(array, dtype=object).reshape(-1))
        if not all(isinstance(x, (bytes, np.bytes_)) for x in items):
            raise ValueError(f"{npz_path}:{key} must hold JPEG bytes, found {type(items[0]).__name__}")
        return [bytes(x) for x in items]
    raise ValueError(f"{npz_path}:{key} must be an array of JPEG bytes, got dtype {dtype}")


def read_tapvid3d(npz_path: str | Path, start: int = 0, max_frames: int | None = None) -> TrackSet:
    """Read frames start .. start + max_frames - 1 of one TAPVid-3D clip (see the module doc).

    All tracks are kept (the benchmark scores every track); ``queries_xyt`` t is counted from ``start``, so a
    query before the window is negative: the evaluation scores only tracks queried inside the window. Points are
    kept as the file has them, NaN included, with the file's visibility (tapnet's ``evaluate_model.py`` reads them
    so: a NaN point is never within a threshold, so a visible one is a miss); ``non_finite`` counts them.
    """
    path = _require(Path(npz_path), "TAPVid-3D clip")
    keys = ("queries_xyt", "tracks_XYZ", "visibility", "fx_fy_cx_cy")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in (*keys, "images_jpeg_bytes") if k not in z.files]
            if missing:
                raise ValueError(f"{path} lacks {missing}; is this a TAPVid-3D clip?")
            data = {k: z[k] for k in keys}
            if "extrinsics_w2c" in z.files:
                data["extrinsics_w2c"] = z["extrinsics_w2c"]
    except (OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable npz ({e})") from e
    jpegs = _read_bytes_array(path, "images_jpeg_bytes")
    total = len(jpegs)
    tracks = _array(path, data, "tracks_XYZ", (total, None, 3))
    N = tracks.shape[1]
    _array(path, data, "visibility", (total, N))
    _array(path, data, "queries_xyt", (N, 3))
    _array(path, data, "fx_fy_cx_cy", (4,))
    frames = _frame_window(path, total, start, max_frames)
    sl = slice(frames.start, frames.stop)
    rgb = []
    for t in frames:
        img = cv2.imdecode(np.frombuffer(jpegs[t], np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{path}: images_jpeg_bytes[{t}] is not a decodable JPEG")
        rgb.append(img[..., ::-1])
    T = len(frames)
    tracks = tracks[sl].astype(np.float64)
    fx, fy, cx, cy = data["fx_fy_cx_cy"].astype(np.float64)
    K = np.tile(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]), (T, 1, 1))
    T_wc = None
    if "extrinsics_w2c" in data:
        w2c = data["extrinsics_w2c"]
        if w2c.shape == (4, 4):
            w2c = np.broadcast_to(w2c, (total, 4, 4))
        T_wc = invert_rigid(_array(path, {"extrinsics_w2c": w2c}, "extrinsics_w2c", (total, 4, 4))[sl])
        if not np.isfinite(T_wc).all():
            raise ValueError(f"{path}: extrinsics_w2c holds NaN or inf in frames {frames.start}..{frames.stop - 1}")
    finite = np.isfinite(tracks).all(-1)
    visible = data["visibility"][sl].astype(bool)
    queries = data["queries_xyt"].astype(np.float64).copy()
    queries[:, 2] -= frames.start
    return TrackSet(
        rgb=np.stack(rgb), K=K, T_wc=T_wc, depth=None, tracks_cam=tracks, tracks_2d=project(tracks, K[:, None]),
        visible=visible, valid=np.ones_like(visible), queries_xyt=queries, start=frames.start,
        frames_in_file=total, pixel_centre=0.5,
        non_finite={"visible": int((~finite & visible).sum()), "occluded": int((~finite & ~visible).sum())},
    )
