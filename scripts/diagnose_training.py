"""Does a checkpoint read the video? Baselines, decoder attention and a token-depth probe (d4rt/evaluation/diagnostics.py).

    python scripts/diagnose_training.py --ckpt checkpoints/tiny-synthetic --clips runs/test20 [--json out.json]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    from d4rt.data.datamodule import find_clips
    from d4rt.data.dataset import D4RTDataset
    from d4rt.evaluation.diagnostics import decoder_attention, token_depth_probe, video_blind_baselines
    from d4rt.runtime.files import write_text_atomic
    from d4rt.evaluation.evaluate import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", type=Path, help="save_pretrained directory or Lightning .ckpt (default: untrained)")
    p.add_argument("--preset", default="tiny", help="with no --ckpt: the untrained preset")
    p.add_argument("--img_size", type=int, default=128, help="with no --ckpt: its input size")
    p.add_argument("--clips", type=Path, required=True, help="a folder of clip .npz files (at least 4)")
    p.add_argument("--max_clips", type=int, default=20)
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args()

    model = load_model(args.ckpt, args.preset, 0, args.img_size if args.ckpt is None else None).float()
    cfg = model.config
    paths = find_clips(args.clips)[: args.max_clips]
    if len(paths) < 4:
        raise SystemExit(f"{args.clips} holds {len(paths)} clips; the probe needs at least 4 (fit on 3/4, score 1/4)")
    dataset = D4RTDataset(paths, cfg.num_frames, cfg.image_size, num_queries=1, fixed_queries=True)
    items = [dataset[i] for i in range(len(paths))]
    videos = [item["video"][None] for item in items]
    depths = [item["depth_maps"].numpy().astype(np.float64) for item in items]

    baselines = video_blind_baselines(depths, cfg.tubelet)
    attention = decoder_attention(model, videos[0])
    probe = token_depth_probe(model, videos, depths, train_clips=len(paths) * 3 // 4)

    print(f"{len(paths)} clips from {args.clips}; model {args.ckpt or 'untrained ' + args.preset}")
    print("\ndepth AbsRel of video-blind baselines and coarse oracles (median-scaled):")
    for k, v in baselines.items():
        print(f"  {k:22s} {v:.3f}")
    print(f"\ntoken-depth probe on the encoder memory (held-out clips): AbsRel {probe:.3f}")
    print("\ndecoder attention at token centres (mean weights; uniform = 1 / M):")
    print("  block head    max    own  uniform")
    for r in attention:
        print(f"  {r['block']:5d} {r['head']:4d} {r['max']:6.4f} {r['own']:6.4f} {r['uniform']:8.4f}")
    if args.json:
        report = {"ckpt": str(args.ckpt), "clips": [str(p) for p in paths], "baselines": baselines,
                  "token_depth_probe_abs_rel": probe, "decoder_attention": attention}
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
        print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
