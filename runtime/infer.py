"""The ``d4rt infer`` job as a function: every output of a whole video (any length: aligned windows), written into
one folder, files named by source frame number."""

from __future__ import annotations

import time
from pathlib import Path


def load_frames(source: str | Path):
    """A .npy of frames, or the path itself (decoded by the runtime)."""
    import numpy as np

    source = Path(source)
    if source.suffix == ".npy":
        if not source.is_file():
            raise FileNotFoundError(f"{source} does not exist")
        return np.load(source, allow_pickle=False)
    return source


def infer_video(rt, source, out_dir: str | Path, *, start: int = 0, stride: int = 1, max_frames: int | None = None,
                window: int | None = None, overlap: int | None = None, batch_size: int = 8192,
                depth_size: int | None = None, cloud_size: int | None = None, track_size: int = 16,
                pose_size: int | None = None, min_confidence: float = 0.0, dense_tracks: bool = False,
                dense_size: int | None = None, progress: bool = True, track_grid: int | None = None,
                pose_grid: int | None = None, dense_grid: int | None = None) -> dict:
    """Run every output of ``d4rt infer`` for a whole video (or its start / stride / max_frames selection) and
    write them into ``out_dir``; returns the summary (also written as summary.json).

    The video runs through :func:`d4rt.runtime.windows.encode_video` (one window when it fits the engines' T);
    ``dense_tracks`` adds Alg. 1's all-pixel tracks on a dense_size x dense_size grid (default S) of every frame
    (:mod:`d4rt.runtime.dense_tracks`). Grid sizes (queries per side): depth_size, cloud_size, pose_size,
    track_size (the first frame's pixels tracked), dense_size; track_grid, pose_grid, dense_grid are their
    deprecated names.
    """
    import numpy as np

    from d4rt.runtime.geometry import grid_uv
    from d4rt.runtime.outputs import depth_to_uint16, write_json, write_npz, write_ply, write_png, write_preview
    from d4rt.runtime.runtime import renamed
    from d4rt.runtime.windows import encode_video

    track_size = renamed(None, track_grid, "track_grid", "track_size") or track_size
    pose_size = renamed(pose_size, pose_grid, "pose_grid", "pose_size")
    dense_size = renamed(dense_size, dense_grid, "dense_grid", "dense_size")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    track_uv = grid_uv(track_size)
    video = encode_video(
        rt, source, start=start, stride=stride, max_frames=max_frames, window=window, overlap=overlap,
        depth_size=depth_size, cloud_size=cloud_size, pose_size=pose_size, track_uv=track_uv, track_t_src=0,
        dense_size=(dense_size or 0) if dense_tracks else None, batch_size=batch_size, progress=progress,
    )
    timings = {"video_s": round(time.perf_counter() - t0, 4), **video.timings}
    depth, confidence = rt.depth(video, with_confidence=True)
    T_wc, K = rt.camera_poses(video), rt.intrinsics(video)
    names = video.source_frames

    valid = depth[np.isfinite(depth) & (depth > 0)]
    depth_max = float(valid.max()) if valid.size else 0.0
    width = max(4, len(str(int(names.max()))))
    for i, f in enumerate(names):
        write_png(out_dir / "depth" / f"{int(f):0{width}d}.png", depth_to_uint16(depth[i], depth_max))
        write_png(out_dir / "frames" / f"{int(f):0{width}d}.png", video.frames[i])
    write_npz(out_dir / "depth.npz", depth=depth, confidence=confidence, depth_max=np.float32(depth_max),
              source_frames=names)
    cloud = rt.point_cloud(video, min_confidence=min_confidence)
    write_ply(out_dir / "points.ply", cloud["xyz"], cloud["rgb"])
    write_npz(out_dir / "points.npz", **cloud)  # the same points with confidence and frame (index into source_frames)
    write_json(out_dir / "trajectory.json", {
        "convention": "T_wc camera-to-world 4x4, the first frame's camera is the world; OpenCV axes (+x right, "
                      "+y down, +z forward); K in pixels of the S x S network input; xyz up to one scale per video "
                      "(the first window's); frames named by source frame number",
        "image_size": video.image_size, "original_size": list(video.original_size), "depth_max": depth_max,
        "source_frames": names.tolist(), "windows": [[int(names[r.start]), int(names[r.stop - 1])]
                                                     for r in video.windows],
        "T_wc": T_wc.round(8).tolist(), "K": K.round(6).tolist(),
    })
    write_npz(out_dir / "tracks.npz", uv=track_uv, t_src=np.int32(0), source_frames=names, **rt.tracks(video, track_uv, 0))
    dense = video.dense
    if dense is not None:
        write_npz(out_dir / "dense_tracks.npz", source_frames=names, **dense.arrays(compact=True))
    preview = True
    try:
        write_preview(out_dir / "preview.png", video.frames, depth, T_wc, labels=names,
                      aspect_ratio=video.aspect_ratio)
    except ImportError:
        preview = False  # matplotlib is optional for the runtime
    summary = {
        "backend": rt.name, "frames": video.num_frames, "first_frame": int(names[0]), "last_frame": int(names[-1]),
        "windows": len(video.windows), "image_size": video.image_size, "original_size": list(video.original_size),
        "aspect_ratio": video.aspect_ratio, "depth_queries": int(depth.size), "cloud_points": int(len(cloud["xyz"])),
        "tracks": int(len(track_uv)), "preview": preview, "timings": timings,
    }
    if dense is not None:
        summary["dense_tracks"] = dense.summary()
    write_json(out_dir / "summary.json", summary)
    return summary


def infer_clip(*args, **kwargs) -> dict:
    """Deprecated name of :func:`infer_video` (kept one release)."""
    import warnings

    warnings.warn("d4rt.runtime.infer.infer_clip is deprecated; use infer_video", DeprecationWarning, stacklevel=2)
    return infer_video(*args, **kwargs)
