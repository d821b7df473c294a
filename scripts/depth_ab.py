"""Held-out depth of several checkpoints side by side: the A/B table of docs/training.md.

    python scripts/depth_ab.py --clips runs/data/test checkpoints/tiny-synthetic runs/ab-token/pretrained \
        [--json benchmarks/results/training_ab.json]

For each checkpoint and clip: depth (z) of every ``--stride``-th pixel of every frame (t_src = t_tgt = t_cam, the
runtime's torch backend), depth AbsRel after per-clip and after per-frame median scaling
(:func:`d4rt.evaluation.metrics.depth_metrics`, monodepth2's clamp and valid pixels), and the best constant depth
of the clip and of each frame (a constant is scale-free). Means over clips.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def clip_depth_scores(model, item, stride: int) -> dict[str, float]:
    from d4rt.evaluation.evaluate import depth_grid, model_runtime, predict_depth
    from d4rt.evaluation.metrics import best_constant_depth_abs_rel, depth_metrics

    rt = model_runtime(model, item["video"].shape[0])
    scene = rt.encode(item["video"].float().permute(0, 2, 3, 1).numpy(), aspect_ratio=float(item["aspect_ratio"]))
    uv, (ys, xs) = depth_grid(item["video"].shape[-1], stride)
    depth = predict_depth(rt, scene, uv, 8192).reshape(len(item["video"]), *ys.shape)
    gt = item["depth_maps"].numpy()[:, ys, xs].astype(np.float64)
    return {
        "abs_rel_clip": depth_metrics(depth, gt, scaling="clip_median")["abs_rel"],
        "abs_rel_frame": depth_metrics(depth, gt, scaling="frame_median")["abs_rel"],
        "best_constant_clip": best_constant_depth_abs_rel(gt),
        "best_constant_frame": float(np.mean([best_constant_depth_abs_rel(g) for g in gt])),
    }


def main() -> int:
    from d4rt.data.datamodule import find_clips
    from d4rt.data.dataset import D4RTDataset
    from d4rt.evaluation.evaluate import load_model
    from d4rt.runtime.files import write_text_atomic

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ckpts", nargs="+", type=Path, help="save_pretrained folders or Lightning .ckpt files")
    p.add_argument("--clips", type=Path, required=True, help="folder of held-out clip .npz files")
    p.add_argument("--max-clips", type=int, default=20, help="use the first this many clips")
    p.add_argument("--stride", type=int, default=4, help="depth at every n-th pixel")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args()
    paths = find_clips(args.clips)[: args.max_clips]
    rows = {}
    for ckpt in args.ckpts:
        model = load_model(ckpt, "tiny", 0).float().eval()
        cfg = model.config
        dataset = D4RTDataset(paths, cfg.num_frames, cfg.image_size, num_queries=1, fixed_queries=True)
        per_clip = [clip_depth_scores(model, dataset[i], args.stride) for i in range(len(paths))]
        mean = {k: float(np.mean([c[k] for c in per_clip])) for k in per_clip[0]}
        rows[str(ckpt)] = {"mean": mean, "per_clip": per_clip}
        print(f"{str(ckpt):60s} AbsRel clip {mean['abs_rel_clip']:.4f} (constant {mean['best_constant_clip']:.4f}, "
              f"{mean['best_constant_clip'] / mean['abs_rel_clip']:.2f}x)  frame {mean['abs_rel_frame']:.4f} "
              f"(constant {mean['best_constant_frame']:.4f}, {mean['best_constant_frame'] / mean['abs_rel_frame']:.2f}x)",
              flush=True)
    if args.json:
        from d4rt.benchmarking import run_record

        write_text_atomic(args.json, json.dumps({"run": run_record(), "clips": [str(p) for p in paths],
                                                 "stride": args.stride, "checkpoints": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
