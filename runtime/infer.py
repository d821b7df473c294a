"""The ``d4rt infer`` job as a function: every output of one clip, written into one folder."""

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


def infer_clip(rt, source, out_dir: str | Path, *, start: int = 0, stride: int = 1, max_frames: int | None = None,
               batch_size: int = 8192, depth_size: int | None = None, cloud_size: int | None = None,
               track_grid: int = 16, pose_grid: int = 32, min_confidence: float = 0.0, progress: bool = True) -> dict:
    """Run every output of ``d4rt infer`` for one clip; returns the summary (also written as summary.json)."""
    import numpy as np

    from d4rt.runtime.geometry import grid_uv
    from d4rt.runtime.outputs import depth_to_uint16, write_json, write_npz, write_ply, write_png, write_preview

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = {}

    def timed(name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - t0, 4)
        return result

    scene = timed("encode_s", rt.encode, source, start=start, stride=stride, max_frames=max_frames)
    common = {"batch_size": batch_size, "progress": progress}
    depth, confidence = timed("depth_s", rt.depth, scene, None, depth_size, True, **common)
    T_wc = timed("camera_poses_s", rt.camera_poses, scene, pose_grid, **common)
    K = timed("intrinsics_s", rt.intrinsics, scene, pose_grid, **common)
    cloud = timed("point_cloud_s", rt.point_cloud, scene, 0, cloud_size, None, min_confidence, **common)
    track_uv = grid_uv(track_grid)
    tracks = timed("tracks_s", rt.tracks, scene, track_uv, 0, 0, **common)

    valid = depth[np.isfinite(depth) & (depth > 0)]
    depth_max = float(valid.max()) if valid.size else 0.0
    for t in range(len(depth)):
        write_png(out_dir / "depth" / f"{t:04d}.png", depth_to_uint16(depth[t], depth_max))
    write_npz(out_dir / "depth.npz", depth=depth, confidence=confidence, depth_max=np.float32(depth_max))
    write_ply(out_dir / "points.ply", cloud["xyz"], cloud["rgb"])
    write_json(out_dir / "trajectory.json", {
        "convention": "T_wc camera-to-world 4x4, frame 0's camera is the world; OpenCV axes (+x right, +y down, "
                      "+z forward); K in pixels of the S x S network input; xyz up to one scale per clip",
        "image_size": scene.image_size, "original_size": list(scene.original_size), "depth_max": depth_max,
        "T_wc": T_wc.round(8).tolist(), "K": K.round(6).tolist(),
    })
    write_npz(out_dir / "tracks.npz", uv=track_uv, t_src=np.int32(0), **tracks)
    preview = True
    try:
        write_preview(out_dir / "preview.png", scene.frames, depth, T_wc)
    except ImportError:
        preview = False  # matplotlib is optional for the runtime
    summary = {
        "backend": rt.name, "frames": scene.num_frames, "image_size": scene.image_size,
        "original_size": list(scene.original_size), "aspect_ratio": scene.aspect_ratio,
        "depth_queries": int(depth.size), "cloud_points": int(len(cloud["xyz"])), "tracks": int(len(track_uv)),
        "preview": preview, "timings": timings,
    }
    write_json(out_dir / "summary.json", summary)
    return summary

