"""Camera poses from a grid of queries, three estimators on the very same answers, scored by ATE and RPE after
Sim(3) on held-out synthetic clips: the house's one estimator (``align_sim3``: the 85 % most confident pairs, then
trimmed refits; what Runtime.camera_poses, VideoScene, the server and `d4rt evaluate` use), the confidence-weighted
rigid Umeyama, and the unweighted one (OpenD4RT's released code).

    python benchmarks/pose_weighting.py --ckpt checkpoints/tiny-synthetic --clips runs/test20 --grid 16

All fits use the very same query answers per clip (one encode, one decode). Prints one row per clip and the means; writes benchmarks/results/<date>-pose-weighting.json (rewritten after every clip).
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
    from d4rt.runtime.geometry import grid_uv, poses_from_grid_points, rigid, umeyama

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
    tags = ("house", "weighted", "unweighted")

    def umeyama_poses(own, first, weights):
        fits = [umeyama(own[j], first[j], with_scale=False, weights=None if weights is None else weights[j])
                for j in range(len(own))]
        return np.concatenate([np.eye(4)[None], np.stack([rigid(R, t) for _, R, t in fits])])

    print(f"{'clip':22s} " + " ".join(f"{'ATE ' + k[0]:>8s}" for k in tags) + " "
          + " ".join(f"{'RPE-t ' + k[0]:>8s}" for k in tags) + " " + " ".join(f"{'RPE-r ' + k[0]:>8s}" for k in tags))
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
        estimates = {"house": poses_from_grid_points(xyz[1], xyz[0], w_all),
                     "weighted": umeyama_poses(xyz[1], xyz[0], w_all), "unweighted": umeyama_poses(xyz[1], xyz[0], None)}
        for tag, poses in estimates.items():
            row[tag] = {"ate": camera_ate(poses, gt)["ate"], **camera_rpe(poses, gt)}
        result["rows"].append(row)

        def line(name, r):
            return (f"{name:22s} " + " ".join(f"{r[k]['ate']:8.4f}" for k in tags) + " "
                    + " ".join(f"{r[k]['rpe_trans']:8.4f}" for k in tags) + " "
                    + " ".join(f"{r[k]['rpe_rot_deg']:8.3f}" for k in tags))

        print(line(path.name, row) + f"   weights max/min {row['weight_spread']:.3g}, cv {row['weight_cv']:.3g}")
        keys = row["house"].keys()
        result["mean"] = {tag: {k: float(np.mean([r[tag][k] for r in result["rows"]])) for k in keys} for tag in tags}
        result["max_abs_difference_house_vs_unweighted"] = {
            k: float(max(abs(r["house"][k] - r["unweighted"][k]) for r in result["rows"])) for k in keys}
        write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    print(line("mean", result["mean"]))
    print(f"largest per-clip difference, house vs unweighted: {result['max_abs_difference_house_vs_unweighted']} "
          f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
