"""Triton kernels of D4RT (``import d4rt.kernels``): fused attention, forward and backward, as torch custom ops.

    local_attention(q, k, v, window, scale=None)   # [B, H, N, D], attention within windows of `window` tokens
    cross_attention(q, k, v, scale=None)           # q [B, H, Nq, D] to k, v [B, H, Nk, D]

Imports torch and triton only. On the CPU the kernels run in Triton's interpreter (set TRITON_INTERPRET=1 before
triton is imported); that is how the tests run without a GPU.
"""

from d4rt.kernels.attention import cross_attention, local_attention

__all__ = ["cross_attention", "local_attention"]
