"""Videos of any length: overlapping windows, each encoded once, aligned by Sim(3) and chained (paper App. B).

    >>> video = rt.encode_video("long.mp4")            # any number of frames >= 2
    >>> rt.depth(video, 120), rt.camera_poses(video), rt.intrinsics(video), rt.point_cloud(video)

A video of F frames runs in windows of T frames (the engines' most) that overlap by O frames (default T / 4: with
T = 48, 12 shared frames of alignment points cost 12 / 36 = 1/3 more encoder calls; fewer shared frames make the
Sim(3) fit rest on one part of the scene). The last window ends on the last frame (it may overlap more), so every
frame is answered and no frame is repeated. A clip shorter than T with an odd count runs as two windows of
F - 1 frames (the tubelet spans 2 frames), overlapping by F - 2.

Each window w answers in its own frame: camera 0 of the window, its own scale. Its shared frames with window
w - 1 are queried on the same pixel grid in both windows (in each window's camera 0, at their own time); the
Sim(3) fit of the house's one estimator (:func:`~d4rt.runtime.geometry.align_sim3`: the 85 % most confident
pairs, confidence = the product of both windows', then a trimmed refit) maps window w's camera 0 into window
w - 1's, and the chain of fits maps every window into window 0's camera 0, the world (each frame's pose inside its
window is the rigid fit of its own-camera points to its camera-0 points, the estimator of ``Runtime.camera_poses``).
The shared-frame points are the grid the poses are made of anyway, so the alignment costs no extra queries.

Each source frame is answered by one window, the first that holds it (its "owner"): depth (scaled to the world),
T_wc (world), K, its points of the cloud. A track seeded at frame t_src runs in the first window holding t_src and
is continued in each later window from its 2-D position in the last frame the windows share.

Streaming (the default): a window's keys and values are dropped as soon as its outputs are taken, so memory stays
that of one window whatever the video's length; ``keep_memory=True`` keeps every window's scene for more queries.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from d4rt.runtime.geometry import (  # noqa: F401 (KEEP_FRACTION, align_sim3: re-exported, their old home)
    KEEP_FRACTION,
    TRIM,
    align_sim3,
    focal_from_points,
    invert_rigid,
    transform_points,
)
from d4rt.runtime.inputs import check_aspect_ratio, check_frames, check_grid_size, check_times, check_uv
from d4rt.runtime.runtime import (
    DEFAULT_BATCH,
    Runtime,
    cloud_from_point_maps,
    default_pose_size,
    point_maps,
    renamed,
    usable_frame_count,
)

default_pose_grid = default_pose_size  # its old name


def plan_windows(num_frames: int, window: int, overlap: int, step: int = 2, min_frames: int = 2) -> list[range]:
    """Windows (ranges of frame indices) covering num_frames frames: each of a multiple of ``step`` frames, at
    most ``window``; consecutive windows share at least ``overlap`` frames (>= 1); the last ends on the last frame.
    """
    for name, value in (("window", window), ("overlap", overlap)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if window < max(step, min_frames) or window % step:
        raise ValueError(f"window must be a multiple of {step} frames, at least {max(step, min_frames)}, got {window}")
    if not 1 <= overlap < window:
        raise ValueError(
            f"overlap must be in [1, window - 1] = [1, {window - 1}] frames (shared frames align the windows), "
            f"got {overlap}"
        )
    n = int(num_frames)
    if n <= window:
        length = usable_frame_count(n, (min_frames, window), step) if n % step == 0 else n - n % step
        if length < max(min_frames, step):
            usable_frame_count(n, (min_frames, window), step)  # raises the clear error
        return [range(0, length)] if length == n else [range(0, length), range(n - length, n)]
    hop = window - overlap
    starts = list(range(0, n - window, hop)) + [n - window]
    return [range(s, s + window) for s in dict.fromkeys(starts)]


def rigid_in_world(world_from_window: np.ndarray, T_local: np.ndarray) -> np.ndarray:
    """World camera-to-world poses from a window's local ones: [F, 4, 4] rigid, translation in world units.

    world_from_window: [4, 4] Sim(3) (s R | t); T_local: [F, 4, 4] rigid, camera -> window camera 0.
    """
    M = world_from_window @ T_local
    scale = np.cbrt(np.linalg.det(world_from_window[:3, :3]))
    M[:, :3, :3] /= scale
    return M


@dataclass
class VideoScene:
    """A whole video, answered per frame of the selection (frame i is source frame ``source_frames[i]``).

    frames [F, S, S, 3] uint8 (resized); depth_maps [F, n, n] (world scale: window 0's), depth_confidence
    [F, n, n]; T_wc [F, 4, 4] camera-to-world (frame 0's camera is the world); K [F, 3, 3] (pixels of S x S; NaN
    for a frame whose points all lie behind the camera: ``rt.intrinsics(video)`` refuses it);
    cloud: xyz [P, 3] (world), rgb [P, 3], confidence [P], frame [P]; track: xyz [Q, F, 3] (world), uv_tgt
    [Q, F, 2], visibility [Q, F], confidence [Q, F] (NaN / 0 before the window that seeds them), or None;
    windows: the frame ranges; world_from_window [W, 4, 4] Sim(3); owner [F] the window answering each frame;
    scenes: each window's Scene when kept (keep_memory), else None; pose_size, cloud_size: the grids of poses and
    cloud; track_uv [Q, 2], track_t_src: the tracks ``encode_video`` took.

    Ask the runtime for its outputs, as for a :class:`~d4rt.runtime.runtime.Scene`: ``rt.depth(video, t)``,
    ``rt.point_cloud(video)``, ``rt.tracks(video, uv, t_src)``, ``rt.camera_poses(video)``, ``rt.intrinsics(video)``.
    """

    source_frames: np.ndarray
    frames: np.ndarray
    aspect_ratio: float
    original_size: tuple[int, int]
    windows: list[range]
    world_from_window: np.ndarray
    owner: np.ndarray
    depth_maps: np.ndarray
    depth_confidence: np.ndarray
    T_wc: np.ndarray
    K: np.ndarray
    cloud: dict[str, np.ndarray]
    track: dict[str, np.ndarray] | None = None
    dense: Any = None  # DenseTracks (Alg. 1) when encode_video had dense_grid
    scenes: list[Any] | None = field(default=None, repr=False)
    timings: dict[str, float] = field(default_factory=dict)
    xyz_cam: np.ndarray | None = field(default=None, repr=False)  # [F, n, n, 3] with keep_point_maps, else None
    pose_size: int = 0
    cloud_size: int = 0
    track_uv: np.ndarray | None = None
    track_t_src: int = 0

    @property
    def num_frames(self) -> int:
        return int(len(self.source_frames))

    @property
    def image_size(self) -> int:
        return int(self.frames.shape[1])

    # ----- the old surface: kept one release, each warns (ask the runtime: rt.depth(video, t), ...) ------------
    def depth(self, t: int | None = None) -> np.ndarray:
        """Deprecated: ``rt.depth(video, t)``."""
        _deprecated("video.depth(t)", "rt.depth(video, t)")
        return video_depth(self, t, None)[0] if t is None else video_depth(self, t, None)[0][0]

    def camera_poses(self) -> np.ndarray:
        """Deprecated: ``rt.camera_poses(video)``."""
        _deprecated("video.camera_poses()", "rt.camera_poses(video)")
        return video_camera_poses(self, None)

    def intrinsics(self) -> np.ndarray:
        """Deprecated: ``rt.intrinsics(video)``."""
        _deprecated("video.intrinsics()", "rt.intrinsics(video)")
        return video_intrinsics(self, None)

    def point_cloud(self, min_confidence: float = 0.0) -> dict[str, np.ndarray]:
        """Deprecated: ``rt.point_cloud(video, min_confidence=...)``."""
        _deprecated("video.point_cloud()", "rt.point_cloud(video, min_confidence=...)")
        return video_point_cloud(self, 0, None, None, min_confidence)

    def tracks(self) -> dict[str, np.ndarray]:
        """Deprecated: ``rt.tracks(video, video.track_uv, video.track_t_src)``."""
        _deprecated("video.tracks()", "rt.tracks(video, uv, t_src)")
        return _stored_tracks(self)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated and goes in the next release; use {new}", DeprecationWarning, stacklevel=3)


# ----- a VideoScene's answers (Runtime's depth, point_cloud, tracks, camera_poses, intrinsics call these) ----------
def _same_size(name: str, size, have: int, option: str) -> None:
    if size is not None and check_grid_size("size", size, have) != have:
        raise ValueError(f"this video's {name} were taken on a {have} x {have} grid, not {size} x {size}: pass size="
                         f"None (or {have}), or encode the video again with encode_video({option}={size})")


def video_depth(video: VideoScene, t, size) -> tuple[np.ndarray, np.ndarray]:
    """Depth and confidence [F, n, n] of frames t (indices into the selection; None: all) of a video."""
    _same_size("depth maps", size, video.depth_maps.shape[-1], "depth_size")
    frames = check_frames("t", t, video.num_frames)
    return video.depth_maps[frames], video.depth_confidence[frames]


def video_point_cloud(video: VideoScene, t_cam, size, frames, min_confidence: float) -> dict[str, np.ndarray]:
    """The video's cloud (each owned frame's grid), in t_cam's camera (world scale), of the frames asked for."""
    _same_size("point clouds", size, video.cloud_size, "cloud_size")
    t_cam = 0 if t_cam is None else t_cam
    check_times("t_cam", t_cam, 1, video.num_frames)
    keep = video.cloud["confidence"] >= min_confidence
    if frames is not None:
        keep &= np.isin(video.cloud["frame"], check_frames("frames", frames, video.num_frames))
    cloud = {k: v[keep] for k, v in video.cloud.items()}
    if int(t_cam) != 0:  # the cloud is in the world (frame 0's camera): into t_cam's camera by its pose
        cloud["xyz"] = transform_points(invert_rigid(video.T_wc[int(t_cam)]), cloud["xyz"]).astype(np.float32)
    return cloud


