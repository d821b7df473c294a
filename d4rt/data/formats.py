"""Readers for public 3-D tracking data, into one :class:`TrackSet`. Numpy + OpenCV (no torch).

PointOdyssey (a sequence folder)::

    rgbs/rgb_00000.jpg ...        RGB frames
    depths/depth_00000.png ...    uint16 depth, metres = v / 65535 * 1000 (0: no depth)
    anno.npz                      trajs_2d [T, N, 2] pixels, trajs_3d [T, N, 3] world, visibs [T, N],
                                  valids [T, N], intrinsics [T, 3, 3], extrinsics [T, 4, 4] world-to-camera

TAPVid-3D (one ``.npz`` per clip)::

    images_jpeg_bytes [T]         JPEG bytes per frame (fixed-width bytes, or an object array)
    queries_xyt [N, 3]            query pixel x, y and frame t
    tracks_XYZ [T, N, 3]          each point in frame t's camera
    visibility [T, N] bool
    fx_fy_cx_cy [4]               intrinsics in pixels

Object arrays in npz files are pickles; they are read with an unpickler that accepts only numpy arrays of bytes,
never arbitrary objects.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

POINTODYSSEY_DEPTH_SCALE = 1000.0 / 65535.0  # metres per uint16 step


@dataclass
class TrackSet:
    """A video with 3-D point tracks.

    rgb [T, H, W, 3] uint8; K [T, 3, 3] (pixels of the frames); T_wc [T, 4, 4] camera-to-world or None;
    depth [T, H, W] metres (0 where unknown) or None; tracks_cam [T, N, 3] each point in frame t's camera;
    tracks_2d [T, N, 2] pixels; visible [T, N] bool; valid [T, N] bool (the annotation exists);
    queries_xyt [N, 3] (x, y, t): where each track is queried.
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
def read_pointodyssey(sequence_dir: str | Path, max_frames: int | None = None) -> TrackSet:
    """Read a PointOdyssey sequence folder (see the module doc). Tracks with no visible frame are dropped."""
    root = Path(sequence_dir)
    anno_path = _require(root / "anno.npz", "PointOdyssey annotation anno.npz")
    with np.load(anno_path, allow_pickle=False) as z:
        missing = [k for k in ("trajs_2d", "trajs_3d", "visibs", "valids", "intrinsics", "extrinsics") if k not in z]
        if missing:
            raise ValueError(f"{anno_path} lacks {missing}; is this a PointOdyssey sequence folder?")
        anno = {k: z[k] for k in ("trajs_2d", "trajs_3d", "visibs", "valids", "intrinsics", "extrinsics")}
    T = anno["trajs_3d"].shape[0]
    if max_frames is not None:
        T = min(T, max_frames)
    rgb_paths = [_require(root / "rgbs" / f"rgb_{t:05d}.jpg", "PointOdyssey frame") for t in range(T)]
    depth_paths = [_require(root / "depths" / f"depth_{t:05d}.png", "PointOdyssey depth") for t in range(T)]
    rgb = np.stack([_read_image(p) for p in rgb_paths])
    depth = []
    for p in depth_paths:
        raw = cv2.imread(str(p), cv2.IMREAD_ANYDEPTH)
        if raw is None or raw.dtype != np.uint16:
            raise ValueError(f"{p} must be a uint16 PNG (metres = v / 65535 * 1000)")
        depth.append(raw.astype(np.float32) * POINTODYSSEY_DEPTH_SCALE)
    depth = np.stack(depth)

    T_cw = anno["extrinsics"][:T].astype(np.float64)  # world-to-camera
    T_wc = np.linalg.inv(T_cw)
    world = anno["trajs_3d"][:T].astype(np.float64)
    tracks_cam = np.einsum("tij,tnj->tni", T_cw[:, :3, :3], world) + T_cw[:, None, :3, 3]
    visible = anno["visibs"][:T].astype(bool)
    valid = anno["valids"][:T].astype(bool)
    keep = (visible & valid).any(0)
    tracks_2d = anno["trajs_2d"][:T, keep].astype(np.float64)
    visible, valid = visible[:, keep] & valid[:, keep], valid[:, keep]
    return TrackSet(
        rgb=rgb, K=anno["intrinsics"][:T].astype(np.float64), T_wc=T_wc, depth=depth,
        tracks_cam=tracks_cam[:, keep], tracks_2d=tracks_2d, visible=visible, valid=valid,
        queries_xyt=first_visible_queries(tracks_2d, visible),
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


def read_tapvid3d(npz_path: str | Path, max_frames: int | None = None) -> TrackSet:
    """Read one TAPVid-3D clip (see the module doc)."""
    path = _require(Path(npz_path), "TAPVid-3D clip")
    keys = ("queries_xyt", "tracks_XYZ", "visibility", "fx_fy_cx_cy")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in (*keys, "images_jpeg_bytes") if k not in z.files]
            if missing:
                raise ValueError(f"{path} lacks {missing}; is this a TAPVid-3D clip?")
            data = {k: z[k] for k in keys}
    except (OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable npz ({e})") from e
    jpegs = _read_bytes_array(path, "images_jpeg_bytes")
    T = len(jpegs) if max_frames is None else min(len(jpegs), max_frames)
    frames = []
    for t in range(T):
        img = cv2.imdecode(np.frombuffer(jpegs[t], np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{path}: frame {t} is not a decodable JPEG")
        frames.append(img[..., ::-1])
    tracks = data["tracks_XYZ"][:T].astype(np.float64)
    if tracks.ndim != 3 or tracks.shape[2] != 3 or data["visibility"].shape[1:] != tracks.shape[1:2]:
        raise ValueError(f"{path}: tracks_XYZ must be [T, N, 3] and visibility [T, N], got "
                         f"{data['tracks_XYZ'].shape} and {data['visibility'].shape}")
    fx, fy, cx, cy = data["fx_fy_cx_cy"].astype(np.float64)
    K = np.tile(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]), (T, 1, 1))
    visible = data["visibility"][:T].astype(bool)
    return TrackSet(
        rgb=np.stack(frames), K=K, T_wc=None, depth=None, tracks_cam=tracks, tracks_2d=project(tracks, K[:, None]),
        visible=visible, valid=np.ones_like(visible), queries_xyt=data["queries_xyt"].astype(np.float64),
    )
