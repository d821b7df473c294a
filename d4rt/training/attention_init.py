"""Own-token attention by initialisation: set one decoder head's query and key projections so that a query
attends to the memory token under its own pixel from the first step (weights only; the graph is the paper's).

A query finds its token only if its query vector and that token's key share a code of position. The query side
knows (u, v, t_src) through its Fourier features and time tables; the key side knows the token's place through the
encoder's positional embedding, carried in the memory. Here both sides are read out linearly into one shared code

    code(u, v, t') = [cos, sin(2^k pi u), cos, sin(2^k pi v) for k < bands] ++ time_weight * onehot(t')

(ridge regressions from the first block's normalised queries and keys on real clips: query side at the query's
(u, v, t_src // tt), key side at the token's centre), and the head's rows of ``in_proj_weight`` / ``in_proj_bias``
are set to those read-outs, scaled so that score = sharpness * code_q . code_k. The dot product is largest at the
query's own token (each Fourier pair contributes cos(2^k pi (u - u_token))). Training then refines the head (the
own-token loss of :mod:`d4rt.training.auxiliary` keeps it on its token).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from d4rt.training.auxiliary import own_token_index


def position_code(u: torch.Tensor, v: torch.Tensor, t_token: torch.Tensor, num_slices: int, bands: int,
                  time_weight: float) -> torch.Tensor:
    """u, v [...] in [0, 1], t_token [...] int (temporal slice) -> code [..., 4 * bands + num_slices]."""
    freqs = (2.0 ** torch.arange(bands, dtype=torch.float64)) * math.pi
    parts = []
    for x in (u.double(), v.double()):
        parts += [torch.cos(x[..., None] * freqs), torch.sin(x[..., None] * freqs)]
    parts.append(time_weight * torch.nn.functional.one_hot(t_token.long(), num_slices).double())
    return torch.cat(parts, -1)


def _ridge(features: torch.Tensor, targets: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """features [n, D], targets [n, C] -> (A [C, D], c [C], R^2) with targets ~ features A^T + c."""
    X = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], 1)
    gram = X.T @ X + ridge * torch.eye(X.shape[1], dtype=torch.float64)
    W = torch.linalg.solve(gram, X.T @ targets)  # [D + 1, C]
    residual = targets - X @ W
    r2 = 1.0 - float((residual**2).sum() / ((targets - targets.mean(0)) ** 2).sum())
    return W[:-1].T, W[-1], r2


@torch.no_grad()
def init_own_token_head(model, videos: list[torch.Tensor], block: int = 0, head: int = 0, bands: int = 4,
                        time_weight: float = 2.0, sharpness: float = 2.0, queries_per_clip: int = 2048,
                        ridge: float = 1e-2, seed: int = 0) -> dict[str, float]:
    """Rewrite ``head`` of decoder ``block``'s query / key projections as described in the module doc.

    model: :class:`~d4rt.models.D4RT`; videos: clips [1, T, 3, S, S] (a few are enough). Returns the fits' R^2
    ({"query_r2", "key_r2"}). The model is changed in place.
    """
    cfg = model.config
    if not 0 <= block < cfg.dec_depth or not 0 <= head < cfg.dec_heads:
        raise ValueError(f"block {block} / head {head} out of range for {cfg.dec_depth} blocks of {cfg.dec_heads} heads")
    tt, th, tw = cfg.tubelet
    S = cfg.image_size
    gen = torch.Generator().manual_seed(seed)
    blk = model.decoder.blocks[block]
    attn = blk.cross_attn
    q_feats, q_codes, k_feats, k_codes = [], [], [], []
    for video in videos:
        T = video.shape[1]
        slices, rows, cols = T // tt, S // th, S // tw
        memory = model.encode(video, 1.0)
        x = None
        uv = torch.rand(1, queries_per_clip, 2, generator=gen)
        t = torch.randint(0, T, (3, 1, queries_per_clip), generator=gen)
        x = model.query_embedder(video, uv, t[0], t[1], t[2])
        for b in model.decoder.blocks[:block]:  # the queries as they reach this block
            keys, values = b.memory_kv(memory)
            x = b(x, keys, values)
        q_feats.append(blk.norm_q(x)[0])
        q_codes.append(position_code(uv[0, :, 0], uv[0, :, 1], t[0, 0] // tt, slices, bands, time_weight))
        k_feats.append(blk.norm_kv(memory)[0, :-1])  # video tokens in (t', h', w') order
        tk, rk, ck = torch.meshgrid(torch.arange(slices), torch.arange(rows), torch.arange(cols), indexing="ij")
        uc = (ck.reshape(-1) * tw + (tw - 1) / 2) / (S - 1)
        vc = (rk.reshape(-1) * th + (th - 1) / 2) / (S - 1)
        k_codes.append(position_code(uc, vc, tk.reshape(-1), slices, bands, time_weight))
    A_q, c_q, r2_q = _ridge(torch.cat(q_feats), torch.cat(q_codes), ridge)
    A_k, c_k, r2_k = _ridge(torch.cat(k_feats), torch.cat(k_codes), ridge)
    code_dim, Dh, C = A_q.shape[0], attn.head_dim, attn.dim
    if code_dim > Dh:
        raise ValueError(f"the position code has {code_dim} channels but a head only {Dh}; lower bands")
    a = math.sqrt(sharpness * math.sqrt(Dh))  # score = a^2 / sqrt(Dh) * code_q . code_k = sharpness * (...)
    rows_q = slice(head * Dh, head * Dh + Dh)
    rows_k = slice(C + head * Dh, C + head * Dh + Dh)
    for rows, A, c in ((rows_q, A_q, c_q), (rows_k, A_k, c_k)):
        W = torch.zeros(Dh, C, dtype=torch.float64)
        bias = torch.zeros(Dh, dtype=torch.float64)
        W[:code_dim], bias[:code_dim] = a * A, a * c
        attn.in_proj_weight[rows] = W.to(attn.in_proj_weight.dtype)
        attn.in_proj_bias[rows] = bias.to(attn.in_proj_bias.dtype)
    return {"query_r2": r2_q, "key_r2": r2_k}
