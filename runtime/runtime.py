"""The runtime: engines in, numpy out. Encode a clip once, then answer any number of queries in batches.

    >>> from d4rt.runtime import load
    >>> rt = load("engines/")                       # tensorrt > onnxruntime-cuda > onnxruntime-cpu
    >>> scene = rt.encode(frames)                   # [T, H, W, 3] uint8 (any size) or a video path
    >>> res = rt.query(scene, uv, t_src, t_tgt, t_cam)
    >>> depth, K, T_wc = rt.depth(scene, 0), rt.intrinsics(scene), rt.camera_poses(scene)

A :class:`Scene` holds everything about one clip (its device-resident keys and values included); the runtime holds
no per-clip state, so several scenes can live at once.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from d4rt.runtime.geometry import focal_from_points, grid_uv, poses_from_grid_points
from d4rt.runtime.manifest import (
    DECODER_OUTPUTS,
    ENGINE_FILES,
    MANIFEST_NAME,
    Manifest,
    read_manifest,
)
from d4rt.runtime.video import Clip, prepare_clip, read_video

BACKENDS = (
    "auto", "tensorrt", "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt", "torch",
)
OUTPUT_TAILS = {"xyz": (3,), "uv_tgt": (2,), "visibility": (), "displacement": (3,), "normal": (3,), "confidence": ()}
DEFAULT_BATCH = 8192


@dataclass
class Scene:
    """One encoded clip.

    frames: [T, S, S, 3] uint8, the resized frames; video: [1, T, 3, S, S] float32, what the encoder saw;
    aspect_ratio: original W / H; original_size: (H, W); state: the backend's device-resident video / keys /
    values (opaque).
    """

    frames: np.ndarray
    video: np.ndarray
    aspect_ratio: float
    original_size: tuple[int, int]
    state: Any = field(repr=False)
    backend: str = ""
    _owner: int = field(default=0, repr=False)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.frames.shape[1])


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow: 0.5 (1 + tanh(x / 2))."""
    return (0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float32)))).astype(np.float32)


