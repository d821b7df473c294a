"""The kernels as torch custom ops: ``torch.ops.d4rt.attention`` and ``torch.ops.d4rt.attention_backward``.

Registered with ``torch.library.custom_op`` (fake implementations for shape propagation, ``register_autograd`` for
the backward), so ``torch.compile`` (no graph break) and ``torch.export`` see one opaque ``d4rt::attention`` node.
``torch.library.triton_op`` was tried and not taken: with ``TRITON_INTERPRET=1`` the kernels are interpreted
functions that ``wrap_triton`` does not recognise, so tracing (export, compile, opcheck) fails on the CPU, where CI
tests; a custom op behaves the same in the interpreter and on a GPU. What it costs: Inductor cannot see into the
kernels (it would not fuse into attention anyway).

``window = 0`` means cross-attention (every query sees every key); ``window > 0`` means local attention over
consecutive windows of that many tokens (Nq == Nk). ``num_splits = 0`` lets ``launch_plan.plan_splits`` decide split-K.
"""

from __future__ import annotations

import torch
import triton

from d4rt.kernels.backward import attention_backward
from d4rt.kernels.forward import attention_forward
from d4rt.kernels.launch_plan import plan_splits, processor_count, smallest_query_block

#: Allocator of every buffer the kernels write (outputs, log-sum-exp, workspaces). The tests replace it with one
#: that fills buffers with NaN, so an element a kernel fails to write cannot pass as a valid zero.
allocate = torch.empty


def _groups(n_queries: int, window: int) -> int:
    return n_queries // window if window else 1


def _heads_last(batch: int, tokens: int, heads: int, dim: int, like: torch.Tensor, alloc=None) -> torch.Tensor:
    """A [B, H, N, D] tensor laid out as [B, N, H, D] (its ``transpose(1, 2)`` is contiguous), the layout the model
    merges heads from without a copy."""
    alloc = alloc or allocate
    return alloc((batch, tokens, heads, dim), dtype=like.dtype, device=like.device).transpose(1, 2)


@torch.library.custom_op("d4rt::attention", mutates_args=())
def attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float, num_splits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """q [B, H, Nq, D], k, v [B, H, Nk, D] (checked by the caller) -> out [B, H, Nq, D] (as [B, Nq, H, D] memory),
    lse [B, H, Nq] float32 (base-2 log-sum-exp of the scaled scores, for the backward)."""
    B, H, Nq, D = q.shape
    Nk = k.shape[2]
    out = _heads_last(B, Nq, H, D, q)
    lse = allocate((B, H, Nq), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse
    groups = _groups(Nq, window)
    q_group, k_group = Nq // groups, Nk // groups
    plan = plan_splits(
        query_programs=groups * triton.cdiv(q_group, smallest_query_block()) * B * H,
        keys=k_group,
        processors=processor_count(q.device),
        requested=num_splits,
    )
    attention_forward(q, k, v, groups, scale, plan.splits, plan.keys_per_split, out, lse, alloc=allocate)
    return out, lse


@attention_op.register_fake
def _attention_fake(q, k, v, window, scale, num_splits):
    B, H, Nq, D = q.shape
    out = torch.empty((B, Nq, H, D), dtype=q.dtype, device=q.device).transpose(1, 2)
    return out, q.new_empty((B, H, Nq), dtype=torch.float32)


@torch.library.custom_op("d4rt::attention_backward", mutates_args=())
def attention_backward_op(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    window: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``attention_op``'s ``out`` -> dq, dk, dv shaped like q, k, v (as [B, N, H, D] memory)."""
    B, H, Nq, D = q.shape
    Nk = k.shape[2]
    dq, dk, dv = _heads_last(B, Nq, H, D, q), _heads_last(B, Nk, H, D, k), _heads_last(B, Nk, H, D, v)
    if B * H * D == 0:
        return dq, dk, dv
    if Nq == 0:  # no query looked at the keys: their gradients are zero
        return dq, dk.zero_(), dv.zero_()
    groups = _groups(Nq, window)
    dout = dout.to(q.dtype)
    attention_backward(dout, q, k, v, out, lse, groups, scale, dq, dk, dv, alloc=allocate)
    return dq, dk, dv


@attention_backward_op.register_fake
def _attention_backward_fake(dout, q, k, v, out, lse, window, scale):
    B, H, Nq, D = q.shape
    Nk = k.shape[2]
    empty = torch.empty
    return _heads_last(B, Nq, H, D, q, empty), _heads_last(B, Nk, H, D, k, empty), _heads_last(B, Nk, H, D, v, empty)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, window, scale, _ = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.window, ctx.scale = window, scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, _dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = attention_backward_op(dout, q, k, v, out, lse, ctx.window, ctx.scale)
    return dq, dk, dv, None, None, None


attention_op.register_autograd(_backward, setup_context=_setup_context)
