"""The runtime: an export folder in, numpy out. Encode a clip once, then answer any number of queries in batches.

    >>> from d4rt.runtime import load
    >>> rt = load("exported/")                        # tensorrt > onnxruntime-cuda > onnxruntime-cpu
    >>> scene = rt.encode(frames)                   # [T, H, W, 3] uint8 (any size) or a video path
    >>> res = rt.query(scene, uv, t_src, t_tgt, t_cam)
    >>> depth, K, T_wc = rt.depth(scene, 0), rt.intrinsics(scene), rt.camera_poses(scene)

A :class:`Scene` holds everything about one clip (its device-resident keys and values included); the runtime holds
no per-clip state, so several scenes can live at once.

One scene API: ``depth``, ``point_cloud``, ``tracks``, ``camera_poses`` and ``intrinsics`` answer a :class:`Scene`
(one encoded clip) and a :class:`~d4rt.runtime.windows.VideoScene` (a video of any length, ``rt.encode_video``)
alike; ``t`` is always a frame index (or a list of them) of that scene, and a grid's queries per side are ``size``.
"""

from __future__ import annotations

import importlib.util
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from d4rt.runtime.geometry import focal_from_points, grid_uv, poses_from_grid_points
from d4rt.runtime.inputs import (  # noqa: F401 (check_aspect_ratio, check_grid_size: re-exported, their old home)
    check_aspect_ratio,
    check_batch_size,
    check_frame,
    check_frames,
    check_grid_size,
    check_queries,
    check_times,
    check_uv,
)
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
    "aoti",
)
OUTPUT_TAILS = {"xyz": (3,), "uv_tgt": (2,), "visibility": (), "displacement": (3,), "normal": (3,), "confidence": ()}
DEFAULT_BATCH = 8192


