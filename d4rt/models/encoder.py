"""The video encoder: tubelet embedding, 1-D sinusoidal positions, blocks alternating local / global attention."""

from __future__ import annotations

import math

import torch
from torch import nn

from d4rt.config import D4RTConfig
from d4rt.models.attention import DEFAULT_ATTENTION, MultiheadAttention, feed_forward


def sinusoidal_position_embedding(num_tokens: int, dim: int) -> torch.Tensor:
    """The Transformer's 1-D table: channel 2i = sin(n / 10000^(2i/d)), 2i+1 = cos(same). -> [num_tokens, dim]."""
    position = torch.arange(num_tokens, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_tokens, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: dim // 2])
    return table


class EncoderBlock(nn.Module):
    """Pre-norm block: x + MHA(LN(x)), then x + FF(LN(x)). Local blocks attend within windows of tokens."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, eps: float, backend: str, dropout: float):
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiheadAttention(dim, heads, backend, dropout)
        self.norm_ff = nn.LayerNorm(dim, eps=eps)
        self.ff = feed_forward(dim, mlp_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, window: int | None = None) -> torch.Tensor:
        """x [B, N, C] -> [B, N, C]."""
        x = x + self.attn(self.norm_attn(x), window)
        return x + self.dropout(self.ff(self.norm_ff(x)))


class VideoEncoder(nn.Module):
    """Video [B, T, 3, S, S] (+ the aspect-ratio token [B, C]) -> tokens [B, N + 1, C] after the final norm.

    N = T / tt * (S / th) * (S / tw), flattened in (t', h', w') order; the aspect token is last. Block i is local
    (each temporal slice of S/th * S/tw tokens attends within itself; the aspect token skips it) when i is even,
    global (all N + 1 tokens) when i is odd.
    """

    def __init__(self, cfg: D4RTConfig, attention: str = DEFAULT_ATTENTION):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Conv3d(3, cfg.enc_dim, kernel_size=cfg.tubelet, stride=cfg.tubelet)
        self.blocks = nn.ModuleList(
            EncoderBlock(cfg.enc_dim, cfg.enc_heads, cfg.enc_mlp_dim, cfg.ln_eps, attention, cfg.dropout)
            for _ in range(cfg.enc_depth)
        )
        self.final_norm = nn.LayerNorm(cfg.enc_dim, eps=cfg.ln_eps)
        self.register_buffer(
            "pos_embed", sinusoidal_position_embedding(cfg.memory_tokens() - 1, cfg.enc_dim), persistent=False
        )

    @staticmethod
    def is_local(block_index: int) -> bool:
        return block_index % 2 == 0

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, T, 3, S, S] -> video tokens with positions [B, N, C]."""
        x = self.patch_embed(video.transpose(1, 2).to(self.patch_embed.weight.dtype))  # [B, C, T', h, w]
        x = x.flatten(2).transpose(1, 2)  # [B, N, C] in (t', h', w') order
        return x + self.pos_embed[: x.shape[1]].to(x.dtype)

    def forward(self, video: torch.Tensor, aspect_token: torch.Tensor) -> torch.Tensor:
        """video [B, T, 3, S, S], aspect_token [B, C] -> [B, N + 1, C]."""
        x = torch.cat([self.embed(video), aspect_token[:, None].to(self.patch_embed.weight.dtype)], dim=1)
        n_video, window = x.shape[1] - 1, self.cfg.tokens_per_slice
        for i, block in enumerate(self.blocks):
            if self.is_local(i):
                x = torch.cat([block(x[:, :n_video], window=window), x[:, n_video:]], dim=1)
            else:
                x = block(x)
        return self.final_norm(x)
