"""Occupancy benchmark on the CPU, from analytic scenes (no model involved):

1. speed: ray casting a 48-frame 256 x 256 clip of a room at voxel 0.05 (and the temporal modes, the npz),
   medians over repeats, the warm-up run excluded;
2. the static-map gap: per-frame grids against one union over the clip (L3ROcc's static approach) and its sliding
   window, on rooms with moving boxes, with exact point maps and with noise added to them (standing in for
   prediction error), scored against ground-truth grids, overall and on the voxels the boxes sweep through.

Prints two tables and writes JSON (default benchmarks/results/occupancy_cpu.json).
    python benchmarks/occupancy.py [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from d4rt.runtime.files import write_text_atomic  # noqa: E402
from d4rt.benchmarking import run_record  # noqa: E402
from d4rt.occupancy.grid import ground_truth_occupancy, occupancy_from_point_maps  # noqa: E402
from d4rt.occupancy.io import load_occupancy, save_occupancy  # noqa: E402
from d4rt.occupancy.metrics import occupancy_scores  # noqa: E402
from d4rt.occupancy.temporal import smooth_occupancy, static_map, window_union  # noqa: E402
from tests.occupancy_scenes import intrinsics, pose, render_clip, rotation_y  # noqa: E402

ROOM = [(1, 1.2), (2, 6.0), (0, -3.0), (0, 3.0)]  # floor (y down), back wall, side walls


def room_clip(rng, frames: int, size: int, speed: float = 0.04):
    """A camera walking into a room while turning; two boxes move (one across, one towards the camera).

    Returns K, T_wc [T, 4, 4], xyz_cam [T, S, S, 3] (NaN: no hit), depth [T, S, S], boxes_per_frame.
    """
    K = intrinsics(size, 0.8 * size)
    T_wc = np.stack([pose(rotation_y(0.004 * t), (0.0, 0.0, 0.01 * t)) for t in range(frames)])
    a0 = np.array([[-1.6, 0.2, 2.6], [-1.0, 1.2, 3.2]]) + rng.uniform(-0.05, 0.05, (2, 3))
    b0 = np.array([[0.6, 0.5, 4.6], [1.2, 1.2, 5.2]]) + rng.uniform(-0.05, 0.05, (2, 3))
    boxes = [
        [(a0[0] + [speed * t, 0, 0], a0[1] + [speed * t, 0, 0]), (b0[0] - [0, 0, speed * t], b0[1] - [0, 0, speed * t])]
        for t in range(frames)
    ]
    xyz_cam, depth = render_clip(K, T_wc, size, boxes, ROOM)
    return K, T_wc, xyz_cam, depth, boxes


def swept_region(grid, boxes_per_frame) -> np.ndarray:
    """Flat indices of the voxels whose centres lie inside a moving box at some frame."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1).reshape(-1, 3)
    centres = grid.origin + (ijk + 0.5) * grid.voxel_size
    inside = np.zeros(len(ijk), bool)
    for boxes in boxes_per_frame:
        for lo, hi in boxes:
            inside |= ((centres >= lo - grid.voxel_size) & (centres <= hi + grid.voxel_size)).all(1)
    return np.flatnonzero(inside)


def median_time(fn, repeats: int) -> tuple[dict, object]:
    """Median wall and CPU seconds of fn() over repeats, after one warm-up call (excluded)."""
    result = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"wall_s": float(np.median(wall)), "cpu_s": float(np.median(cpu))}, result


def speed(repeats: int, frames: int = 48, size: int = 256, voxel: float = 0.05) -> dict:
    rng = np.random.default_rng(0)
    K, T_wc, xyz_cam, _, _ = room_clip(rng, frames, size)
    valid = np.isfinite(xyz_cam[..., 0]).astype(np.float64)
    xyz = np.nan_to_num(xyz_cam)
    steps = {}
    steps["ray casting"], occ = median_time(lambda: occupancy_from_point_maps(xyz, T_wc, K, valid, voxel), repeats)
    steps["smoothing (lambda 1)"], _ = median_time(lambda: smooth_occupancy(occ, 1.0), repeats)
    steps["sliding-window union (W 10)"], _ = median_time(lambda: window_union(occ, 10), repeats)
    steps["static map"], _ = median_time(lambda: static_map(occ), repeats)
    with tempfile.TemporaryDirectory() as tmp:
        steps["save npz"], path = median_time(lambda: save_occupancy(Path(tmp) / "occ.npz", occ), repeats)
        steps["load npz"], _ = median_time(lambda: load_occupancy(path), repeats)
        npz_mb = path.stat().st_size / 2**20
    counts = occ.counts()
    return {
        "frames": frames,
        "size": size,
        "voxel": voxel,
        "grid_shape": list(occ.grid.shape),
        "rays_per_frame": int(valid[0].sum()),
        "mean_occupied": float(counts[:, 0].mean()),
        "mean_free": float(counts[:, 1].mean()),
        "steps": steps,
        "npz_mb": npz_mb,
        "repeats": repeats,
    }


