"""Multi-head attention with a switchable backend.

Backends (same weights, same outputs within tolerance):
  "eager"  explicit matmul -> softmax (float32) -> matmul: the baseline the kernels are measured against;
  "sdpa"   torch.nn.functional.scaled_dot_product_attention (torch picks flash / memory-efficient / math);
  "triton" our fused kernels in d4rt.kernels (windowed local attention and cross-attention).

Parameters follow torch.nn.MultiheadAttention (packed ``in_proj_weight`` rows q, k, v; ``out_proj``) so the
state dict matches OpenD4RT's key names and the kernels can read the packed projection.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_BACKENDS = ("eager", "sdpa", "triton")
DEFAULT_ATTENTION = "sdpa"


def _windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, N, D] -> [B * N / window, H, window, D] (a view when x's token dim allows it)."""
    B, H, N, D = x.shape
    return x.reshape(B, H, N // window, window, D).transpose(1, 2).reshape(B * (N // window), H, window, D)


def _unwindows(x: torch.Tensor, batch: int) -> torch.Tensor:
    """[B * N / window, H, window, D] -> [B, H, N, D]."""
    Bw, H, W, D = x.shape
    return x.reshape(batch, Bw // batch, H, W, D).transpose(1, 2).reshape(batch, H, Bw // batch * W, D)


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v, the softmax in at least float32. q [B, H, Nq, D], k, v [B, H, Nk, D] -> [B, H, Nq, D]."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    probs = torch.softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), dim=-1).to(v.dtype)
    return torch.matmul(probs, v)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    backend: str | Callable[..., torch.Tensor],
    window: int | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention, global or windowed.

    Args:
        q: [B, H, Nq, D]; k, v: [B, H, Nk, D] (any strides).
        backend: "eager" | "sdpa" | "triton", or a function ``(q, k, v, scale) -> out`` on [B, H, N, D] tensors
            (windows already cut), e.g. the export's fused ONNX Runtime op.
        window: if given, Nq == Nk is a whole number of windows of this many consecutive tokens and each
            token attends only within its own window (the encoder's per-frame local attention).
    Returns:
        [B, H, Nq, D]
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    if callable(backend):
        fn, backend = backend, "function"
    if backend == "triton":
        from d4rt.kernels import cross_attention, local_attention

        if window is not None:
            return local_attention(q, k, v, window, scale=scale)
        return cross_attention(q, k, v, scale=scale)
    batch = q.shape[0]
    if window is not None:
        q, k, v = _windows(q, window), _windows(k, window), _windows(v, window)
    if backend == "function":
        out = fn(q, k, v, scale)
    elif backend == "eager":
        out = eager_attention(q, k, v, scale)
    elif backend == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    else:
        raise ValueError(f"unknown attention backend {backend!r}; use 'eager', 'sdpa' or 'triton'")
    return _unwindows(out, batch) if window is not None else out


class MultiheadAttention(nn.Module):
    """torch.nn.MultiheadAttention's parameters (batch first, no masks), with a backend switch.

    ``in_proj_weight`` [3C, C] holds the q, k and v projections in that order; ``out_proj`` maps back to C.
    """

    def __init__(self, dim: int, heads: int, backend: str = DEFAULT_ATTENTION, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.backend = backend
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, H, N, Dh] (a strided view: the kernels read it without a copy)."""
        B, N, _ = x.shape
        return x.view(B, N, self.heads, self.head_dim).transpose(1, 2)

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, N, Dh] -> [B, N, C]."""
        B, H, N, Dh = x.shape
        return x.transpose(1, 2).reshape(B, N, H * Dh)

    def forward(self, x: torch.Tensor, window: int | None = None) -> torch.Tensor:
        """Self-attention. x [B, N, C] -> [B, N, C]; ``window`` as in :func:`attend`."""
        B, N, C = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(B, N, 3, self.heads, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # each [B, H, N, Dh], strided views
        out = attend(q, k, v, self.backend, window)
        return self.dropout(self.out_proj(self._merge_heads(out)))

    def project_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of a memory for cross-attention. memory [B, M, C] -> k, v [B, H, M, Dh]."""
        C = self.dim
        kv = F.linear(memory, self.in_proj_weight[C:], self.in_proj_bias[C:])
        B, M, _ = kv.shape
        k, v = kv.view(B, M, 2, self.heads, self.head_dim).unbind(2)
        return k.transpose(1, 2), v.transpose(1, 2)

    def cross(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Cross-attention of queries to precomputed k, v [B, H, M, Dh].

        x: [B, N, C], or [B * N, C] (the queries of batch entry b in rows b * N ... b * N + N - 1): the 2-D form
        keeps the projections 2-D matrix products (one Gemm with its bias in an exported graph). Returns x's shape.
        """
        B = k.shape[0]
        q = F.linear(x, self.in_proj_weight[: self.dim], self.in_proj_bias[: self.dim])
        out = self._merge_heads(attend(self._split_heads(q.reshape(B, -1, self.dim)), k, v, self.backend))
        return self.dropout(self.out_proj(out.reshape(x.shape)))


def feed_forward(dim: int, hidden: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear -> exact (erf) GELU -> Linear; indices 0 and 3 as OpenD4RT's ``ff.0`` / ``ff.3``."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
