"""The decoder: cross-attention-only blocks (queries never see each other) and the six output heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from d4rt.config import D4RTConfig
from d4rt.models.attention import DEFAULT_ATTENTION, MultiheadAttention, feed_forward


class DecoderBlock(nn.Module):
    """x + MHA(LN_q(x), LN_kv(memory)), then x + FF(LN_ff(x)). ``norm_kv`` is per block, so K and V depend on the
    memory alone and are computed once per video (:meth:`memory_kv`)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, eps: float, backend: str, dropout: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim, eps=eps)
        self.norm_kv = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = MultiheadAttention(dim, heads, backend, dropout)
        self.norm_ff = nn.LayerNorm(dim, eps=eps)
        self.ff = feed_forward(dim, mlp_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory [B, M, D] -> keys, values [B, H, M, Dh]."""
        return self.cross_attn.project_kv(self.norm_kv(memory))

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """x [B * N, D] (or [B, N, D]), keys / values [B, H, M, Dh] -> x's shape."""
        x = x + self.cross_attn.cross(self.norm_q(x), keys, values)
        return x + self.dropout(self.ff(self.norm_ff(x)))


class Decoder(nn.Module):
    def __init__(self, cfg: D4RTConfig, attention: str = DEFAULT_ATTENTION):
        super().__init__()
        self.blocks = nn.ModuleList(
            DecoderBlock(cfg.dec_dim, cfg.dec_heads, cfg.dec_mlp_dim, cfg.ln_eps, attention, cfg.dropout)
            for _ in range(cfg.dec_depth)
        )
        self.out_norm = nn.LayerNorm(cfg.dec_dim, eps=cfg.ln_eps)

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """x [B, N, D]; keys / values [L, B, H, M, Dh] -> [B, N, D].

        Queries never see each other, so the blocks run on the 2-D token matrix [B * N, D]: every projection and
        MLP layer is then a plain matrix product with bias (an exported graph's Gemm, which ONNX Runtime fuses)."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        for i, block in enumerate(self.blocks):
            x = block(x, keys[i], values[i])
        return self.out_norm(x).reshape(shape)


HEAD_DIMS = {"xyz": 3, "uv": 2, "visibility": 1, "displacement": 3, "normal": 3, "confidence": 1}


class Heads(nn.Module):
    """Six linear heads, no activation: xyz, uv, visibility (logit), displacement, normal, confidence (logit)."""

    def __init__(self, dim: int):
        super().__init__()
        for name, out in HEAD_DIMS.items():
            self.add_module(f"{name}_head", nn.Linear(dim, out))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x [B, N, D] -> xyz [B, N, 3], uv [B, N, 2], visibility [B, N], displacement [B, N, 3], normal [B, N, 3],
        confidence [B, N]."""
        heads = [getattr(self, f"{name}_head") for name in HEAD_DIMS]
        # One matrix product for all six (13 columns; one Gemm in an exported graph), on the 2-D token matrix.
        weight, bias = torch.cat([h.weight for h in heads]), torch.cat([h.bias for h in heads])
        y = F.linear(x.reshape(-1, x.shape[-1]), weight, bias).reshape(*x.shape[:-1], -1)
        out = dict(zip(HEAD_DIMS, y.split(list(HEAD_DIMS.values()), dim=-1)))
        out["visibility"] = out["visibility"][..., 0]
        out["confidence"] = out["confidence"][..., 0]
        return out