def video_camera_poses(video: VideoScene, size) -> np.ndarray:
    """T_wc [F, 4, 4] of a video (frame 0's camera is the world)."""
    _same_size("poses", size, video.pose_size, "pose_size")
    return video.T_wc


def video_intrinsics(video: VideoScene, size) -> np.ndarray:
    """K [F, 3, 3] of a video, in pixels of the S x S input. Refused (ValueError naming the frames) when a frame has
    none: encode_video leaves NaN where the model put no usable point in front of the camera, so a video is still
    encoded, posed and scored (evaluate asks for no intrinsics) with such a model."""
    _same_size("intrinsics", size, video.pose_size, "pose_size")
    missing = np.flatnonzero(np.isnan(video.K).any((1, 2)))
    if missing.size:
        frames = ", ".join(str(int(f)) for f in video.source_frames[missing[:5]]) + (" ..." if missing.size > 5 else "")
        raise ValueError(f"no focal length for {missing.size} frame(s) ({frames}): the model put no usable point in "
                         f"front of the camera there (an untrained or random-weight checkpoint?)")
    return video.K


def _focal_or_nan(uv: np.ndarray, xyz_cam: np.ndarray, image_size: int) -> np.ndarray:
    """focal_from_points, or NaN [3, 3] where the frame gives none (video_intrinsics then names the frame)."""
    try:
        return focal_from_points(uv, xyz_cam, image_size)
    except ValueError:
        return np.full((3, 3), np.nan)


