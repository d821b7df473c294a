"""Forward pass: a flash-attention kernel (online softmax, no scores in global memory) over groups of queries and
keys, and the combine step of split-K.

One kernel serves both public functions. Queries and keys are cut into ``groups`` consecutive groups; group g's
``Q_GROUP`` queries attend to group g's ``K_GROUP`` keys only:
  - cross-attention: one group (every query sees every key);
  - local attention: N / window groups with ``Q_GROUP = K_GROUP = window``.
A program owns ``BLOCK_M`` queries of one group, one (batch, head) and one split of the group's keys; it streams the
keys in ``BLOCK_N`` blocks, keeping the running max ``m``, the running sum ``l`` and the output accumulator in
registers (float32). Query blocks never straddle two groups, so any window size works (324 = 18 x 18 included);
the last query block and the last key block of a group are masked.

The head dim is covered by two power-of-two column chunks, the first ``D0`` and the last ``D1`` columns (see
``launch_plan.head_dim_chunks`` and ``tile_access.last_columns``), so the loads of the inner loops carry no column mask.
Log-sum-exp values are kept in base 2 (``m + log2(l)`` of the scores times ``scale * log2(e)``) for ``exp2``.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from d4rt.kernels.tile_access import INTERPRETED, aligned, columns, drop_overlap, last_columns, load_rows, seek, store_rows
from d4rt.kernels.launch_plan import bucket, forward_configs, head_dim_chunks, prune_configs, stride_alignment

LOG2_E = 1.0 / math.log(2.0)


@triton.jit
def _attend_key_block(
    acc0, acc1, l_i, m_i, q0, q1,
    K, V, stride_kn, stride_kd, stride_vn, stride_vd,
    start, n_keys, qk_scale,
    cols0, col0_ok, cols1, col1_ok,
    D1: tl.constexpr, BLOCK_N: tl.constexpr, MASK_KEYS: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """One step of the online softmax: the keys ``[start, start + BLOCK_N)`` (those >= ``n_keys`` masked when
    ``MASK_KEYS``)."""
    offs_n = tl.arange(0, BLOCK_N)
    keys = start + offs_n
    if MASK_KEYS:
        key_ok = keys < n_keys
    else:
        key_ok = tl.full([BLOCK_N], 1, tl.int1)  # a constant mask: the compiler drops it
    k0 = load_rows(K, keys, key_ok, stride_kn, cols0, col0_ok, stride_kd)
    s = tl.dot(q0, tl.trans(k0), input_precision=PRECISION)
    if D1 > 0:
        k1 = load_rows(K, keys, key_ok, stride_kn, cols1, col1_ok, stride_kd)
        s += tl.dot(q1, tl.trans(k1), input_precision=PRECISION)
    s = s * qk_scale
    if MASK_KEYS:
        s = tl.where(key_ok[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    v0 = load_rows(V, keys, key_ok, stride_vn, cols0, col0_ok, stride_vd)
    acc0 = acc0 * alpha[:, None] + tl.dot(p.to(v0.dtype), v0, input_precision=PRECISION)
    if D1 > 0:
        v1 = load_rows(V, keys, key_ok, stride_vn, cols1, col1_ok, stride_vd)
        acc1 = acc1 * alpha[:, None] + tl.dot(p.to(v1.dtype), v1, input_precision=PRECISION)
    m_i = m_new
    return acc0, acc1, l_i, m_i


@triton.jit
def _attend_key_range(
    acc0, acc1, l_i, m_i, q0, q1,
    K, V, stride_kn, stride_kd, stride_vn, stride_vd,
    lo, hi, n_keys, qk_scale,
    cols0, col0_ok, cols1, col1_ok,
    D1: tl.constexpr, BLOCK_N: tl.constexpr, MASK_KEYS: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Online softmax over the keys ``[lo, hi)`` of ``K``, ``V`` (in ``BLOCK_N`` steps; keys >= ``n_keys`` are
    masked when ``MASK_KEYS``). Returns the updated ``acc0 [BLOCK_M, D0]``, ``acc1 [BLOCK_M, D1]``, ``l_i``, ``m_i``."""
    if INTERPRETED:  # Triton 3.6's interpreter cannot take a tensor as a range() bound: tile_access.INTERPRETED
        start = lo
        while start < hi:
            acc0, acc1, l_i, m_i = _attend_key_block(
                acc0, acc1, l_i, m_i, q0, q1, K, V, stride_kn, stride_kd, stride_vn, stride_vd, start, n_keys, qk_scale,
                cols0, col0_ok, cols1, col1_ok, D1, BLOCK_N, MASK_KEYS, PRECISION,
            )  # fmt: skip
            start += BLOCK_N
    else:
        for start in range(lo, hi, BLOCK_N):
            acc0, acc1, l_i, m_i = _attend_key_block(
                acc0, acc1, l_i, m_i, q0, q1, K, V, stride_kn, stride_kd, stride_vn, stride_vd, start, n_keys, qk_scale,
                cols0, col0_ok, cols1, col1_ok, D1, BLOCK_N, MASK_KEYS, PRECISION,
            )  # fmt: skip
    return acc0, acc1, l_i, m_i


