"""The public functions: windowed local attention and cross-attention on fused Triton kernels.

Both compute softmax(q k^T * scale) v with float32 accumulation, forward and backward, without ever writing a
score matrix to memory; they differ only in which keys a query sees. Inputs may have any strides (the model passes
views of its packed q/k/v projection); outputs are [B, H, N, D] tensors laid out as [B, N, H, D], so merging the
heads afterwards (``out.transpose(1, 2).reshape(B, N, H * D)``) is free.
"""

from __future__ import annotations

import math

import torch

from d4rt.kernels.ops import attention_op
from d4rt.kernels.launch_plan import MAX_HEAD_DIM, interpreting

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_GRID_Y = 65535  # CUDA's limit on the second grid dimension, which holds batch x heads
_MAX_INT32 = 2**31 - 1


def local_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float | None = None
) -> torch.Tensor:
    """Attention within consecutive windows of tokens (the encoder's per-frame local blocks).

    Token n attends to the tokens of its own window ``[n // window * window, (n // window + 1) * window)`` only.

    Args:
        q, k, v: [B, H, N, D], N a whole number of windows; float32, float16 or bfloat16; any strides (views of a
            packed [B, N, 3, H, D] projection are read in place, without copies).
        window: tokens per window, any size >= 1 (e.g. 256 = 16 x 16 patches, or 324 = 18 x 18).
        scale: multiplies q k^T; default 1 / sqrt(D).
    Returns:
        [B, H, N, D] in q's dtype (memory laid out as [B, N, H, D]).
    """
    _check_inputs(q, k, v, "local_attention")
    n = q.shape[2]
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"local_attention: window must be a positive int, got {window!r}")
    if q.shape[2] != k.shape[2]:
        raise ValueError(
            f"local_attention: q has {q.shape[2]} tokens but k, v have {k.shape[2]}; local attention is "
            "self-attention within windows (use cross_attention for different query and key sets)"
        )
    if n % window:
        raise ValueError(
            f"local_attention: {n} tokens are not a whole number of windows of {window} "
            f"({n / window:.2f} windows); pass only the windowed tokens (the model leaves the aspect token out)"
        )
    out, _ = attention_op(q, k, v, window, _scale(scale, q), 0)
    return out


def cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Every query attends to every key (the decoder's cross-attention; also the encoder's global blocks).

    Args:
        q: [B, H, Nq, D], Nq >= 0 (1 to hundreds of thousands; when the queries are too few to fill the GPU the key
            loop is split across programs and the parts combined).
        k, v: [B, H, Nk, D], Nk >= 1 (any count, e.g. 6,145 = 6,144 video tokens + the aspect token).
            float32, float16 or bfloat16, all the same; any strides.
        scale: multiplies q k^T; default 1 / sqrt(D).
    Returns:
        [B, H, Nq, D] in q's dtype (memory laid out as [B, Nq, H, D]).
    """
    _check_inputs(q, k, v, "cross_attention")
    out, _ = attention_op(q, k, v, 0, _scale(scale, q), 0)
    return out


def _scale(scale: float | None, q: torch.Tensor) -> float:
    if scale is None:
        return 1.0 / math.sqrt(q.shape[-1])
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale}")
    return scale


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, name: str) -> None:
    """Raise a ValueError naming what is wrong with q, k, v and what the kernels expect."""
    tensors = {"q": q, "k": k, "v": v}
    for key, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: {key} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 4:
            raise ValueError(f"{name}: {key} must be [B, H, N, D], got shape {tuple(t.shape)}")
    if len({q.dtype, k.dtype, v.dtype}) != 1 or q.dtype not in DTYPES:
        raise ValueError(
            f"{name}: q, k, v must share one dtype of float32 / float16 / bfloat16, got {q.dtype}, {k.dtype}, "
            f"{v.dtype}; cast them first"
        )
    if len({q.device, k.device, v.device}) != 1:
        raise ValueError(f"{name}: q, k, v are on different devices ({q.device}, {k.device}, {v.device})")
    if q.device.type != "cuda" and not interpreting():
        raise ValueError(
            f"{name}: the Triton kernels run on CUDA tensors, got {q.device}; move the tensors to a GPU, or set "
            "TRITON_INTERPRET=1 before importing triton to run them (slowly) on the CPU"
        )
    B, H, _, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[1] != H or k.shape[3] != D:
        raise ValueError(
            f"{name}: expected q [B, H, Nq, D] and k, v [B, H, Nk, D] with the same B, H, D, got q "
            f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if k.shape[2] == 0:
        raise ValueError(f"{name}: there are no keys (k has shape {tuple(k.shape)}); softmax over nothing is undefined")
    if not 1 <= D <= MAX_HEAD_DIM:
        raise ValueError(f"{name}: head dim {D} is not supported (1 to {MAX_HEAD_DIM})")
    if B * H > _MAX_GRID_Y:
        raise ValueError(f"{name}: batch x heads = {B * H} exceeds {_MAX_GRID_Y}; run the batch in chunks")
    tokens = max(q.shape[2], k.shape[2])
    if tokens * H * D > _MAX_INT32:  # the output and gradients are [B, N, H, D] in memory
        raise ValueError(f"{name}: {tokens} tokens x {H} heads x {D} exceed 2^31 elements per batch entry; "
                         "run the queries in batches")  # fmt: skip
    for key, t in tensors.items():  # in-group offsets are 32-bit: rows x row stride must fit
        if t.shape[2] * abs(t.stride(2)) + D * abs(t.stride(3)) > _MAX_INT32:
            raise ValueError(
                f"{name}: {key} spans more than 2^31 elements along its tokens ({t.shape[2]} x stride "
                f"{t.stride(2)}); split the tokens into several calls"
            )