def _stored_tracks(video: VideoScene) -> dict[str, np.ndarray]:
    if video.track is None:
        raise ValueError("no tracks were asked for: pass track_uv=... to encode_video")
    return video.track


def tracks_of_video(rt: Runtime, video: VideoScene, uv, t_src, t_cam=0, batch_size: int = DEFAULT_BATCH,
                    progress: bool = False) -> dict[str, np.ndarray]:
    """``rt.tracks`` of a VideoScene: xyz [P, F, 3] in t_cam's camera (0: the world; None: each frame's own),
    uv_tgt [P, F, 2], visibility [P, F], confidence [P, F]. Through the kept windows (:func:`video_tracks`), or
    the tracks ``encode_video(track_uv=...)`` took when uv and t_src are those."""
    uv = check_uv(uv)
    F = video.num_frames
    t_src = check_times("t_src", t_src, len(uv), F)
    if t_cam is not None:
        check_times("t_cam", t_cam, 1, F)
    if video.scenes is not None:
        out = video_tracks(rt, video, uv, t_src, own_camera=t_cam is None, batch_size=batch_size, progress=progress)
    elif (video.track is not None and video.track_uv is not None and np.array_equal(uv, video.track_uv)
          and (t_src == video.track_t_src).all() and t_cam is not None):
        out = {k: v.copy() for k, v in video.track.items()}
    else:
        raise ValueError(
            "this video's windows were not kept, so it answers only the tracks encode_video took (track_uv=..., "
            "track_t_src=..., in the world: t_cam=0); encode it with keep_memory=True to track any pixel"
        )
    if t_cam is not None and int(t_cam) != 0:  # world -> t_cam's camera
        out["xyz"] = transform_points(invert_rigid(video.T_wc[int(t_cam)]), out["xyz"]).astype(np.float32)
    return out