@dataclass(eq=False)
class Scene:
    """One encoded clip: the :class:`~d4rt.runtime.video.Clip` the encoder saw and the backend's device-resident
    state (video, keys, values; opaque). Made by :meth:`Runtime.encode`; usable only with that runtime."""

    clip: Clip
    state: Any = field(repr=False)
    backend: str = ""
    runtime_token: str = field(default="", repr=False)  # the encoding runtime's token (ids are reused, tokens not)

    frames = property(lambda self: self.clip.frames, doc="[T, S, S, 3] uint8, the resized frames")
    video = property(lambda self: self.clip.video, doc="[1, T, 3, S, S] float32, what the encoder saw")
    aspect_ratio = property(lambda self: self.clip.aspect_ratio, doc="original width / height")
    original_size = property(lambda self: self.clip.original_size, doc="(H, W) of the original frames")

    @property
    def num_frames(self) -> int:
        return int(self.clip.frames.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.clip.frames.shape[1])


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow: 0.5 (1 + tanh(x / 2))."""
    return (0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float32)))).astype(np.float32)


def point_maps(
    rt,
    scene,
    frames: int | list[int] | np.ndarray | None = None,
    size: int | None = None,
    t_cam: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """The one query grid of the house: a size x size grid of pixels of each frame t, at its own time t.

    Depth, point clouds, camera poses, intrinsics, occupancy and evaluation are all made of it.

    Args:
        rt: anything with ``query(scene, uv, t_src, t_tgt, t_cam, batch_size, progress)`` (a :class:`Runtime`).
        frames: the frames t (an int, a list, or None for all of the scene's).
        size: queries per side (default: the scene's S, one query per input pixel); at least 2.
        t_cam: the camera of xyz: None for each frame's own camera (t_cam = t), or one frame index for all.
    Returns:
        xyz [F, n, n, 3] float32, confidence [F, n, n] (probability), uv [n * n, 2] (row-major: v outer, u inner),
        frames [F] int64.
    """
    T = scene.num_frames
    frames = check_frames("frames", frames, T)
    n = check_grid_size("size", size, scene.image_size)
    uv = grid_uv(n)
    tt = np.repeat(frames, len(uv))
    cams = tt if t_cam is None else np.full_like(tt, check_frame("t_cam", t_cam, T))
    res = rt.query(scene, np.tile(uv, (len(frames), 1)), tt, tt, cams, batch_size, progress)
    F = len(frames)
    return {"xyz": res["xyz"].reshape(F, n, n, 3), "confidence": res["confidence"].reshape(F, n, n), "uv": uv,
            "frames": frames}


def default_pose_size(image_size: int) -> int:
    """Queries per side of the pose grid: min(32, S / 2), at least 2 (a finer grid than half the input's pixels adds
    near-duplicate points, not information)."""
    return max(2, min(32, int(image_size) // 2))


def renamed(value, old_value, old: str, new: str):
    """An argument's value under its new name, or under its deprecated old name (with a DeprecationWarning)."""
    if old_value is None:
        return value
    warnings.warn(f"{old}= is deprecated and goes in the next release; use {new}=", DeprecationWarning, stacklevel=3)
    if value is not None and value != old_value:
        raise ValueError(f"{new}={value!r} and its old name {old}={old_value!r} disagree; pass {new}= only")
    return old_value


def is_video(scene) -> bool:
    """True for a :class:`~d4rt.runtime.windows.VideoScene` (answered from its windows' outputs)."""
    from d4rt.runtime.windows import VideoScene  # windows builds on this module: imported when first asked

    return isinstance(scene, VideoScene)


class Runtime:
    """A backend (TensorRT, ONNX Runtime or torch) plus the numpy around it. Build it with :func:`load`.

    A backend provides ``name``, ``max_queries`` (None or the engine profile's largest batch), optionally
    ``min_queries``, ``encode(video [1, T, 3, S, S] float32, aspect_ratio [1] float32) -> state`` and
    ``decode(state, uv [1, n, 2] float32, t [1, n, 3] int32) -> {name: [1, n, ...]}`` with the six raw outputs.
    Those arrays may be the backend's own staging buffers, valid only until its next ``decode`` call (TensorRT
    hands out its pinned host buffers): copy them before decoding again.

    A clip may have any multiple of ``frame_step`` frames in ``frame_range`` (the export's dynamic frame axis);
    longer videos run in windows (:meth:`encode_video`).
    """

    def __init__(
        self,
        backend,
        num_frames: int,
        image_size: int,
        manifest: Manifest | None = None,
        min_frames: int | None = None,
        frame_step: int = 2,
    ):
        self.backend = backend
        self.num_frames, self.image_size = int(num_frames), int(image_size)
        self.frame_range = (int(min_frames or num_frames), self.num_frames)
        self.frame_step = int(frame_step)
        self.manifest = manifest
        self.token = uuid.uuid4().hex

    @property
    def name(self) -> str:
        return self.backend.name

    def __repr__(self) -> str:
        return f"Runtime(backend={self.name!r}, frames={list(self.frame_range)}, image_size={self.image_size})"

    # ----- encode -----------------------------------------------------------------------------------------------
    def encode(
        self,
        video: np.ndarray | str | Path,
        start: int = 0,
        stride: int = 1,
        max_frames: int | None = None,
        aspect_ratio: float | None = None,
    ) -> Scene:
        """Encode one clip: [T, H, W, 3] uint8 RGB (or float in [0, 1]) of any size, or a video file.

        Frames ``start``, ``start + stride``, ... are used, at most ``max_frames`` of them; their count must be in
        ``frame_range``. An odd count drops its last frame with a warning (the tubelet spans 2 frames); a longer
        clip is refused, not silently cut: :meth:`encode_video` runs it in aligned windows. ``aspect_ratio``
        (width / height of the original video) replaces the frames' own W / H, for frames already resized.
        """
        aspect_ratio = check_aspect_ratio(aspect_ratio)
        T = self.num_frames
        frames = self._select(video, start, stride, T + 1 if max_frames is None else max_frames)
        if len(frames) > T:
            raise ValueError(
                f"the clip gives more than the {T} frames these engines encode at once (start={start}, "
                f"stride={stride}); run it in aligned windows with rt.encode_video(...) (what `d4rt infer` does), "
                f"or keep {T} frames with max_frames={T} (`--max-frames {T}`)"
            )
        frames = frames[: usable_frame_count(len(frames), self.frame_range, self.frame_step)]
        clip: Clip = prepare_clip(frames, self.image_size)
        if aspect_ratio is not None:
            clip.aspect_ratio = aspect_ratio
        state = self.backend.encode(clip.video, np.array([clip.aspect_ratio], np.float32))
        return Scene(clip, state, self.name, self.token)

    def encode_video(self, video: np.ndarray | str | Path, **options):
        """A video of any length in overlapping, Sim(3)-aligned windows -> a
        :class:`~d4rt.runtime.windows.VideoScene` answering per source frame (options: see
        :func:`d4rt.runtime.windows.encode_video`)."""
        from d4rt.runtime.windows import encode_video

        return encode_video(self, video, **options)

    @staticmethod
    def _select(video, start: int, stride: int, max_frames: int | None) -> np.ndarray:
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
            raise ValueError(f"start must be an integer frame index >= 0, got {start!r}")
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
        if max_frames is not None and (not isinstance(max_frames, (int, np.integer)) or max_frames < 1):
            raise ValueError(f"max_frames must be an integer >= 1 or None, got {max_frames!r}")
        if isinstance(video, (str, Path)):
            return read_video(video, max_frames=max_frames, start=start, stride=stride)
        if isinstance(video, np.ndarray) and video.ndim == 4:
            if start >= len(video):
                raise ValueError(f"start={start} is beyond the clip's {len(video)} frames; pick start < {len(video)}")
            return video[start::stride][:max_frames]
        if isinstance(video, np.ndarray):
            raise ValueError(f"frames must be [T, H, W, 3] RGB, got shape {video.shape}")
        raise ValueError(f"frames must be a numpy array [T, H, W, 3] or a video path, got {type(video).__name__}")

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
            t_src, t_tgt, t_cam: [N] (or scalars) integer frame indices in [0, T) of the scene's T frames.
        Returns:
            xyz [N, 3] (the point in t_cam's camera at time t_tgt), uv_tgt [N, 2], visibility [N] (probability),
            displacement [N, 3], normal [N, 3], confidence [N] (probability); float32.
        """
        self._check_scene(scene)
        uv, t = check_queries(uv, t_src, t_tgt, t_cam, scene.num_frames)  # [N, 2] float32, [N, 3] int32
        N = len(uv)
        batch_size = check_batch_size(batch_size)
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
        if is_video(scene):
            raise ValueError(
                "a VideoScene answers depth, point_cloud, tracks, camera_poses and intrinsics; to query its windows "
                "directly, encode it with keep_memory=True and query video.scenes[w] (window w's own frames)"
            )
        if not isinstance(scene, Scene):
            raise ValueError(f"scene must be a Scene from rt.encode(...), got {type(scene).__name__}")
        if scene.runtime_token != self.token:
            raise ValueError(
                f"this scene was encoded by another runtime ({scene.backend}); encode the clip with this runtime "
                f"({self.name}): its keys and values live on that runtime's device"
            )

    # ----- geometry made of queries -----------------------------------------------------------------------------
    def point_maps(self, scene: Scene, frames=None, size: int | None = None, t_cam: int | None = None,
                   batch_size: int = DEFAULT_BATCH, progress: bool = False) -> dict[str, np.ndarray]:
        """See :func:`point_maps` (the query grid every geometric output is made of)."""
        return point_maps(self, scene, frames, size, t_cam, batch_size, progress)

    def depth(
        self,
        scene,
        t: int | list[int] | None = None,
        size: int | None = None,
        with_confidence: bool = False,
        batch_size: int = DEFAULT_BATCH,
        progress: bool = False,
    ):
        """Depth maps (z in the frame's own camera), one query per pixel of a size x size grid (default S).

        Args:
            scene: a :class:`Scene` or a :class:`~d4rt.runtime.windows.VideoScene` (its maps, computed at
                ``encode_video(depth_size=...)``; ``size`` None or that size).
            t: a frame index of the scene, a list of them, or None for every frame.
        Returns:
            [size, size] for an integer t, else [F, size, size]; with ``with_confidence`` a (depth, confidence)
            pair of the same shapes.
        """
        if is_video(scene):
            from d4rt.runtime.windows import video_depth

            depth, conf = video_depth(scene, t, size)
        else:
            maps = point_maps(self, scene, t, size, None, batch_size, progress)
            depth, conf = maps["xyz"][..., 2], maps["confidence"]
        if np.isscalar(t) or (isinstance(t, np.ndarray) and t.ndim == 0):
            depth, conf = depth[0], conf[0]
        return (depth, conf) if with_confidence else depth

    def point_cloud(
        self,
        scene,
        t_cam: int = 0,
        size: int | None = None,
        frames: list[int] | None = None,
        min_confidence: float = 0.0,
        batch_size: int = DEFAULT_BATCH,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """The clip's points, each frame's size x size grid at its own time, all in t_cam's camera.

        Args:
            scene: a :class:`Scene` (default size S / 2) or a VideoScene (its cloud, computed at
                ``encode_video(cloud_size=...)``, moved into t_cam's camera by the video's poses).
            t_cam: the frame whose camera the points are in (default 0, the world of :meth:`camera_poses`).
            frames: the frames whose grids make the cloud (default all).
        Returns:
            xyz [P, 3] (t_cam camera frame), rgb [P, 3] uint8, confidence [P], frame [P] (its t_src), keeping
            points with confidence >= min_confidence.
        """
        if is_video(scene):
            from d4rt.runtime.windows import video_point_cloud

            return video_point_cloud(scene, t_cam, size, frames, min_confidence)
        size = check_grid_size("size", size, max(scene.image_size // 2, 2))
        maps = point_maps(self, scene, frames, size, t_cam, batch_size, progress)
        return cloud_from_point_maps(maps, scene.frames, min_confidence)

    def tracks(
        self,
        scene,
        uv: np.ndarray,
        t_src: int | np.ndarray,
        t_cam: int | None = 0,
        batch_size: int = DEFAULT_BATCH,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """3D tracks: where the points at uv in frame t_src are at every time t_tgt = 0 .. T-1.

        Args:
            scene: a :class:`Scene`, or a VideoScene (tracks across its windows: the windows kept with
                ``keep_memory=True``, or the tracks ``encode_video(track_uv=...)`` took).
            uv: [P, 2]; t_src: a frame index of the scene or [P] of them; t_cam: the camera frame of xyz (default
                0, the world of :meth:`camera_poses`), or None for each time's own camera (t_cam = t_tgt).
        Returns:
            xyz [P, T, 3], uv_tgt [P, T, 2], visibility [P, T], confidence [P, T].
        """
        if is_video(scene):
            from d4rt.runtime.windows import tracks_of_video

            return tracks_of_video(self, scene, uv, t_src, t_cam, batch_size, progress)
        uv = check_uv(uv)
        P, T = len(uv), scene.num_frames
        t_src = check_times("t_src", t_src, P, T)
        t_tgt = np.tile(np.arange(T), P)
        cam = t_tgt if t_cam is None else np.full(P * T, check_frame("t_cam", t_cam, T))
        res = self.query(scene, np.repeat(uv, T, 0), np.repeat(t_src, T), t_tgt, cam, batch_size, progress)
        return {k: res[k].reshape(P, T, *OUTPUT_TAILS[k]) for k in ("xyz", "uv_tgt", "visibility", "confidence")}

    def camera_poses(
        self, scene, size: int | None = None, batch_size: int = DEFAULT_BATCH, progress: bool = False,
        grid: int | None = None,
    ) -> np.ndarray:
        """Camera-to-world poses T_wc [T, 4, 4], frame 0's camera being the world.

        For frame j, a size x size grid (default min(32, S / 2)) of pixels at time j is queried in camera 0 and in
        camera j; the house's one estimator (:func:`~d4rt.runtime.geometry.align_sim3`, rigid: the 85 % pairs of
        highest confidence, the product of both queries', then refits without residuals above 5x the median)
        from the camera-j points to the camera-0 points is T_wc of frame j. A VideoScene answers the poses it
        took with the same estimator (``size`` None or its ``pose_size``). ``grid=``: the deprecated name of size.
        """
        size = renamed(size, grid, "grid", "size")
        if is_video(scene):
            from d4rt.runtime.windows import video_camera_poses

            return video_camera_poses(scene, size)
        size = check_grid_size("size", size, default_pose_size(scene.image_size))
        later = np.arange(1, scene.num_frames)
        own = point_maps(self, scene, later, size, None, batch_size, progress)
        first = point_maps(self, scene, later, size, 0, batch_size, progress)
        G = size * size
        confidence = own["confidence"].reshape(-1, G).astype(np.float64) * first["confidence"].reshape(-1, G)
        return poses_from_grid_points(own["xyz"].reshape(-1, G, 3), first["xyz"].reshape(-1, G, 3), confidence)

    def intrinsics(
        self, scene, size: int | None = None, batch_size: int = DEFAULT_BATCH, progress: bool = False,
        grid: int | None = None,
    ) -> np.ndarray:
        """Pinhole intrinsics K [T, 3, 3] in pixels of the S x S input, per frame.

        fx = z (u - 0.5) / x over a size x size grid (default min(32, S / 2)) of pixels in the frame's own camera,
        the median (fy likewise). A VideoScene answers the K it took on its pose grid. ``grid=``: the deprecated
        name of size.
        """
        size = renamed(size, grid, "grid", "size")
        if is_video(scene):
            from d4rt.runtime.windows import video_intrinsics

            return video_intrinsics(scene, size)
        size = check_grid_size("size", size, default_pose_size(scene.image_size))
        maps = point_maps(self, scene, None, size, None, batch_size, progress)
        xyz = maps["xyz"].reshape(scene.num_frames, -1, 3)
        return np.stack([focal_from_points(maps["uv"], x, scene.image_size) for x in xyz])


def cloud_from_point_maps(maps: dict[str, np.ndarray], frames_rgb: np.ndarray, min_confidence: float = 0.0):
    """Flatten :func:`point_maps` into a coloured cloud: xyz [P, 3], rgb [P, 3] uint8 (the pixel of each query in
    ``frames_rgb`` [T, S, S, 3]), confidence [P], frame [P]; points below ``min_confidence`` dropped."""
    F, n = maps["xyz"].shape[:2]
    S = frames_rgb.shape[1]
    uv = np.tile(maps["uv"], (F, 1))
    x = np.rint(uv[:, 0] * (S - 1)).astype(np.int64)
    y = np.rint(uv[:, 1] * (S - 1)).astype(np.int64)
    tt = np.repeat(maps["frames"], n * n)
    conf = maps["confidence"].reshape(-1)
    keep = conf >= min_confidence
    return {"xyz": maps["xyz"].reshape(-1, 3)[keep], "rgb": frames_rgb[tt, y, x][keep], "confidence": conf[keep],
            "frame": tt[keep]}


def usable_frame_count(n: int, frame_range: tuple[int, int], step: int = 2) -> int:
    """How many of n frames one encoder call takes: n itself, or n - 1 for an odd count (the last frame dropped,
    with a warning: the tubelet spans ``step`` frames, and repeating a frame would show the model a scene that
    stopped, a motion that is not in the video). Fewer than the range's minimum is refused."""
    lo, hi = frame_range
    if n < max(lo, step):
        one = " (a single image: pass it twice, frames[[0, 0]], to see it as a static scene)" if n == 1 else ""
        raise ValueError(
            f"the clip has {n} frame{'s' if n != 1 else ''}, these engines need at least {max(lo, step)}{one}"
        )
    usable = min(n, hi) // step * step
    if usable < n:
        warnings.warn(
            f"the clip has {n} frames; the encoder takes a multiple of {step}: dropping the last "
            f"{n - usable} frame{'s' if n - usable > 1 else ''} (rt.encode_video keeps every frame)", stacklevel=3
        )
    return usable


# The checks' old names (other modules of this release may still import them): d4rt.runtime.inputs holds them.
_check_uv, _check_times = check_uv, check_times


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
    precision: str | None = None,
    compile_decoder: bool = False,
    dtype: str | None = None,
) -> Runtime:
    """Open an export folder (``d4rt export`` / ``d4rt build-engine``; or its manifest.json) on a backend.

    Args:
        backend: "auto" (tensorrt > onnxruntime-cuda > onnxruntime-cpu, the first that is installed and has its
            files), or one of "tensorrt", "onnxruntime" (CUDA when present, else CPU), "onnxruntime-cpu",
            "onnxruntime-cuda", "onnxruntime-tensorrt", "torch" (the PyTorch model, sdpa attention unless
            ``attention`` says otherwise; ``directory`` may also be a save_pretrained checkpoint), "aoti" (the
            AOTInductor packages of ``d4rt export --aoti``, in ``precision`` "fp32" or "bf16").
        verify_checksums: check every graph / engine file against the manifest's sha256 first.
        cuda_graphs: TensorRT backend: capture one CUDA graph per batch size.
        threads: ONNX Runtime intra-op threads (default: its own choice).
        attention: torch backend: attention backend.
        precision: None: the export's own graphs (fp32 on the torch backend). "fp32" | "bf16" | "fp16" on the torch
            backend; on an engine backend it must be the export's precision ("fp32", "fp16", "int8"): bf16 is
            refused there (ONNX Runtime has no bf16 path). "auto": the fastest path measured within the accuracy
            budget on this machine (docs/precision.md): on a CPU with AMX and no GPU, with torch installed and the
            export's checkpoint at hand, backend "auto" becomes the torch backend in bf16; elsewhere the export's
            graphs.
        compile_decoder: torch backend: run the decoder under torch.compile (about a minute of compilation once
            per process, then 1.24x faster in bf16: for long jobs); a failed compilation warns once and runs
            eagerly.
        dtype: deprecated spelling of ``precision`` ("float32" | "bfloat16" | "float16").
        (aoti: ``precision`` picks the packages, "fp32" (default) or "bf16".)
    """
    from d4rt.runtime.precision import LOAD_PRECISIONS, check_graph_precision, precision_from_dtype

    directory = Path(directory)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if dtype is not None:
        warnings.warn("load(..., dtype=...) is deprecated: use precision= ('fp32', 'bf16', 'fp16')",
                      DeprecationWarning, stacklevel=2)
        if precision is not None and precision != precision_from_dtype(dtype):
            raise ValueError(f"dtype={dtype!r} and precision={precision!r} disagree; pass precision only")
        precision = precision_from_dtype(dtype)
    if precision is not None and precision not in LOAD_PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {LOAD_PRECISIONS} (or None: the export's)")
    if directory.name == MANIFEST_NAME and directory.is_file():  # the manifest's path names its directory
        directory = directory.parent
    elif directory.is_file():
        raise ValueError(
            f"{directory} is a file; load(...) takes an export folder (the folder holding {MANIFEST_NAME}, "
            f"from `d4rt export CKPT_DIR --out DIR`)"
        )
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} does not exist; make an export folder with `d4rt export CKPT_DIR --out DIR`")
    if precision == "auto" and backend == "auto" and _auto_runs_torch_bf16(directory):
        backend, precision = "torch", "bf16"

    if backend == "torch":
        from d4rt.runtime.backend_torch import TorchBackend

        manifest = read_manifest(directory) if (directory / MANIFEST_NAME).is_file() else None
        precision = precision or "fp32"  # ("auto": the backend decides from the machine)
        impl = TorchBackend.open(directory, manifest, attention=attention, precision=precision,
                                 compile_decoder=compile_decoder)
        cfg = impl.model.config
        lo, hi = manifest.frame_range if manifest else (cfg.tubelet[0], cfg.num_frames)
        return Runtime(impl, hi, cfg.image_size, manifest, lo, cfg.tubelet[0])

    manifest = read_manifest(directory)
    if backend != "aoti":  # (the aoti backend picks its packages by precision)
        check_graph_precision(precision, manifest.precision, backend, directory)

    def runtime(impl) -> Runtime:
        return Runtime(impl, manifest.num_frames, manifest.image_size, manifest, manifest.frame_range[0],
                       int(manifest.config["tubelet"][0]))

    def make(name: str):
        if name == "aoti":
            from d4rt.runtime.backend_aoti import PRECISION_OF_DTYPE, AotiBackend
            from d4rt.runtime.precision import default_precision

            packages = default_precision() if precision == "auto" else (precision or "fp32")
            if packages not in PRECISION_OF_DTYPE.values():
                raise ValueError(f"the aoti backend runs fp32 or bf16 packages, got precision={packages!r}")
            return AotiBackend(directory, manifest, packages, threads, verify_checksums)
        if name == "tensorrt":
            from d4rt.runtime.backend_tensorrt import TensorRTBackend

            return TensorRTBackend(directory, manifest, cuda_graphs, device_id, verify_checksums)
        from d4rt.runtime.backend_onnxruntime import OnnxRuntimeBackend, available_providers

        provider = name.removeprefix("onnxruntime").lstrip("-")
        if not provider:
            provider = "cuda" if "CUDAExecutionProvider" in available_providers() else "cpu"
        return OnnxRuntimeBackend(directory, manifest, provider, threads, verify_checksums, device_id)

    if backend != "auto":
        return runtime(make(backend))

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
        return runtime(impl)
    raise RuntimeError("no backend could be loaded:\n  " + "\n  ".join(failures))  # pragma: no cover


def _auto_runs_torch_bf16(directory: Path) -> bool:
    """Whether precision="auto" with backend "auto" runs the checkpoint on torch in bf16 (docs/precision.md): a CPU
    with AMX, no CUDA execution provider or TensorRT engine to use instead, torch installed, an fp32 export (an int8
    or fp16 export is an explicit choice of graphs) whose checkpoint is at hand."""
    from d4rt.runtime.backend_torch import checkpoint_dir_of
    from d4rt.runtime.precision import default_precision, has_torch

    if default_precision() != "bf16" or not has_torch():
        return False
    manifest = read_manifest(directory) if (directory / MANIFEST_NAME).is_file() else None
    if manifest is not None and manifest.precision != "fp32":
        return False
    if manifest is not None and manifest.engines and _has_module("tensorrt"):
        return False
    if _has_module("onnxruntime"):
        from d4rt.runtime.backend_onnxruntime import available_providers

        if "CUDAExecutionProvider" in available_providers():
            return False
    try:
        checkpoint_dir_of(directory, manifest)
    except FileNotFoundError:
        return False
    return True
