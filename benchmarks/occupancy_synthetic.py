"""Occupancy on synthetic scenes with moving objects, scored against exact ground truth.

Clips: the bundled sample clip (assets/sample_clip.mp4, seed 2,000,100) and held-out synthetic scenes (seeds
2,000,000.., never seen in training), 16 frames each; 2 to 6 spheres and boxes move and spin in every room. Ground
truth: the renderer's depth maps at the network input (128 x 128), unprojected with K, posed with T_wc expressed in
frame 0's camera, voxelised at --voxel with the rule of d4rt.occupancy.grid (the rows below use the same rule).

Rows (point maps, poses, alignment), each as per-frame grids and as the static map (one union over the clip,
L3ROcc's approach):
- (a) ground-truth point maps, exact (the upper bound) and with log-normal depth noise (depth * exp(sigma n));
- (b) the bundled tiny-synthetic model through the runtime (one query per input pixel, t_src = t_tgt = t_cam = t):
  D4RT is up to one scale per clip, so it is aligned to the ground truth first: the median depth ratio with the
  ground-truth poses, the median depth ratio with its own poses (rt.camera_poses), or a Sim(3) Umeyama fit of its
  posed point maps onto the ground truth's (d4rt.occupancy.metrics.align_to_ground_truth).
Scores (d4rt.occupancy.metrics): IoU and F of occupied voxels over each frame's observed region, pooled over
the clip; the mean per-frame IoU; the same over the "moving" voxels (those holding a moving object's surface at some
frame); F with a 1-voxel tolerance. Means over clips. Prints Markdown, writes JSON + Markdown to
benchmarks/results/<date>-<device>-occupancy-synthetic.{json,md} (date, machine, commit, command, per-frame scores).

    python benchmarks/occupancy_synthetic.py [--export DIR] [--scenes 4] [--voxel 0.1] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from d4rt.data.synthetic import Room, invert_rigid, read_clip
from d4rt.occupancy.grid import (
    dense_point_maps,
    intrinsics_from_point_maps,
    occupancy_from_point_maps,
    point_maps_from_depth,
)
from d4rt.occupancy.metrics import (
    align_to_ground_truth,
    occupancy_scores,
    tolerant_f_score,
    world_points,
)
from d4rt.occupancy.temporal import static_map
from d4rt.evaluation.metrics import camera_ate, depth_metrics
from report import environment, markdown_table, write_results  # benchmarks/report.py (this script's folder)

SAMPLE_CLIP, SAMPLE_GT = ROOT / "assets" / "sample_clip.mp4", ROOT / "assets" / "sample_clip_gt.npz"
CHECKPOINT = ROOT / "checkpoints" / "tiny-synthetic"
HELD_OUT_SEED = 2_000_000  # the held-out range of the training issue (d4rt.data.synthetic.TEST_SEED_BASE)
VIDEO_WIDTH = 256  # held-out clips are rendered at their own aspect ratio, as a user's video, then resized
NOISE_LEVELS = (0.01, 0.05, 0.2)
METHODS = {"per-frame": lambda occ: occ, "static map": static_map}


def clips(num_held_out: int, num_frames: int, image_size: int):
    """(name, video: a path or frames [T, H, W, 3] uint8, ground-truth Clip at the network input S x S)."""
    sample = read_clip(SAMPLE_GT, normals=False)
    if sample.rgb.shape[:3] != (num_frames, image_size, image_size):
        raise ValueError(
            f"{SAMPLE_GT} is {sample.rgb.shape[:3]}, the engines take {num_frames} x {image_size}^2: "
            "export checkpoints/tiny-synthetic without --frames"
        )
    yield "sample_clip (seed 2000100)", SAMPLE_CLIP, sample
    for seed in range(HELD_OUT_SEED, HELD_OUT_SEED + num_held_out):
        scene = Room.random(seed, num_frames=num_frames)
        height = round(VIDEO_WIDTH / scene.aspect)
        yield f"seed {seed}", scene.render_clip(height, VIDEO_WIDTH).rgb, scene.render_clip(image_size, image_size)


def ground_truth(clip, voxel: float) -> dict:
    """Point maps, poses (world = frame 0's camera), occupancy and the moving objects' voxels of a clip."""
    T_wc = invert_rigid(clip.T_wc[0]) @ clip.T_wc
    xyz_cam, valid = point_maps_from_depth(clip.depth, clip.K)
    occ = occupancy_from_point_maps(xyz_cam, T_wc, clip.K, valid.astype(np.float64), voxel)
    moving_points = world_points(xyz_cam, T_wc)[valid & (clip.instance > 0)]
    ijk = np.floor(occ.grid.to_grid_coords(moving_points)).astype(np.int64)  # inside: the grid covers every point
    return {"T_wc": T_wc, "xyz_cam": xyz_cam, "valid": valid, "occ": occ, "moving": np.unique(occ.grid.flat_index(ijk))}


def score(pred, gt: dict) -> dict[str, dict]:
    """Scores of per-frame grids and of the static map built from the same prediction."""
    out = {}
    for method, make in METHODS.items():
        occ = make(pred)
        every = occupancy_scores(occ, gt["occ"])
        moving = occupancy_scores(occ, gt["occ"], gt["moving"])
        out[method] = {
            "iou": every.clip["iou"],
            "f_score": every.clip["f_score"],
            "mean_frame_iou": float(np.nanmean(every.iou)),
            "moving_iou": moving.clip["iou"],
            "frame_moving_iou": moving.iou.tolist(),
            "moving_f_score": moving.clip["f_score"],
            "f_score_1voxel": tolerant_f_score(occ, gt["occ"], 1)["clip"]["f_score"],
            "frame_iou": every.iou.tolist(),
            "frame_f_score": every.f_score.tolist(),
            "precision": every.clip["precision"],
            "recall": every.clip["recall"],
        }
    return out


def ground_truth_rows(clip, gt: dict, voxel: float, rng) -> dict[tuple, dict]:
    rows = {}
    for sigma in (0.0, *NOISE_LEVELS):
        depth = clip.depth * np.exp(sigma * rng.standard_normal(clip.depth.shape))
        xyz_cam, valid = point_maps_from_depth(depth, clip.K)
        pred = occupancy_from_point_maps(xyz_cam, gt["T_wc"], clip.K, valid.astype(float), voxel, grid=gt["occ"].grid)
        name = "ground truth" if sigma == 0 else f"ground truth, depth noise {sigma:.0%}"
        rows[(name, "ground truth", "none")] = {
            "abs_rel": depth_metrics(depth, clip.depth)["abs_rel"],
            "scores": score(pred, gt),
        }
    return rows


def model_rows(rt, video, clip, gt: dict, voxel: float) -> tuple[dict[tuple, dict], dict]:
    t0 = time.perf_counter()
    scene = rt.encode(video)
    xyz_cam, confidence, uv = dense_point_maps(rt, scene, progress=False)
    T_wc = rt.camera_poses(scene)
    seconds = time.perf_counter() - t0
    if xyz_cam.shape != gt["xyz_cam"].shape:
        raise ValueError(f"the model's point maps are {xyz_cam.shape}, the ground truth's {gt['xyz_cam'].shape}")
    K = intrinsics_from_point_maps(xyz_cam, uv, scene.image_size)
    confident = confidence >= 0.5
    fit = gt["valid"] & confident
    depth = depth_metrics(xyz_cam[..., 2], clip.depth, gt["valid"])
    info = {
        "abs_rel": depth["abs_rel"],
        "delta_1.25": depth["delta_1.25"],
        "camera_ate": camera_ate(T_wc, gt["T_wc"])["ate"],
        "confident_fraction": float(confident.mean()),
        "focal_px": [float(K[:, 0, 0].mean()), float(K[:, 1, 1].mean())],
        "focal_px_gt": [float(clip.K[0, 0]), float(clip.K[1, 1])],
        "queries_and_poses_s": seconds,
    }
    variants = {
        ("tiny-synthetic", "ground truth", "median depth"): ("median", True),
        ("tiny-synthetic", "predicted", "median depth"): ("median", False),
        ("tiny-synthetic", "predicted", "Sim(3)"): ("sim3", False),
    }
    rows = {}
    for key, (method, gt_poses) in variants.items():
        xyz, poses, sim = align_to_ground_truth(xyz_cam, T_wc, gt["xyz_cam"], gt["T_wc"], fit, method)
        if gt_poses:  # the scaled point maps, posed by the ground truth
            poses = gt["T_wc"]
        pred = occupancy_from_point_maps(xyz, poses, K, confidence, voxel, grid=gt["occ"].grid)
        rows[key] = {"abs_rel": info["abs_rel"], "scale": sim["scale"], "scores": score(pred, gt)}
    return rows, info


def export_engines(directory: Path) -> Path:
    from d4rt.cli import main as d4rt

    if d4rt(["export", str(CHECKPOINT), "--out", str(directory)]) != 0:
        raise RuntimeError(f"exporting {CHECKPOINT} failed")
    return directory


def mean_rows(per_clip: list[dict]) -> list[dict]:
    """Average every row's scores over clips (clip-pooled ratios, then the mean over clips)."""
    table = []
    for key in per_clip[0]["rows"]:
        rows = [clip["rows"][key] for clip in per_clip]
        for method in METHODS:
            scores = [r["scores"][method] for r in rows]
            table.append(
                {
                    "points": key[0],
                    "poses": key[1],
                    "alignment": key[2],
                    "method": method,
                    "abs_rel": float(np.mean([r["abs_rel"] for r in rows])),
                    **{k: float(np.nanmean([s[k] for s in scores])) for k in COLUMNS},
                }
            )
    return table


COLUMNS = ("iou", "f_score", "mean_frame_iou", "moving_iou", "moving_f_score", "f_score_1voxel")


def markdown(table: list[dict]) -> str:
    header = ["point maps", "poses", "alignment", "depth AbsRel", "grids", "IoU", "F", "frame IoU", "moving IoU",
              "moving F", "F (1 voxel)"]  # fmt: skip
    rows = [
        [r["points"], r["poses"], r["alignment"], f"{r['abs_rel']:.3f}", r["method"], *(f"{r[k]:.3f}" for k in COLUMNS)]
        for r in table
    ]
    return markdown_table(header, rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--export",
        type=Path,
        default=None,
        help="an export folder of checkpoints/tiny-synthetic (default: `d4rt export` it into a temporary folder)",
    )
    p.add_argument("--backend", default="auto", help="runtime backend (auto, onnxruntime-cpu, tensorrt, ...)")
    p.add_argument("--scenes", type=int, default=4, help="held-out synthetic scenes beside the sample clip")
    p.add_argument("--voxel", type=float, default=0.1, help="voxel edge in scene units (the rooms' units ~ metres)")
    p.add_argument("--seed", type=int, default=0, help="seed of the depth noise")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    args = p.parse_args()

    from tqdm import tqdm

    from d4rt.runtime import load

    with tempfile.TemporaryDirectory(prefix="d4rt-occupancy-") as tmp:
        engines = args.export or export_engines(Path(tmp) / "export")
        rt = load(engines, backend=args.backend)
        rng = np.random.default_rng(args.seed)
        per_clip = []
        all_clips = clips(args.scenes, rt.num_frames, rt.image_size)
        for name, video, clip in tqdm(all_clips, desc="clips", unit="clip", total=args.scenes + 1):
            gt = ground_truth(clip, args.voxel)
            rows = ground_truth_rows(clip, gt, args.voxel, rng)
            model, info = model_rows(rt, video, clip, gt, args.voxel)
            rows.update(model)
            counts = gt["occ"].counts()
            per_clip.append(
                {
                    "clip": name,
                    "objects": len(clip.room.objects),
                    "grid_shape": list(gt["occ"].grid.shape),
                    "gt_occupied_per_frame": float(counts[:, 0].mean()),
                    "gt_free_per_frame": float(counts[:, 1].mean()),
                    "moving_voxels": int(gt["moving"].size),
                    "model": info,
                    "rows": rows,
                }
            )

    table = mean_rows(per_clip)
    model = "; ".join(
        f"{c['clip']}: AbsRel {c['model']['abs_rel']:.3f}, camera ATE {c['model']['camera_ate']:.2f}" for c in per_clip
    )
    text = (
        f"{len(per_clip)} clips x {rt.num_frames} frames at {rt.image_size}^2, voxel {args.voxel:g}, backend "
        f"{rt.name}; clip scores (counts pooled over frames), mean over clips\n\n{markdown(table)}\n\n"
        f"the model per clip: {model}"
    )
    print("\n" + text)

    env = environment("cuda" if "cuda" in rt.name or "tensorrt" in rt.name else "cpu")
    env["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, numpy {np.__version__}"
    payload = {
        "backend": rt.name,
        "voxel": args.voxel,
        "frames": rt.num_frames,
        "image_size": rt.image_size,
        "noise_levels": list(NOISE_LEVELS),
        "table": table,
        "clips": [
            {**c, "rows": [{"points": k[0], "poses": k[1], "alignment": k[2], **v} for k, v in c["rows"].items()]}
            for c in per_clip
        ],
    }
    path = write_results("occupancy-synthetic", env, payload, text, args.out)
    print(f"\nwrote {path} (+ .md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