def read_frames(video, start: int = 0, stride: int = 1, max_frames: int | None = None) -> np.ndarray:
    """The selected frames of a video file or an array [F, H, W, 3] (Runtime's selection rules)."""
    return Runtime._select(video if not isinstance(video, str) else Path(video), start, stride, max_frames)


def encode_video(
    rt: Runtime,
    video: np.ndarray | str | Path,
    *,
    start: int = 0,
    stride: int = 1,
    max_frames: int | None = None,
    aspect_ratio: float | None = None,
    window: int | None = None,
    overlap: int | None = None,
    depth_size: int | None = None,
    cloud_size: int | None = None,
    pose_size: int | None = None,
    track_uv: np.ndarray | None = None,
    track_t_src: int = 0,
    dense_size: int | None = None,
    align_trim: float | None = TRIM,
    keep_memory: bool = False,
    keep_point_maps: bool = False,
    batch_size: int = DEFAULT_BATCH,
    progress: bool = False,
    pose_grid: int | None = None,
    dense_grid: int | None = None,
) -> VideoScene:
    """Encode a video of any length in aligned windows and take every per-frame output (module doc).

    Args:
        video: frames [F, H, W, 3] (uint8 or float in [0, 1]) or a video file; start / stride / max_frames select.
        window: frames per window (default: the engines' most, T); overlap: shared frames (default max(1, T / 4)).
        depth_size: depth grid per side (default S); cloud_size: cloud grid per frame (default S / 2);
        pose_size: the grid of poses, intrinsics and alignment points (>= 2; default min(32, S / 2): a finer grid
            than half the input's pixels adds near-duplicate points, not information).
        track_uv: [Q, 2] pixels to track from frame track_t_src (an index into the selection), or None.
        dense_size: also run dense tracking (Alg. 1, :mod:`d4rt.runtime.dense_tracks`) on a size x size grid of
            pixels of every frame (0: the scene's S); None: off.
        align_trim: the refit rule of :func:`~d4rt.runtime.geometry.align_sim3` (None: the paper's top-85 % fit
            alone), for the windows' alignment and the poses inside them.
        pose_grid, dense_grid: deprecated names of pose_size, dense_size.
        keep_memory: keep every window's scene (keys / values) for later queries; default: drop each at once.
        keep_point_maps: keep the depth grid's points, each frame's in its own camera at the world scale, as
            ``xyz_cam`` [F, n, n, 3] float32 (n = depth_size; the depth maps are their z; no extra query).
    Returns:
        a :class:`VideoScene`.
    """
    aspect_ratio = check_aspect_ratio(aspect_ratio)
    window = rt.num_frames if window is None else window
    overlap = max(1, int(window) // 4) if overlap is None else overlap
    pose_grid = check_grid_size("pose_size", renamed(pose_size, pose_grid, "pose_grid", "pose_size"),
                                default_pose_size(rt.image_size))
    dense_grid = renamed(dense_size, dense_grid, "dense_grid", "dense_size")
    depth_size = check_grid_size("depth_size", depth_size, rt.image_size)
    cloud_size = check_grid_size("cloud_size", cloud_size, max(rt.image_size // 2, 2))
    if window > rt.num_frames:
        raise ValueError(f"window must be at most the engines' {rt.num_frames} frames, got {window}")
    frames = read_frames(video, start, stride, max_frames)
    F = len(frames)
    windows = plan_windows(F, window, overlap, rt.frame_step, rt.frame_range[0])
    if track_uv is not None:
        track_uv = check_uv(track_uv)
        if isinstance(track_t_src, bool) or not isinstance(track_t_src, (int, np.integer)) or not 0 <= track_t_src < F:
            raise ValueError(f"track_t_src must be a frame index in [0, {F}), got {track_t_src!r}")

    S = rt.image_size
    G = pose_grid * pose_grid
    tracker = None
    if dense_grid is not None:
        from d4rt.runtime.dense_tracks import DenseTracker

        tracker = DenseTracker(F, check_grid_size("dense_size", dense_grid or S, S), max(len(r) for r in windows))
    out_frames = np.empty((F, S, S, 3), np.uint8)
    depth = np.empty((F, depth_size, depth_size), np.float32)
    depth_conf = np.empty_like(depth)
    xyz_cam = np.empty((F, depth_size, depth_size, 3), np.float32) if keep_point_maps else None
    T_wc = np.empty((F, 4, 4))
    K = np.empty((F, 3, 3))
    owner = np.full(F, -1, np.int64)
    clouds = []
    world_from = []
    kept = [] if keep_memory else None
    Q = 0 if track_uv is None else len(track_uv)
    track = {
        "xyz": np.full((Q, F, 3), np.nan, np.float32), "uv_tgt": np.full((Q, F, 2), np.nan, np.float32),
        "visibility": np.zeros((Q, F), np.float32), "confidence": np.zeros((Q, F), np.float32),
    }
    prev_points: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # frame -> (xyz in previous window's camera 0, conf)
    timings = {"encode_s": 0.0, "query_s": 0.0, "align_s": 0.0}
    common = {"batch_size": batch_size, "progress": progress}
    progress_bar = range(len(windows))
    if progress and len(windows) > 1:
        from tqdm import tqdm

        progress_bar = tqdm(progress_bar, desc=f"windows of {window} frames", unit="window")

    for w in progress_bar:
        rng = windows[w]
        clock = time.perf_counter()
        scene = rt.encode(frames[rng.start:rng.stop], aspect_ratio=aspect_ratio)
        timings["encode_s"] += time.perf_counter() - clock

        clock = time.perf_counter()
        local = np.arange(len(rng))
        owned = np.array([f for f in rng if owner[f] < 0], np.int64)  # the frames this window answers
        owner[owned] = w
        own_local = owned - rng.start
        own_cam = point_maps(rt, scene, own_local, pose_grid, None, **common)  # each owned frame in its own camera
        first_cam = point_maps(rt, scene, local, pose_grid, 0, **common)  # each frame in the window's camera 0
        timings["query_s"] += time.perf_counter() - clock

        clock = time.perf_counter()
        xyz0 = first_cam["xyz"].reshape(len(rng), G, 3).astype(np.float64)
        conf0 = first_cam["confidence"].reshape(len(rng), G).astype(np.float64)
        if w == 0:
            M = np.eye(4)
        else:
            shared = [f for f in rng if f in prev_points]
            src = np.concatenate([xyz0[f - rng.start] for f in shared])
            dst = np.concatenate([prev_points[f][0] for f in shared])
            conf = np.concatenate([conf0[f - rng.start] * prev_points[f][1] for f in shared])
            M = world_from[-1] @ align_sim3(src, dst, conf, trim=align_trim)
        world_from.append(M)
        prev_points = {f: (xyz0[f - rng.start], conf0[f - rng.start]) for f in rng}
        xyz_own = own_cam["xyz"].reshape(len(owned), G, 3).astype(np.float64)
        weights = own_cam["confidence"].reshape(len(owned), G).astype(np.float64) * conf0[own_local]
        T_local = np.tile(np.eye(4), (len(owned), 1, 1))
        for i, j in enumerate(own_local):  # each frame's pose in the window: the same top-85 % rule, rigid
            if j > 0:
                T_local[i] = align_sim3(xyz_own[i], xyz0[j], weights[i], with_scale=False, trim=align_trim)
        T_wc[owned] = rigid_in_world(M, T_local)
        timings["align_s"] += time.perf_counter() - clock

        clock = time.perf_counter()
        K[owned] = [_focal_or_nan(own_cam["uv"], xyz_own[i], S) for i in range(len(owned))]
        scale = float(np.cbrt(np.linalg.det(M[:3, :3])))
        maps = point_maps(rt, scene, own_local, depth_size, None, **common)
        depth[owned] = maps["xyz"][..., 2] * scale
        if xyz_cam is not None:
            xyz_cam[owned] = maps["xyz"] * scale
        depth_conf[owned] = maps["confidence"]
        cloud = point_maps(rt, scene, own_local, cloud_size, 0, **common)
        pts = cloud_from_point_maps(cloud, scene.frames, 0.0)
        pts["xyz"] = (pts["xyz"].astype(np.float64) @ M[:3, :3].T + M[:3, 3]).astype(np.float32)
        pts["frame"] = pts["frame"] + rng.start
        clouds.append(pts)
        out_frames[rng.start:rng.stop] = scene.frames
        if Q and track_t_src < rng.stop:  # the seeding window and every later one
            _continue_tracks(rt, scene, rng, windows, w, owned, track, track_uv, track_t_src, M, common)
        timings["query_s"] += time.perf_counter() - clock
        if tracker is not None:
            tracker.window(rt, scene, rng, owned, M, batch_size, progress)
        if keep_memory:
            kept.append(scene)
        del scene  # streaming: this window's keys and values go now

    cloud = {k: np.concatenate([c[k] for c in clouds]) for k in clouds[0]}
    return VideoScene(
        source_frames=start + stride * np.arange(F), frames=out_frames,
        aspect_ratio=aspect_ratio or frames.shape[2] / frames.shape[1], original_size=tuple(frames.shape[1:3]),
        windows=windows, world_from_window=np.stack(world_from), owner=owner, depth_maps=depth,
        depth_confidence=depth_conf, T_wc=T_wc, K=K, cloud=cloud, track=track if Q else None,
        dense=None if tracker is None else tracker.result(), scenes=kept,
        timings={k: round(v, 4) for k, v in timings.items()}, xyz_cam=xyz_cam, pose_size=pose_grid,
        cloud_size=cloud_size, track_uv=track_uv, track_t_src=int(track_t_src),
    )


def _continue_tracks(rt, scene, rng: range, windows, w: int, owned, track, track_uv, t_src: int, M, common) -> None:
    """Fill the tracks' frames this window answers: seeded here (all of its frames not yet filled), or continued
    from their 2-D position in the last frame shared with the previous window."""
    Q, L = len(track_uv), len(rng)
    if t_src in rng and not (w > 0 and t_src in windows[w - 1]):
        uv, src_local, fill = track_uv, t_src - rng.start, np.arange(rng.start, rng.stop)
    else:
        handover = windows[w - 1].stop - 1  # the last frame both windows hold
        uv = np.clip(np.nan_to_num(track["uv_tgt"][:, handover], nan=0.5), 0.0, 1.0).astype(np.float32)
        src_local, fill = handover - rng.start, owned
    if not len(fill):
        return
    res = rt.query(scene, np.repeat(uv, L, 0), np.full(Q * L, src_local), np.tile(np.arange(L), Q),
                   np.zeros(Q * L, np.int64), **common)
    cols = fill - rng.start
    xyz = res["xyz"].reshape(Q, L, 3)[:, cols].astype(np.float64)
    track["xyz"][:, fill] = xyz @ M[:3, :3].T + M[:3, 3]
    for name in ("uv_tgt", "visibility", "confidence"):
        track[name][:, fill] = res[name].reshape(Q, L, *res[name].shape[1:])[:, cols]


def video_tracks(
    rt: Runtime,
    video: VideoScene,
    uv: np.ndarray,
    t_src: int | np.ndarray,
    own_camera: bool = True,
    batch_size: int = DEFAULT_BATCH,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Tracks through every frame of a video kept in memory (``encode_video(..., keep_memory=True)``), each from its
    own query frame: forward and backward across the windows, each window continuing a track from its 2-D position
    in a frame it shares with the window that answered it last (the last shared frame going forward, the first going
    backward). Every frame of a track is answered by one window.

    Args:
        uv: [Q, 2] query pixels; t_src: an int or [Q], frame indices into the selection.
        own_camera: xyz in each frame's own camera (t_cam = t_tgt, as TAPVid-3D scores), else in the world (the
            first frame's camera); both in the world's scale (window 0's).
    Returns:
        xyz [Q, F, 3], uv_tgt [Q, F, 2], visibility [Q, F], confidence [Q, F].
    """
    if video.scenes is None:
        raise ValueError("the video's windows were not kept: encode it with encode_video(..., keep_memory=True)")
    uv = check_uv(uv)
    Q, F = len(uv), video.num_frames
    t_src = np.broadcast_to(np.asarray(t_src), (Q,))
    if not np.issubdtype(t_src.dtype, np.integer) or (Q and (t_src.min() < 0 or t_src.max() >= F)):
        raise ValueError(f"t_src must be integer frame indices in [0, {F}), got {t_src!r}")
    windows = video.windows
    seed = video.owner[t_src]  # the first window holding each query frame
    out = {"xyz": np.full((Q, F, 3), np.nan, np.float32), "uv_tgt": np.full((Q, F, 2), np.nan, np.float32),
           "visibility": np.zeros((Q, F), np.float32), "confidence": np.zeros((Q, F), np.float32)}
    filled = np.zeros((Q, F), bool)

    def answer(w: int, tracks: np.ndarray, start_uv: np.ndarray, start_frame: np.ndarray) -> None:
        rng, scene, M = windows[w], video.scenes[w], video.world_from_window[w]
        L, n = len(rng), len(tracks)
        if not n:
            return
        t_tgt = np.tile(np.arange(L), n)
        cam = t_tgt if own_camera else np.zeros_like(t_tgt)
        res = rt.query(scene, np.repeat(start_uv, L, 0), np.repeat(start_frame - rng.start, L), t_tgt, cam,
                       batch_size, progress)
        xyz = res["xyz"].reshape(n, L, 3).astype(np.float64)
        xyz = xyz * np.cbrt(np.linalg.det(M[:3, :3])) if own_camera else xyz @ M[:3, :3].T + M[:3, 3]
        frames = np.arange(rng.start, rng.stop)
        todo = ~filled[tracks][:, frames]  # [n, L]: each frame answered once
        rows, cols = np.nonzero(todo)
        q, f = tracks[rows], frames[cols]
        out["xyz"][q, f] = xyz[rows, cols]
        for name in ("uv_tgt", "visibility", "confidence"):
            out[name][q, f] = res[name].reshape(n, L, *res[name].shape[1:])[rows, cols]
        filled[q, f] = True

    def handed_over(tracks: np.ndarray, frame: int) -> np.ndarray:
        return np.clip(np.nan_to_num(out["uv_tgt"][tracks, frame], nan=0.5), 0.0, 1.0).astype(np.float32)

    for w in range(len(windows)):  # forward: seeds, then continuations from the last frame shared with w - 1
        here = np.flatnonzero(seed == w)
        answer(w, here, uv[here], t_src[here])
        if w:
            later = np.flatnonzero(seed < w)
            handover = windows[w - 1].stop - 1
            answer(w, later, handed_over(later, handover), np.full(len(later), handover))
    for w in range(len(windows) - 2, -1, -1):  # backward: from the first frame shared with w + 1
        earlier = np.flatnonzero(seed > w)
        handover = windows[w + 1].start
        answer(w, earlier, handed_over(earlier, handover), np.full(len(earlier), handover))
    return out
