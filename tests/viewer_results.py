"""A ``d4rt infer`` results folder written from a ground-truth clip (assets/sample_clip_gt.npz) with the project's
own writers: what the model would write if it were exact. Torch-free and a second to make, for the viewer tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from d4rt.data.synthetic import read_clip
from d4rt.runtime.geometry import grid_uv, invert_rigid
from d4rt.runtime.outputs import depth_to_uint16, write_json, write_npz, write_ply, write_png

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_GT = ROOT / "assets" / "sample_clip_gt.npz"


def write_result(out_dir: Path, frames: int = 8, cloud_grid: int = 48, track_grid: int = 8) -> Path:
    """The first ``frames`` frames of the sample clip as a results folder: frames/, depth.npz, points.npz,
    points.ply, trajectory.json (world = frame 0's camera), tracks.npz (a track_grid^2 grid of frame-0 pixels),
    summary.json. Returns out_dir."""
    clip = read_clip(SAMPLE_GT, normals=False)
    F = min(frames, clip.num_frames)
    S = clip.rgb.shape[1]
    names = np.arange(F)
    rgb, depth = clip.rgb[:F], clip.depth[:F].astype(np.float32)
    T_wc = np.stack([invert_rigid(clip.T_wc[0]) @ clip.T_wc[t] for t in range(F)])
    K = np.repeat(clip.K[None], F, 0)

    uv = grid_uv(cloud_grid).astype(np.float64)
    n = len(uv)
    t = np.repeat(np.arange(F), n)
    cloud = clip.query(np.tile(uv, (F, 1)), t, t, np.zeros_like(t))
    pix = np.rint(np.tile(uv, (F, 1)) * (S - 1)).astype(int)
    points = {"xyz": cloud["xyz_cam"].astype(np.float32), "rgb": rgb[t, pix[:, 1], pix[:, 0]],
              "confidence": np.ones(len(t), np.float32), "frame": t}

    track_uv = grid_uv(track_grid).astype(np.float64)
    Q = len(track_uv)
    tt = np.tile(np.arange(F), Q)
    tracks = clip.query(np.repeat(track_uv, F, 0), np.zeros_like(tt), tt, np.zeros_like(tt))
    track_xyz = tracks["xyz_cam"].reshape(Q, F, 3).astype(np.float32)
    visibility = tracks["visible"].reshape(Q, F).astype(np.float32)

    depth_max = float(depth[depth > 0].max())
    for i in names:
        write_png(out_dir / "depth" / f"{i:04d}.png", depth_to_uint16(depth[i], depth_max))
        write_png(out_dir / "frames" / f"{i:04d}.png", rgb[i])
    write_npz(out_dir / "depth.npz", depth=depth, confidence=np.ones_like(depth), depth_max=np.float32(depth_max),
              source_frames=names)
    write_ply(out_dir / "points.ply", points["xyz"], points["rgb"])
    write_npz(out_dir / "points.npz", **points)
    H, W = 192, 256  # the sample clip's video
    write_json(out_dir / "trajectory.json", {
        "image_size": S, "original_size": [H, W], "depth_max": depth_max, "source_frames": names.tolist(),
        "windows": [[0, F - 1]], "T_wc": T_wc.round(8).tolist(), "K": K.round(6).tolist()})
    write_npz(out_dir / "tracks.npz", uv=track_uv.astype(np.float32), t_src=np.int32(0), source_frames=names,
              xyz=track_xyz, visibility=visibility)
    write_json(out_dir / "summary.json", {"backend": "ground truth", "frames": F, "first_frame": 0,
                                          "last_frame": F - 1, "cloud_points": int(len(t)), "tracks": Q})
    return out_dir