class Runtime:
    """A backend (TensorRT, ONNX Runtime or torch) plus the numpy around it. Build it with :func:`load`.

    A backend provides ``name``, ``max_queries`` (None or the engine profile's largest batch), optionally
    ``min_queries``, ``encode(video [1, T, 3, S, S] float32, aspect_ratio [1] float32) -> state`` and
    ``decode(state, uv [1, n, 2] float32, t [1, n, 3] int32) -> {name: [1, n, ...]}`` with the six raw outputs.
    Those arrays may be the backend's own staging buffers, valid only until its next ``decode`` call (TensorRT
    hands out its pinned host buffers): copy them before decoding again.
    """

    def __init__(self, backend, num_frames: int, image_size: int, manifest: Manifest | None = None):
        self.backend = backend
        self.num_frames, self.image_size = int(num_frames), int(image_size)
        self.manifest = manifest

    @property
    def name(self) -> str:
        return self.backend.name

    def __repr__(self) -> str:
        return f"Runtime(backend={self.name!r}, frames={self.num_frames}, image_size={self.image_size})"

    # ----- encode -----------------------------------------------------------------------------------------------
    def encode(
        self,
        video: np.ndarray | str | Path,
        start: int = 0,
        stride: int = 1,
        max_frames: int | None = None,
        aspect_ratio: float | None = None,
    ) -> Scene:
        """Encode a clip: [T, H, W, 3] uint8 RGB (or float in [0, 1]) of any size, or a video file.

        Frames ``start``, ``start + stride``, ... are used, at most ``max_frames`` of them; they must be exactly the
        exported T frames. Longer clips are refused, not silently cut (README). ``aspect_ratio`` (width / height of
        the original video) replaces the frames' own W / H, for frames that were already resized.
        """
        T = self.num_frames
        if isinstance(video, (str, Path)):
            limit = T + 1 if max_frames is None else max_frames
            frames = read_video(video, max_frames=limit, start=start, stride=stride)
            if max_frames is None and len(frames) > T:
                raise ValueError(
                    f"{video} gives more than the {T} frames these engines encode per clip (start={start}, "
                    f"stride={stride}); pick a {T}-frame window with start / stride (`d4rt infer --start --stride`) "
                    f"and max_frames={T} (`--max-frames {T}`)"
                )
        elif isinstance(video, np.ndarray) and video.ndim == 4:
            if start < 0 or stride < 1:
                raise ValueError(f"start must be >= 0 and stride >= 1, got start={start}, stride={stride}")
            frames = video[start::stride][:max_frames]
        else:
            frames = video
        clip: Clip = prepare_clip(frames, self.image_size, T)
        if aspect_ratio is not None:
            if not np.isfinite(aspect_ratio) or aspect_ratio <= 0:
                raise ValueError(f"aspect_ratio must be a positive width / height, got {aspect_ratio!r}")
            clip.aspect_ratio = float(aspect_ratio)
        state = self.backend.encode(clip.video, np.array([clip.aspect_ratio], np.float32))
        return Scene(clip.frames, clip.video, clip.aspect_ratio, clip.original_size, state, self.name, id(self))

    # ----- query ------------------------------------------------------------------------------------------------
    def query(
        self,
        scene: Scene,
        uv: np.ndarray,
        t_src: np.ndarray | int,
        t_tgt: np.ndarray | int,
        t_cam: np.ndarray | int,
        batch_size: int = DEFAULT_BATCH,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """Answer N queries in batches of ``batch_size`` (the last one ragged); the same result as one batch.

        Args:
            uv: [N, 2] float in [0, 1], u = x / (S - 1), v = y / (S - 1) on the S x S input.
            t_src, t_tgt, t_cam: [N] (or scalars) integer frame indices in [0, T).
        Returns:
            xyz [N, 3] (the point in t_cam's camera at time t_tgt), uv_tgt [N, 2], visibility [N] (probability),
            displacement [N, 3], normal [N, 3], confidence [N] (probability); float32.
        """
        self._check_scene(scene)
        uv = _check_uv(uv)
        N = len(uv)
        times = (("t_src", t_src), ("t_tgt", t_tgt), ("t_cam", t_cam))
        t = np.stack([_check_times(name, x, N, self.num_frames) for name, x in times], -1)  # [N, 3] int32
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        step = int(min(batch_size, self.backend.max_queries or batch_size))
        min_queries = int(getattr(self.backend, "min_queries", 1) or 1)
        out = {name: np.empty((N, *tail), np.float32) for name, tail in OUTPUT_TAILS.items()}
        starts = range(0, N, step)
        if progress and len(starts) > 1:
            from tqdm import tqdm

            starts = tqdm(starts, desc=f"queries ({self.name})", unit="batch", leave=False)
        for s in starts:
            e = min(s + step, N)
            uv_b, t_b = uv[s:e], t[s:e]
            if e - s < min_queries:  # below the engine profile's minimum: pad with the first query, drop after
                pad = min_queries - (e - s)
                uv_b = np.concatenate([uv_b, np.repeat(uv_b[:1], pad, 0)])
                t_b = np.concatenate([t_b, np.repeat(t_b[:1], pad, 0)])
            raw = self.backend.decode(scene.state, np.ascontiguousarray(uv_b[None]), np.ascontiguousarray(t_b[None]))
            for name in DECODER_OUTPUTS:
                out[name][s:e] = raw[name][0, : e - s]
        out["visibility"] = sigmoid(out["visibility"])
        out["confidence"] = sigmoid(out["confidence"])
        return out

    def _check_scene(self, scene: Scene) -> None:
        if not isinstance(scene, Scene):
            raise ValueError(f"scene must be a Scene from rt.encode(...), got {type(scene).__name__}")
        if scene._owner != id(self):
            raise ValueError(
                f"this scene was encoded by another runtime ({scene.backend}); encode the clip with this runtime "
                f"({self.name}): its keys and values live on that runtime's device"
            )

    # ----- geometry made of queries -----------------------------------------------------------------------------
    def _frames(self, t: int | list[int] | np.ndarray | None) -> np.ndarray:
        frames = np.arange(self.num_frames) if t is None else np.atleast_1d(np.asarray(t))
        _check_times("t", frames, len(frames), self.num_frames)
        return frames.astype(np.int64)

    def depth(
        self,
        scene: Scene,
        t: int | list[int] | None = None,
        size: int | None = None,
        with_confidence: bool = False,
        batch_size: int = DEFAULT_BATCH,
        progress: bool = False,
    ):
        """Depth maps (z in the frame's own camera), one query per pixel of a size x size grid (default S).

        Returns [size, size] for an integer t, else [F, size, size] for the frames t (all when None); with
        ``with_confidence`` a (depth, confidence) pair of the same shapes.
        """
        frames = self._frames(t)
        size = int(size or self.image_size)
        uv = grid_uv(size)
        G = len(uv)
        tt = np.repeat(frames, G)
        res = self.query(scene, np.tile(uv, (len(frames), 1)), tt, tt, tt, batch_size, progress)
        depth = res["xyz"][:, 2].reshape(len(frames), size, size)
        conf = res["confidence"].reshape(len(frames), size, size)
        if np.isscalar(t) or (isinstance(t, np.ndarray) and t.ndim == 0):
            depth, conf = depth[0], conf[0]
        return (depth, conf) if with_confidence else depth

    def point_cloud(
        self,
        scene: Scene,
        t_cam: int = 0,
        size: int | None = None,
        frames: list[int] | None = None,
        min_confidence: float = 0.0,
        batch_size: int = DEFAULT_BATCH,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """The clip's points, each frame's size x size grid at its own time, all in t_cam's camera.

        Returns xyz [P, 3] (t_cam camera frame), rgb [P, 3] uint8, confidence [P], frame [P] (its t_src), keeping
        points with confidence >= min_confidence.
        """
        frames = self._frames(frames)
        size = int(size or max(self.image_size // 2, 2))
        uv = grid_uv(size)
        G = len(uv)
        tt = np.repeat(frames, G)
        uv_all = np.tile(uv, (len(frames), 1))
        res = self.query(scene, uv_all, tt, tt, np.full_like(tt, _scalar_time("t_cam", t_cam, self.num_frames)),
                         batch_size, progress)
        S = scene.image_size
        x = np.rint(uv_all[:, 0] * (S - 1)).astype(np.int64)
        y = np.rint(uv_all[:, 1] * (S - 1)).astype(np.int64)
        rgb = scene.frames[tt, y, x]
        keep = res["confidence"] >= min_confidence
        return {"xyz": res["xyz"][keep], "rgb": rgb[keep], "confidence": res["confidence"][keep], "frame": tt[keep]}

    def tracks(
        self,
        scene: Scene,
        uv: np.ndarray,
        t_src: int | np.ndarray,
        t_cam: int | None = 0,
        batch_size: int = DEFAULT_BATCH,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """3D tracks: where the points at uv in frame t_src are at every time t_tgt = 0 .. T-1.

        Args:
            uv: [P, 2]; t_src: an int or [P]; t_cam: the camera frame of xyz (default 0, the world of
                :meth:`camera_poses`), or None for each time's own camera (t_cam = t_tgt).
        Returns:
            xyz [P, T, 3], uv_tgt [P, T, 2], visibility [P, T], confidence [P, T].
        """
        uv = _check_uv(uv)
        P, T = len(uv), self.num_frames
        t_src = np.broadcast_to(_check_times("t_src", t_src, P, T), (P,))
        t_tgt = np.tile(np.arange(T), P)
        cam = t_tgt if t_cam is None else np.full(P * T, _scalar_time("t_cam", t_cam, T))
        res = self.query(scene, np.repeat(uv, T, 0), np.repeat(t_src, T), t_tgt, cam, batch_size, progress)
        return {k: res[k].reshape(P, T, *OUTPUT_TAILS[k]) for k in ("xyz", "uv_tgt", "visibility", "confidence")}

    def camera_poses(
        self, scene: Scene, grid: int = 32, batch_size: int = DEFAULT_BATCH, progress: bool = False
    ) -> np.ndarray:
        """Camera-to-world poses T_wc [T, 4, 4], frame 0's camera being the world.

        For frame j, a grid x grid of pixels at time j is queried in camera 0 and in camera j; the rigid Umeyama
        fit (unweighted, as OpenD4RT's released code) from the camera-j points to the camera-0 points is T_wc of
        frame j (docs/metrics.md: why unweighted).
        """
        T = self.num_frames
        uv = grid_uv(grid)
        G = len(uv)
        frames = np.arange(1, T)
        tt = np.repeat(frames, G)
        cams = np.concatenate([np.zeros_like(tt), tt])
        res = self.query(scene, np.tile(uv, (2 * len(frames), 1)), np.tile(tt, 2), np.tile(tt, 2), cams,
                         batch_size, progress)
        xyz = res["xyz"].reshape(2, len(frames), G, 3)
        return poses_from_grid_points(xyz[1], xyz[0])

    def intrinsics(
        self, scene: Scene, grid: int = 32, batch_size: int = DEFAULT_BATCH, progress: bool = False
    ) -> np.ndarray:
        """Pinhole intrinsics K [T, 3, 3] in pixels of the S x S input, per frame.

        fx = z (u - 0.5) / x over a grid x grid of pixels in the frame's own camera, the median (fy likewise).
        """
        T = self.num_frames
        uv = grid_uv(grid)
        tt = np.repeat(np.arange(T), len(uv))
        res = self.query(scene, np.tile(uv, (T, 1)), tt, tt, tt, batch_size, progress)
        xyz = res["xyz"].reshape(T, len(uv), 3)
        return np.stack([focal_from_points(uv, xyz[j], self.image_size) for j in range(T)])


# ----- input checks ----------------------------------------------------------------------------------------------
def _check_uv(uv) -> np.ndarray:
    uv = np.asarray(uv)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise ValueError(f"uv must be [N, 2] (u = x / (S - 1), v = y / (S - 1)), got shape {uv.shape}")
    if not np.issubdtype(uv.dtype, np.floating):
        raise ValueError(f"uv must be floating point in [0, 1], got dtype {uv.dtype} (divide pixels by S - 1)")
    if len(uv) and not np.isfinite(uv).all():
        raise ValueError(f"uv contains {int((~np.isfinite(uv)).sum())} NaN or infinite values")
    if len(uv) and (uv.min() < 0.0 or uv.max() > 1.0):
        raise ValueError(f"uv has values in [{uv.min():.4g}, {uv.max():.4g}], expected [0, 1] (u = x / (S - 1))")
    return np.ascontiguousarray(uv, np.float32)


def _check_times(name: str, t, n: int, num_frames: int) -> np.ndarray:
    t = np.asarray(t)
    if t.dtype == bool or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"{name} must be integer frame indices, got dtype {t.dtype}")
    if t.ndim > 1 or (t.ndim == 1 and len(t) != n):
        raise ValueError(f"{name} must be a scalar or [N] = [{n}], got shape {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= num_frames):
        raise ValueError(
            f"{name} has frame indices in [{t.min()}, {t.max()}], expected [0, {num_frames}) for this clip"
        )
    return np.broadcast_to(t, (n,)).astype(np.int32)


def _scalar_time(name: str, t, num_frames: int) -> int:
    if not isinstance(t, (int, np.integer)) or isinstance(t, bool):
        raise ValueError(f"{name} must be an integer frame index, got {t!r}")
    _check_times(name, t, 1, num_frames)
    return int(t)


# ----- load ------------------------------------------------------------------------------------------------------
def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def load(
    directory: str | Path,
    backend: str = "auto",
    *,
    verify_checksums: bool = True,
    cuda_graphs: bool = False,
    device_id: int = 0,
    threads: int | None = None,
    attention: str = "sdpa",
    dtype: str = "float32",
) -> Runtime:
    """Open an engine directory (``d4rt export`` / ``d4rt build-engine``) on a backend.

    Args:
        backend: "auto" (tensorrt > onnxruntime-cuda > onnxruntime-cpu, the first that is installed and has its
            files), or one of "tensorrt", "onnxruntime" (CUDA when present, else CPU), "onnxruntime-cpu",
            "onnxruntime-cuda", "onnxruntime-tensorrt", "torch" (the PyTorch model, sdpa attention unless
            ``attention`` says otherwise; ``directory`` may also be a save_pretrained checkpoint).
        verify_checksums: check every graph / engine file against the manifest's sha256 first.
        cuda_graphs: TensorRT backend: capture one CUDA graph per batch size.
        threads: ONNX Runtime intra-op threads (default: its own choice).
        attention, dtype: torch backend: attention backend and weight dtype.
    """
    directory = Path(directory)
    if directory.name == MANIFEST_NAME and directory.is_file():
        directory = directory.parent  # the manifest's path names its engine directory
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} does not exist; export engines with `d4rt export CKPT_DIR --out DIR`")

    if backend == "torch":
        from d4rt.runtime.backend_torch import TorchBackend

        manifest = read_manifest(directory) if (directory / MANIFEST_NAME).is_file() else None
        impl = TorchBackend.open(directory, manifest, attention=attention, dtype=dtype)
        cfg = impl.model.config
        frames = manifest.num_frames if manifest else cfg.num_frames
        return Runtime(impl, frames, cfg.image_size, manifest)

    manifest = read_manifest(directory)

    def make(name: str):
        if name == "tensorrt":
            from d4rt.runtime.backend_tensorrt import TensorRTBackend

            return TensorRTBackend(directory, manifest, cuda_graphs, device_id, verify_checksums)
        from d4rt.runtime.backend_onnxruntime import OnnxRuntimeBackend, available_providers

        provider = name.removeprefix("onnxruntime").lstrip("-")
        if not provider:
            provider = "cuda" if "CUDAExecutionProvider" in available_providers() else "cpu"
        return OnnxRuntimeBackend(directory, manifest, provider, threads, verify_checksums, device_id)

    if backend != "auto":
        return Runtime(make(backend), manifest.num_frames, manifest.image_size, manifest)

    candidates = []
    engines_here = manifest.engines and all((directory / ENGINE_FILES[g]).is_file() for g in ENGINE_FILES)
    if engines_here and _has_module("tensorrt"):
        candidates.append("tensorrt")
    if _has_module("onnxruntime"):
        from d4rt.runtime.backend_onnxruntime import available_providers

        if "CUDAExecutionProvider" in available_providers():
            candidates.append("onnxruntime-cuda")
        candidates.append("onnxruntime-cpu")
    if not candidates:
        raise ImportError(
            "no engine library found: install `onnxruntime` (CPU), `onnxruntime-gpu`, or TensorRT "
            "(`pip install d4rt[tensorrt]`) to run engines, or use backend='torch'"
        )
    failures = []
    for name in candidates:
        try:
            impl = make(name)
        except (ImportError, ValueError, FileNotFoundError, RuntimeError) as e:
            failures.append(f"{name}: {e}")
            if name == candidates[-1]:
                raise
            warnings.warn(f"backend {name} is not usable here, trying the next one: {e}", stacklevel=2)
            continue
        return Runtime(impl, manifest.num_frames, manifest.image_size, manifest)
    raise RuntimeError("no backend could be loaded:\n  " + "\n  ".join(failures))  # pragma: no cover