@triton.autotune(
    configs=forward_configs(),
    key=["HEAD_DIM", "Q_BUCKET", "K_BUCKET", "SPLITS"],
    prune_configs_by={"early_config_prune": prune_configs},
)
@triton.jit
def _attention_forward_kernel(
    Q, K, V, O, LSE,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_os, stride_ob, stride_oh, stride_on, stride_od,
    stride_ls, stride_lb, stride_lh, stride_ln,
    heads, Q_GROUP, K_GROUP, KEYS_PER_SPLIT, qk_scale,
    Q_BUCKET, K_BUCKET, SPLITS,
    HEAD_DIM: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, PRECISION: tl.constexpr, ALIGN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid: (groups * cdiv(Q_GROUP, BLOCK_M), batch * heads, SPLITS).

    Writes O (normalised output of this split's keys, [split, b, h, n, d] through its strides; without split-K the
    output itself, split 0) and LSE (base-2 log-sum-exp of the split's scores, [split, b, h, n]).
    """
    q_blocks = tl.cdiv(Q_GROUP, BLOCK_M)
    group = tl.program_id(0) // q_blocks
    q_start = (tl.program_id(0) % q_blocks) * BLOCK_M
    b = tl.program_id(1) // heads
    h = tl.program_id(1) % heads
    split = tl.program_id(2)

    q_row0 = group.to(tl.int64) * Q_GROUP + q_start  # first query row of this block, in the [N] axis
    k_first = split * KEYS_PER_SPLIT  # first key of this split, inside the group
    n_keys = tl.minimum(K_GROUP - k_first, KEYS_PER_SPLIT)  # keys of this split
    k_row0 = group.to(tl.int64) * K_GROUP + k_first
    Q, stride_qn = seek(Q, b, h, q_row0, stride_qb, stride_qh, stride_qn, ALIGN)
    K, stride_kn = seek(K, b, h, k_row0, stride_kb, stride_kh, stride_kn, ALIGN)
    V, stride_vn = seek(V, b, h, k_row0, stride_vb, stride_vh, stride_vn, ALIGN)
    O, stride_on = seek(O + split.to(tl.int64) * aligned(stride_os, ALIGN), b, h, q_row0, stride_ob, stride_oh,
                         stride_on, ALIGN)  # fmt: skip
    LSE, stride_ln = seek(LSE + split.to(tl.int64) * stride_ls, b, h, q_row0, stride_lb, stride_lh, stride_ln, 1)

    rows = tl.arange(0, BLOCK_M)
    row_ok = q_start + rows < Q_GROUP
    cols0, col0_ok = columns(0, D0, HEAD_DIM)
    q0 = load_rows(Q, rows, row_ok, stride_qn, cols0, col0_ok, stride_qd)
    acc0 = tl.zeros([BLOCK_M, D0], dtype=tl.float32)
    if D1 > 0:
        cols1, col1_ok, own1 = last_columns(D0, D1, HEAD_DIM)
        q1 = drop_overlap(load_rows(Q, rows, row_ok, stride_qn, cols1, col1_ok, stride_qd), own1, D0, D1, HEAD_DIM)
        acc1 = tl.zeros([BLOCK_M, D1], dtype=tl.float32)
    else:  # placeholders: the second chunk is compiled out
        cols1, col1_ok, q1, acc1 = cols0, col0_ok, q0, 0.0
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    full_end = n_keys // BLOCK_N * BLOCK_N  # whole key blocks run unmasked, the tail block masked
    acc0, acc1, l_i, m_i = _attend_key_range(
        acc0, acc1, l_i, m_i, q0, q1, K, V, stride_kn, stride_kd, stride_vn, stride_vd,
        0, full_end, n_keys, qk_scale, cols0, col0_ok, cols1, col1_ok,
        D1, BLOCK_N, False, PRECISION,
    )  # fmt: skip
    acc0, acc1, l_i, m_i = _attend_key_range(
        acc0, acc1, l_i, m_i, q0, q1, K, V, stride_kn, stride_kd, stride_vn, stride_vd,
        full_end, n_keys, n_keys, qk_scale, cols0, col0_ok, cols1, col1_ok,
        D1, BLOCK_N, True, PRECISION,
    )  # fmt: skip

    store_rows(O, acc0 / l_i[:, None], rows, row_ok, stride_on, cols0, col0_ok, stride_od)
    if D1 > 0:
        store_rows(O, acc1 / l_i[:, None], rows, row_ok, stride_on, cols1, own1, stride_od)
    tl.store(LSE + rows * stride_ln, m_i + tl.log2(l_i), mask=row_ok)


@triton.jit
def _combine_splits_kernel(
    PARTIAL_O, PARTIAL_LSE, O, LSE,
    stride_ps, stride_pb, stride_ph, stride_pn,
    stride_ls, stride_lb, stride_lh,
    stride_ob, stride_oh, stride_on, stride_od,
    heads, n_queries,
    SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr, D_POW2: tl.constexpr, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """Merge the splits of split-K. Grid: (cdiv(n_queries, BLOCK_M), batch * heads).

    PARTIAL_O [S, B, H, Nq, D] float32 (contiguous in d) and PARTIAL_LSE [S, B, H, Nq] (base 2) from the forward
    kernel; out_i = sum_s 2^(lse_s - lse) * o_s with lse = log2 sum_s 2^lse_s, written to O (any strides, output
    dtype) and LSE [B, H, Nq] (contiguous).
    """
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_queries
    b = tl.program_id(1) // heads
    h = tl.program_id(1) % heads
    cols, col_ok = columns(0, D_POW2, HEAD_DIM)
    stride_ps = aligned(stride_ps, ALIGN)
    PARTIAL_O, stride_pn = seek(PARTIAL_O, b, h, 0, stride_pb, stride_ph, stride_pn, ALIGN)
    PARTIAL_LSE += b.to(tl.int64) * stride_lb + h.to(tl.int64) * stride_lh

    m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    weight_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D_POW2], dtype=tl.float32)
    for s in range(SPLITS):  # a constant: at most MAX_SPLITS, and a loop bound the interpreter converts
        lse_s = tl.load(PARTIAL_LSE + s * stride_ls + rows, mask=row_ok, other=0.0)
        o_s = load_rows(PARTIAL_O + s * stride_ps, rows, row_ok, stride_pn, cols, col_ok, 1)
        m_new = tl.maximum(m, lse_s)
        alpha = tl.exp2(m - m_new)
        w = tl.exp2(lse_s - m_new)
        weight_sum = weight_sum * alpha + w
        acc = acc * alpha[:, None] + w[:, None] * o_s
        m = m_new

    O, stride_on = seek(O, b, h, 0, stride_ob, stride_oh, stride_on, ALIGN)
    store_rows(O, acc / weight_sum[:, None], rows, row_ok, stride_on, cols, col_ok, stride_od)
    tl.store(LSE + (b * heads + h).to(tl.int64) * n_queries + rows, m + tl.log2(weight_sum), mask=row_ok)


def dot_precision(dtype: torch.dtype) -> str:
    """float32 inputs multiply in full float32 ("ieee", CUDA cores): TF32 (10-bit mantissa) would miss the 1e-5
    accuracy float32 promises. float32 is the exact path, not the fast one (bfloat16 / float16 use tensor cores);
    "tf32x3" would be faster at near-float32 accuracy but is unverified without a GPU."""
    return "ieee" if dtype == torch.float32 else "tf32"


def attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    groups: int,
    scale: float,
    splits: int,
    keys_per_split: int,
    out: torch.Tensor,
    lse: torch.Tensor,
    alloc=torch.empty,
) -> None:
    """Launch the forward pass into ``out`` and ``lse``.

    Args:
        q: [B, H, Nq, D]; k, v: [B, H, Nk, D]; any strides. Nq and Nk are ``groups`` whole groups.
        groups: 1 for cross-attention, N / window for local attention.
        scale: multiplies q k^T.
        splits, keys_per_split: the split-K plan (``launch_plan.plan_splits``); 1 split runs without the combine step.
        out: [B, H, Nq, D] in q's dtype, any strides (written). lse: [B, H, Nq] float32 contiguous (written; base 2).
        alloc: allocator of the split-K workspaces (tests pass one that fills them with NaN).
    """
    B, H, Nq, D = q.shape
    Nk = k.shape[2]
    d0, d1 = head_dim_chunks(D)
    q_group, k_group = Nq // groups, Nk // groups
    if splits == 1:
        partial_o, partial_lse = out.unsqueeze(0), lse.unsqueeze(0)
    else:
        partial_o = alloc((splits, B, H, Nq, D), dtype=torch.float32, device=q.device)
        partial_lse = alloc((splits, B, H, Nq), dtype=torch.float32, device=q.device)

    def grid(meta):
        return (groups * triton.cdiv(q_group, meta["BLOCK_M"]), B * H, splits)

    _attention_forward_kernel[grid](
        q, k, v, partial_o, partial_lse,
        *q.stride(), *k.stride(), *v.stride(), *partial_o.stride(), *partial_lse.stride(),
        H, q_group, k_group, keys_per_split, scale * LOG2_E,
        bucket(q_group), bucket(k_group), splits,
        HEAD_DIM=D, D0=d0, D1=d1, PRECISION=dot_precision(q.dtype), ALIGN=stride_alignment(q, k, v, partial_o),
    )  # fmt: skip
    if splits > 1:
        block_m = 32
        _combine_splits_kernel[(triton.cdiv(Nq, block_m), B * H)](
            partial_o, partial_lse, out, lse,
            partial_o.stride(0), partial_o.stride(1), partial_o.stride(2), partial_o.stride(3),
            *partial_lse.stride()[:3], *out.stride(),
            H, Nq,
            SPLITS=splits, HEAD_DIM=D, D_POW2=triton.next_power_of_2(D), ALIGN=stride_alignment(partial_o, out),
            BLOCK_M=block_m,
        )  # fmt: skip
