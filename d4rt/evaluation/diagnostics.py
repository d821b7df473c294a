"""Is training getting anywhere? Three measurements that tell a model that reads the video from one that does not.

- :func:`video_blind_baselines`: depth AbsRel (clip-median-scaled, as :func:`d4rt.evaluation.metrics.depth_metrics`) of
  predictions that never look at a clip's video: the best constant, the mean depth map of other clips (the "room
  layout prior" a model learns first), and two oracles that do see the true depth at coarse resolution: each
  image row's median, and each encoder token's median (the best a per-token lookup can do without refinement).
- :func:`decoder_attention`: for queries at every token centre (t_src = t_tgt = t_cam), how much of each decoder
  block's attention lands on the query's own token, against uniform. A model that reads the video at the query's
  place has a peaked, own-token attention in some head.
- :func:`token_depth_probe`: a ridge regression from the encoder's memory tokens to their log depth, fitted on
  some clips and scored on others: does the memory hold per-token depth at all?

``scripts/diagnose_training.py`` prints all three for a checkpoint and a folder of clips.
"""

from __future__ import annotations

import numpy as np
import torch

from d4rt.evaluation.metrics import best_constant_depth_abs_rel, depth_metrics


def token_medians(depth: np.ndarray, tubelet: tuple[int, int, int]) -> np.ndarray:
    """Median depth of each encoder token. depth [T, S, S] -> [T / tt * (S / th) * (S / tw)] in (t', h', w')."""
    tt, th, tw = tubelet
    T, H, W = depth.shape
    blocks = depth.reshape(T // tt, tt, H // th, th, W // tw, tw).transpose(0, 2, 4, 1, 3, 5)
    return np.median(blocks.reshape(T // tt * (H // th) * (W // tw), -1), axis=1)


def video_blind_baselines(depths: list[np.ndarray], tubelet: tuple[int, int, int]) -> dict[str, float]:
    """Mean AbsRel over clips (each depth [T, S, S], all the same shape) of the baselines in the module doc.

    The layout prior of clip i is the mean of the other clips' median-normalised depth maps (leave-one-out).
    """
    if len(depths) < 2:
        raise ValueError("video_blind_baselines needs at least two clips (the layout prior is leave-one-out)")
    normalised = np.stack([d / np.median(d) for d in depths])
    tt, th, tw = tubelet
    rows = {"best_constant": [], "layout_prior": [], "row_median_oracle": [], "token_median_oracle": []}
    for i, d in enumerate(depths):
        T, H, W = d.shape
        prior = (normalised.sum(0) - normalised[i]) / (len(depths) - 1)
        row = np.broadcast_to(np.median(d, axis=2, keepdims=True), d.shape)
        tokens = token_medians(d, tubelet).reshape(T // tt, H // th, W // tw)
        token = np.repeat(np.repeat(np.repeat(tokens, tt, 0), th, 1), tw, 2)
        rows["best_constant"].append(best_constant_depth_abs_rel(d))
        rows["layout_prior"].append(depth_metrics(prior, d, scaling="clip_median")["abs_rel"])
        rows["row_median_oracle"].append(depth_metrics(row, d, scaling="clip_median")["abs_rel"])
        rows["token_median_oracle"].append(depth_metrics(token, d, scaling="clip_median")["abs_rel"])
    return {k: float(np.mean(v)) for k, v in rows.items()}


def _token_centre_queries(cfg, num_frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uv [1, N, 2] at every token centre of every frame, t [1, N], own token index [N]."""
    tt, th, tw = cfg.tubelet
    S = cfg.image_size
    rows, cols = np.meshgrid(np.arange(S // th), np.arange(S // tw), indexing="ij")
    uv = np.stack([(cols.ravel() * tw + (tw - 1) / 2) / (S - 1), (rows.ravel() * th + (th - 1) / 2) / (S - 1)], -1)
    t = np.repeat(np.arange(num_frames), len(uv))
    own = (t // tt) * len(uv) + np.tile(rows.ravel() * (S // tw) + cols.ravel(), num_frames)
    return torch.tensor(np.tile(uv, (num_frames, 1)), dtype=torch.float32)[None], torch.tensor(t)[None], \
        torch.tensor(own)


@torch.no_grad()
def decoder_attention(model, video: torch.Tensor, aspect_ratio: float = 1.0) -> list[dict[str, float]]:
    """Per decoder block and head: mean largest weight, mean weight on the query's own token, and the uniform
    weight 1 / M, for queries at every token centre. video [1, T, 3, S, S] -> [{block, head, max, own, uniform}]."""
    model = model.eval()
    cfg = model.config
    uv, t, own = _token_centre_queries(cfg, video.shape[1])
    keys, values = model.memory_kv(model.encode(video, aspect_ratio))
    x = model.query_embedder(video, uv, t, t, t)
    rows = []
    for i, block in enumerate(model.decoder.blocks):
        attn = block.cross_attn
        q = torch.nn.functional.linear(block.norm_q(x), attn.in_proj_weight[: attn.dim], attn.in_proj_bias[: attn.dim])
        q = q.view(1, -1, attn.heads, attn.head_dim).transpose(1, 2)
        weights = torch.softmax(q @ keys[i].transpose(-1, -2) / attn.head_dim**0.5, dim=-1)[0]  # [H, N, M]
        for h in range(attn.heads):
            rows.append({
                "block": i, "head": h, "max": weights[h].max(-1).values.mean().item(),
                "own": weights[h, torch.arange(len(own)), own].mean().item(), "uniform": 1.0 / weights.shape[-1],
            })
        x = block(x, keys[i], values[i])
    return rows


@torch.no_grad()
def token_depth_probe(model, videos: list[torch.Tensor], depths: list[np.ndarray], train_clips: int,
                      ridge: float = 1.0) -> float:
    """Held-out depth AbsRel of a ridge regression memory token -> log token depth (per-clip mean removed).

    videos: [1, T, 3, S, S] each; depths: [T, S, S] each; the first ``train_clips`` fit, the rest score.
    """
    if not 0 < train_clips < len(videos):
        raise ValueError(f"train_clips must leave clips to score: 0 < {train_clips} < {len(videos)}")
    model = model.eval()
    tubelet = model.config.tubelet
    feats = [model.encode(v, 1.0)[0, :-1].double().numpy() for v in videos]  # video tokens, aspect token dropped
    targets = [np.log(token_medians(d, tubelet)) for d in depths]
    X = np.concatenate([np.c_[f, np.ones(len(f))] for f in feats[:train_clips]])
    y = np.concatenate([t - t.mean() for t in targets[:train_clips]])
    w = np.linalg.solve(X.T @ X + ridge * np.eye(X.shape[1]), X.T @ y)
    scores = []
    tt, th, tw = tubelet
    for f, d in zip(feats[train_clips:], depths[train_clips:]):
        T, H, W = d.shape
        pred = np.exp(np.c_[f, np.ones(len(f))] @ w).reshape(T // tt, H // th, W // tw)
        full = np.repeat(np.repeat(np.repeat(pred, tt, 0), th, 1), tw, 2)
        scores.append(depth_metrics(full, d, scaling="clip_median")["abs_rel"])
    return float(np.mean(scores))
