"""Camera poses from a grid of queries: the confidence-weighted rigid Umeyama against the unweighted one
(OpenD4RT's released code, the runtime's), scored by ATE and RPE after Sim(3) on held-out synthetic clips.

    python benchmarks/pose_weighting.py --ckpt checkpoints/tiny-synthetic --clips runs/test20 --grid 16

Both fits use the very same query answers per clip (one encode, one decode); only the weights differ. Prints one
row per clip and the means; writes benchmarks/results/<date>-pose-weighting.json (rewritten after every clip).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> int:
    from d4rt.benchmarking import run_record
    from d4rt.data.datamodule import find_clips
    from d4rt.data.dataset import D4RTDataset
    from d4rt.evaluation.evaluate import load_model, model_runtime
    from d4rt.evaluation.metrics import camera_ate, camera_rpe
    from d4rt.runtime.files import write_text_atomic
    from d4rt.runtime.geometry import grid_uv, poses_from_grid_points

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", type=Path, required=True, help="save_pretrained directory")
    p.add_argument("--clips", type=Path, required=True, help="folder of held-out clip .npz files")
    p.add_argument("--grid", type=int, default=16, help="pose query grid (n x n)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/<date>-...)")
    args = p.parse_args()

    model = load_model(args.ckpt)
    cfg = model.config
    paths = find_clips(args.clips)
    dataset = D4RTDataset(paths, cfg.num_frames, cfg.image_size, num_queries=1, fixed_queries=True)
    record = run_record()
    out = args.out or Path("benchmarks/results") / f"{record['date'][:10]}-pose-weighting.json"
    result = {"run": record, "grid": args.grid, "rows": [], "mean": {}}
    uv = grid_uv(args.grid)
    G, T = len(uv), cfg.num_frames
    print(f"{'clip':22s} {'ATE w':>8s} {'ATE u':>8s} {'RPE-t w':>8s} {'RPE-t u':>8s} {'RPE-r w':>8s} {'RPE-r u':>8s}")
    for i, path in enumerate(paths):
        item = dataset[i]
        rt = model_runtime(model, T)
        scene = rt.encode(item["video"].float().permute(0, 2, 3, 1).numpy(), aspect_ratio=float(item["aspect_ratio"]))
        tt = np.repeat(np.arange(1, T), G)
        res = rt.query(scene, np.tile(uv, (2 * (T - 1), 1)), np.tile(tt, 2), np.tile(tt, 2),
                       np.concatenate([np.zeros_like(tt), tt]))
        xyz = res["xyz"].reshape(2, T - 1, G, 3)
        conf = res["confidence"].reshape(2, T - 1, G).astype(np.float64)
        gt = item["T_wc"].numpy().astype(np.float64)
        w_all = conf[0] * conf[1]
        row = {"clip": path.name, "weight_spread": float(w_all.max() / max(w_all.min(), 1e-12)),
               "weight_cv": float(w_all.std() / w_all.mean())}
        for tag, w in (("weighted", w_all), ("unweighted", None)):
            poses = poses_from_grid_points(xyz[1], xyz[0], weights=w)
            rpe = camera_rpe(poses, gt)
            row[tag] = {"ate": camera_ate(poses, gt)["ate"], **rpe}
        result["rows"].append(row)
        w, u = row["weighted"], row["unweighted"]
        print(f"{path.name:22s} {w['ate']:8.4f} {u['ate']:8.4f} {w['rpe_trans']:8.4f} {u['rpe_trans']:8.4f} "
              f"{w['rpe_rot_deg']:8.3f} {u['rpe_rot_deg']:8.3f}   weights max/min {row['weight_spread']:.3g}, "
              f"cv {row['weight_cv']:.3g}")
        result["mean"] = {tag: {k: float(np.mean([r[tag][k] for r in result["rows"]])) for k in w}
                          for tag in ("weighted", "unweighted")}
        result["max_abs_difference"] = {
            k: float(max(abs(r["weighted"][k] - r["unweighted"][k]) for r in result["rows"])) for k in w}
        write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    m = result["mean"]
    w, u = m["weighted"], m["unweighted"]
    print(f"{'mean':22s} {w['ate']:8.4f} {u['ate']:8.4f} {w['rpe_trans']:8.4f} {u['rpe_trans']:8.4f} "
          f"{w['rpe_rot_deg']:8.3f} {u['rpe_rot_deg']:8.3f}")
    print(f"largest per-clip difference: {result['max_abs_difference']} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