def static_gap(frames: int = 24, size: int = 128, voxel: float = 0.05, scenes: int = 3) -> list[dict]:
    rows = []
    for noise_voxels in (0.0, 0.5, 1.0):
        acc: dict[str, list] = {}
        for seed in range(scenes):
            rng = np.random.default_rng(seed)
            K, T_wc, xyz_cam, depth, boxes = room_clip(rng, frames, size)
            gt = ground_truth_occupancy(depth, K, T_wc, voxel)
            valid = np.isfinite(xyz_cam[..., 0]).astype(np.float64)
            xyz = np.nan_to_num(xyz_cam) + rng.normal(scale=noise_voxels * voxel, size=xyz_cam.shape)
            pred = occupancy_from_point_maps(xyz, T_wc, K, valid, voxel, grid=gt.grid)
            region = swept_region(gt.grid, boxes)
            methods = {
                "per-frame (ours)": pred,
                "per-frame + smoothing (lambda 2)": smooth_occupancy(pred, 2.0),
                "sliding-window union (W 5)": window_union(pred, 5),
                "static map (union over clip)": static_map(pred),
            }
            for name, occ in methods.items():
                all_s = occupancy_scores(occ, gt)
                moving = occupancy_scores(occ, gt, region)
                acc.setdefault(name, []).append(
                    [all_s.clip["iou"], all_s.clip["f_score"], moving.clip["iou"], moving.clip["f_score"]]
                )
        for name, values in acc.items():
            iou, f, m_iou, m_f = np.mean(values, 0)
            rows.append(
                {
                    "noise_voxels": noise_voxels,
                    "method": name,
                    "iou": iou,
                    "f_score": f,
                    "moving_iou": m_iou,
                    "moving_f_score": m_f,
                    "scenes": scenes,
                    "frames": frames,
                    "size": size,
                    "voxel": voxel,
                }
            )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "occupancy_cpu.json"))
    args = p.parse_args()

    s = speed(args.repeats)
    print(
        f"\nspeed: {s['frames']} frames x {s['size']}^2 rays at voxel {s['voxel']}, grid {s['grid_shape']} "
        f"(median of {s['repeats']}, warm-up excluded)"
    )
    print(f"{'step':28s} {'wall s':>8s} {'CPU s':>8s}")
    for name, t in s["steps"].items():
        print(f"{name:28s} {t['wall_s']:8.2f} {t['cpu_s']:8.2f}")
    print(
        f"{s['rays_per_frame']} rays, {s['mean_occupied']:.0f} occupied and {s['mean_free']:.0f} free voxels per "
        f"frame; npz {s['npz_mb']:.1f} MB"
    )

    rows = static_gap()
    print(
        f"\nstatic-map gap ({rows[0]['scenes']} rooms x {rows[0]['frames']} frames, {rows[0]['size']}^2, "
        f"voxel {rows[0]['voxel']}; clip IoU / F over the observed region, and over the moving boxes' voxels)"
    )
    print(f"{'noise':>6s} {'method':34s} {'IoU':>6s} {'F':>6s} {'moving IoU':>11s} {'moving F':>9s}")
    for r in rows:
        print(
            f"{r['noise_voxels']:6.1f} {r['method']:34s} {r['iou']:6.3f} {r['f_score']:6.3f} "
            f"{r['moving_iou']:11.3f} {r['moving_f_score']:9.3f}"
        )

    result = {
        **run_record(),
        "speed": s,
        "static_gap": rows,
    }
    write_text_atomic(args.out, json.dumps(result, indent=1))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
