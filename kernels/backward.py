"""Backward pass (flash-attention 2): recompute the probabilities from the forward's log-sum-exp, never store them.

With S = scale * q k^T, P = softmax(S) (rows), O = P v and the incoming gradient dO:
    delta_i = sum_d dO_id O_id                    (``_delta_kernel``)
    dV = P^T dO,  dP = dO v^T,  dS = P * (dP - delta[:, None])
    dK = scale * dS^T q                            (``_dkdv_kernel``: a program per key block, loops over queries)
    dQ = scale * dS k                              (``_dq_kernel``: a program per query block, loops over keys)
Two kernels instead of one with atomics: each output block is written once by one program (deterministic), at the
price of computing q k^T twice. Groups, head-dim chunks and strides work as in ``forward.py``.

The key loop is not split here: training shapes have thousands of queries per (batch, head), which fill the GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from d4rt.kernels.forward import LOG2_E, dot_precision
from d4rt.kernels.tile_access import INTERPRETED, columns, drop_overlap, last_columns, load_rows, seek, store_rows
from d4rt.kernels.launch_plan import (
    backward_kv_configs,
    backward_q_configs,
    bucket,
    head_dim_chunks,
    prune_configs,
    stride_alignment,
)


@triton.jit
def _delta_kernel(
    O, DO, DELTA,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_dob, stride_doh, stride_don, stride_dod,
    heads, n_queries,
    HEAD_DIM: tl.constexpr, D_POW2: tl.constexpr, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """DELTA [B, H, Nq] (contiguous, float32) = rowsum(dO * O). Grid: (cdiv(Nq, BLOCK_M), B * H)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_queries
    b = tl.program_id(1) // heads
    h = tl.program_id(1) % heads
    cols, col_ok = columns(0, D_POW2, HEAD_DIM)
    O, stride_on = seek(O, b, h, 0, stride_ob, stride_oh, stride_on, ALIGN)
    DO, stride_don = seek(DO, b, h, 0, stride_dob, stride_doh, stride_don, ALIGN)
    o = load_rows(O, rows, row_ok, stride_on, cols, col_ok, stride_od)
    do = load_rows(DO, rows, row_ok, stride_don, cols, col_ok, stride_dod)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + tl.program_id(1).to(tl.int64) * n_queries + rows, delta, mask=row_ok)


# ----- dK, dV -----------------------------------------------------------------------------------------------------
@triton.jit
def _dkdv_query_block(
    dk0, dk1, dv0, dv1, k0, k1, v0, v1,
    Q, DO, LSE, DELTA, stride_qn, stride_qd, stride_don, stride_dod, stride_ln,
    start, n_queries, qk_scale,
    cols0, col0_ok, cols1, col1_ok,
    D1: tl.constexpr, BLOCK_M: tl.constexpr, MASK_QUERIES: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """The key block's dK, dV from the queries ``[start, start + BLOCK_M)`` (those >= ``n_queries`` masked when
    ``MASK_QUERIES``)."""
    offs_m = tl.arange(0, BLOCK_M)
    rows = start + offs_m
    if MASK_QUERIES:
        row_ok = rows < n_queries
    else:
        row_ok = tl.full([BLOCK_M], 1, tl.int1)
    q0 = load_rows(Q, rows, row_ok, stride_qn, cols0, col0_ok, stride_qd)
    do0 = load_rows(DO, rows, row_ok, stride_don, cols0, col0_ok, stride_dod)
    s_t = tl.dot(k0, tl.trans(q0), input_precision=PRECISION)  # [BLOCK_N, BLOCK_M]
    dp_t = tl.dot(v0, tl.trans(do0), input_precision=PRECISION)
    if D1 > 0:
        q1 = load_rows(Q, rows, row_ok, stride_qn, cols1, col1_ok, stride_qd)
        do1 = load_rows(DO, rows, row_ok, stride_don, cols1, col1_ok, stride_dod)
        s_t += tl.dot(k1, tl.trans(q1), input_precision=PRECISION)
        dp_t += tl.dot(v1, tl.trans(do1), input_precision=PRECISION)
    lse = tl.load(LSE + rows * stride_ln, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + rows, mask=row_ok, other=0.0)
    p_t = tl.exp2(s_t * qk_scale - lse[None, :])
    if MASK_QUERIES:
        p_t = tl.where(row_ok[None, :], p_t, 0.0)
    ds_t = p_t * (dp_t - delta[None, :])
    dv0 += tl.dot(p_t.to(do0.dtype), do0, input_precision=PRECISION)
    dk0 += tl.dot(ds_t.to(q0.dtype), q0, input_precision=PRECISION)
    if D1 > 0:
        dv1 += tl.dot(p_t.to(do1.dtype), do1, input_precision=PRECISION)
        dk1 += tl.dot(ds_t.to(q1.dtype), q1, input_precision=PRECISION)
    return dk0, dk1, dv0, dv1


@triton.jit
def _dkdv_query_range(
    dk0, dk1, dv0, dv1, k0, k1, v0, v1,
    Q, DO, LSE, DELTA, stride_qn, stride_qd, stride_don, stride_dod, stride_ln,
    lo, hi, n_queries, qk_scale,
    cols0, col0_ok, cols1, col1_ok,
    D1: tl.constexpr, BLOCK_M: tl.constexpr, MASK_QUERIES: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Accumulate the key block's dK, dV over the queries ``[lo, hi)`` (in ``BLOCK_M`` steps). Works on transposed
    tiles ([keys, queries]) so the key block stays in registers."""
    if INTERPRETED:  # Triton 3.6's interpreter cannot take a tensor as a range() bound: tile_access.INTERPRETED
        start = lo
        while start < hi:
            dk0, dk1, dv0, dv1 = _dkdv_query_block(
                dk0, dk1, dv0, dv1, k0, k1, v0, v1, Q, DO, LSE, DELTA, stride_qn, stride_qd, stride_don, stride_dod,
                stride_ln, start, n_queries, qk_scale, cols0, col0_ok, cols1, col1_ok,
                D1, BLOCK_M, MASK_QUERIES, PRECISION,
            )  # fmt: skip
            start += BLOCK_M
    else:
        for start in range(lo, hi, BLOCK_M):
            dk0, dk1, dv0, dv1 = _dkdv_query_block(
                dk0, dk1, dv0, dv1, k0, k1, v0, v1, Q, DO, LSE, DELTA, stride_qn, stride_qd, stride_don, stride_dod,
                stride_ln, start, n_queries, qk_scale, cols0, col0_ok, cols1, col1_ok,
                D1, BLOCK_M, MASK_QUERIES, PRECISION,
            )  # fmt: skip
    return dk0, dk1, dv0, dv1


@triton.autotune(
    configs=backward_kv_configs(),
    key=["HEAD_DIM", "Q_BUCKET", "K_BUCKET"],
    prune_configs_by={"early_config_prune": prune_configs},
)
@triton.jit
def _dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    heads, n_queries, Q_GROUP, K_GROUP, scale, qk_scale,
    Q_BUCKET, K_BUCKET,
    HEAD_DIM: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, PRECISION: tl.constexpr, ALIGN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid: (groups * cdiv(K_GROUP, BLOCK_N), B * H). LSE, DELTA: [B, H, Nq] contiguous float32."""
    k_blocks = tl.cdiv(K_GROUP, BLOCK_N)
    group = tl.program_id(0) // k_blocks
    k_start = (tl.program_id(0) % k_blocks) * BLOCK_N
    b = tl.program_id(1) // heads
    h = tl.program_id(1) % heads
    k_row0 = group.to(tl.int64) * K_GROUP + k_start
    q_row0 = group.to(tl.int64) * Q_GROUP
    K, stride_kn = seek(K, b, h, k_row0, stride_kb, stride_kh, stride_kn, ALIGN)
    V, stride_vn = seek(V, b, h, k_row0, stride_vb, stride_vh, stride_vn, ALIGN)
    DK, stride_dkn = seek(DK, b, h, k_row0, stride_dkb, stride_dkh, stride_dkn, ALIGN)
    DV, stride_dvn = seek(DV, b, h, k_row0, stride_dvb, stride_dvh, stride_dvn, ALIGN)
    Q, stride_qn = seek(Q, b, h, q_row0, stride_qb, stride_qh, stride_qn, ALIGN)
    DO, stride_don = seek(DO, b, h, q_row0, stride_dob, stride_doh, stride_don, ALIGN)
    LSE += tl.program_id(1).to(tl.int64) * n_queries + q_row0
    DELTA += tl.program_id(1).to(tl.int64) * n_queries + q_row0

    keys = tl.arange(0, BLOCK_N)
    key_ok = k_start + keys < K_GROUP
    cols0, col0_ok = columns(0, D0, HEAD_DIM)
    k0 = load_rows(K, keys, key_ok, stride_kn, cols0, col0_ok, stride_kd)
    v0 = load_rows(V, keys, key_ok, stride_vn, cols0, col0_ok, stride_vd)
    dk0 = tl.zeros([BLOCK_N, D0], dtype=tl.float32)
    dv0 = tl.zeros([BLOCK_N, D0], dtype=tl.float32)
    if D1 > 0:
        cols1, col1_ok, own1 = last_columns(D0, D1, HEAD_DIM)
        k1 = drop_overlap(load_rows(K, keys, key_ok, stride_kn, cols1, col1_ok, stride_kd), own1, D0, D1, HEAD_DIM)
        v1 = drop_overlap(load_rows(V, keys, key_ok, stride_vn, cols1, col1_ok, stride_vd), own1, D0, D1, HEAD_DIM)
        dk1 = tl.zeros([BLOCK_N, D1], dtype=tl.float32)
        dv1 = tl.zeros([BLOCK_N, D1], dtype=tl.float32)
    else:  # placeholders: the second chunk is compiled out
        cols1, col1_ok, k1, v1, dk1, dv1 = cols0, col0_ok, k0, v0, 0.0, 0.0

    full_end = Q_GROUP // BLOCK_M * BLOCK_M
    dk0, dk1, dv0, dv1 = _dkdv_query_range(
        dk0, dk1, dv0, dv1, k0, k1, v0, v1, Q, DO, LSE, DELTA, stride_qn, stride_qd, stride_don, stride_dod, 1,
        0, full_end, Q_GROUP, qk_scale, cols0, col0_ok, cols1, col1_ok, D1, BLOCK_M, False, PRECISION,
    )  # fmt: skip
    dk0, dk1, dv0, dv1 = _dkdv_query_range(
        dk0, dk1, dv0, dv1, k0, k1, v0, v1, Q, DO, LSE, DELTA, stride_qn, stride_qd, stride_don, stride_dod, 1,
        full_end, Q_GROUP, Q_GROUP, qk_scale, cols0, col0_ok, cols1, col1_ok, D1, BLOCK_M, True, PRECISION,
    )  # fmt: skip

    store_rows(DK, dk0 * scale, keys, key_ok, stride_dkn, cols0, col0_ok, stride_dkd)
    store_rows(DV, dv0, keys, key_ok, stride_dvn, cols0, col0_ok, stride_dvd)
    if D1 > 0:
        store_rows(DK, dk1 * scale, keys, key_ok, stride_dkn, cols1, own1, stride_dkd)
        store_rows(DV, dv1, keys, key_ok, stride_dvn, cols1, own1, stride_dvd)


# ----- dQ ---------------------------------------------------------------------------------------------------------
@triton.jit
def _dq_key_block(
    dq0, dq1, q0, q1, do0, do1, lse, delta,
    K, V, stride_kn, stride_kd, stride_vn, stride_vd,
    start, n_keys, qk_scale,
    cols0, col0_ok, cols1, col1_ok,
    D1: tl.constexpr, BLOCK_N: tl.constexpr, MASK_KEYS: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """The query block's dQ from the keys ``[start, start + BLOCK_N)`` (those >= ``n_keys`` masked when
    ``MASK_KEYS``)."""
    offs_n = tl.arange(0, BLOCK_N)
    keys = start + offs_n
    if MASK_KEYS:
        key_ok = keys < n_keys
    else:
        key_ok = tl.full([BLOCK_N], 1, tl.int1)
    k0 = load_rows(K, keys, key_ok, stride_kn, cols0, col0_ok, stride_kd)
    v0 = load_rows(V, keys, key_ok, stride_vn, cols0, col0_ok, stride_vd)
    s = tl.dot(q0, tl.trans(k0), input_precision=PRECISION)  # [BLOCK_M, BLOCK_N]
    dp = tl.dot(do0, tl.trans(v0), input_precision=PRECISION)
    if D1 > 0:
        k1 = load_rows(K, keys, key_ok, stride_kn, cols1, col1_ok, stride_kd)
        v1 = load_rows(V, keys, key_ok, stride_vn, cols1, col1_ok, stride_vd)
        s += tl.dot(q1, tl.trans(k1), input_precision=PRECISION)
        dp += tl.dot(do1, tl.trans(v1), input_precision=PRECISION)
    p = tl.exp2(s * qk_scale - lse[:, None])
    if MASK_KEYS:
        p = tl.where(key_ok[None, :], p, 0.0)
    ds = p * (dp - delta[:, None])
    dq0 += tl.dot(ds.to(k0.dtype), k0, input_precision=PRECISION)
    if D1 > 0:
        dq1 += tl.dot(ds.to(k1.dtype), k1, input_precision=PRECISION)
    return dq0, dq1


@triton.jit
def _dq_key_range(
    dq0, dq1, q0, q1, do0, do1, lse, delta,
    K, V, stride_kn, stride_kd, stride_vn, stride_vd,
    lo, hi, n_keys, qk_scale,
    cols0, col0_ok, cols1, col1_ok,
    D1: tl.constexpr, BLOCK_N: tl.constexpr, MASK_KEYS: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Accumulate the query block's dQ over the keys ``[lo, hi)`` (in ``BLOCK_N`` steps)."""
    if INTERPRETED:  # Triton 3.6's interpreter cannot take a tensor as a range() bound: tile_access.INTERPRETED
        start = lo
        while start < hi:
            dq0, dq1 = _dq_key_block(
                dq0, dq1, q0, q1, do0, do1, lse, delta, K, V, stride_kn, stride_kd, stride_vn, stride_vd, start, n_keys,
                qk_scale, cols0, col0_ok, cols1, col1_ok, D1, BLOCK_N, MASK_KEYS, PRECISION,
            )  # fmt: skip
            start += BLOCK_N
    else:
        for start in range(lo, hi, BLOCK_N):
            dq0, dq1 = _dq_key_block(
                dq0, dq1, q0, q1, do0, do1, lse, delta, K, V, stride_kn, stride_kd, stride_vn, stride_vd, start, n_keys,
                qk_scale, cols0, col0_ok, cols1, col1_ok, D1, BLOCK_N, MASK_KEYS, PRECISION,
            )  # fmt: skip
    return dq0, dq1


@triton.autotune(
    configs=backward_q_configs(),
    key=["HEAD_DIM", "Q_BUCKET", "K_BUCKET"],
    prune_configs_by={"early_config_prune": prune_configs},
)
@triton.jit
def _dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_dqb, stride_dqh, stride_dqn, stride_dqd,
    heads, n_queries, Q_GROUP, K_GROUP, scale, qk_scale,
    Q_BUCKET, K_BUCKET,
    HEAD_DIM: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, PRECISION: tl.constexpr, ALIGN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid: (groups * cdiv(Q_GROUP, BLOCK_M), B * H). LSE, DELTA: [B, H, Nq] contiguous float32."""
    q_blocks = tl.cdiv(Q_GROUP, BLOCK_M)
    group = tl.program_id(0) // q_blocks
    q_start = (tl.program_id(0) % q_blocks) * BLOCK_M
    b = tl.program_id(1) // heads
    h = tl.program_id(1) % heads
    q_row0 = group.to(tl.int64) * Q_GROUP + q_start
    k_row0 = group.to(tl.int64) * K_GROUP
    Q, stride_qn = seek(Q, b, h, q_row0, stride_qb, stride_qh, stride_qn, ALIGN)
    DO, stride_don = seek(DO, b, h, q_row0, stride_dob, stride_doh, stride_don, ALIGN)
    DQ, stride_dqn = seek(DQ, b, h, q_row0, stride_dqb, stride_dqh, stride_dqn, ALIGN)
    K, stride_kn = seek(K, b, h, k_row0, stride_kb, stride_kh, stride_kn, ALIGN)
    V, stride_vn = seek(V, b, h, k_row0, stride_vb, stride_vh, stride_vn, ALIGN)

    rows = tl.arange(0, BLOCK_M)
    row_ok = q_start + rows < Q_GROUP
    lse = tl.load(LSE + tl.program_id(1).to(tl.int64) * n_queries + q_row0 + rows, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + tl.program_id(1).to(tl.int64) * n_queries + q_row0 + rows, mask=row_ok, other=0.0)
    cols0, col0_ok = columns(0, D0, HEAD_DIM)
    q0 = load_rows(Q, rows, row_ok, stride_qn, cols0, col0_ok, stride_qd)
    do0 = load_rows(DO, rows, row_ok, stride_don, cols0, col0_ok, stride_dod)
    dq0 = tl.zeros([BLOCK_M, D0], dtype=tl.float32)
    if D1 > 0:
        cols1, col1_ok, own1 = last_columns(D0, D1, HEAD_DIM)
        q1 = drop_overlap(load_rows(Q, rows, row_ok, stride_qn, cols1, col1_ok, stride_qd), own1, D0, D1, HEAD_DIM)
        do1 = drop_overlap(load_rows(DO, rows, row_ok, stride_don, cols1, col1_ok, stride_dod), own1, D0, D1,
                            HEAD_DIM)  # fmt: skip
        dq1 = tl.zeros([BLOCK_M, D1], dtype=tl.float32)
    else:  # placeholders: the second chunk is compiled out
        cols1, col1_ok, q1, do1, dq1 = cols0, col0_ok, q0, do0, 0.0

    full_end = K_GROUP // BLOCK_N * BLOCK_N
    dq0, dq1 = _dq_key_range(
        dq0, dq1, q0, q1, do0, do1, lse, delta, K, V, stride_kn, stride_kd, stride_vn, stride_vd,
        0, full_end, K_GROUP, qk_scale, cols0, col0_ok, cols1, col1_ok, D1, BLOCK_N, False, PRECISION,
    )  # fmt: skip
    dq0, dq1 = _dq_key_range(
        dq0, dq1, q0, q1, do0, do1, lse, delta, K, V, stride_kn, stride_kd, stride_vn, stride_vd,
        full_end, K_GROUP, K_GROUP, qk_scale, cols0, col0_ok, cols1, col1_ok, D1, BLOCK_N, True, PRECISION,
    )  # fmt: skip

    store_rows(DQ, dq0 * scale, rows, row_ok, stride_dqn, cols0, col0_ok, stride_dqd)
    if D1 > 0:
        store_rows(DQ, dq1 * scale, rows, row_ok, stride_dqn, cols1, own1, stride_dqd)


def attention_backward(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    groups: int,
    scale: float,
    dq: torch.Tensor,
    dk: torch.Tensor,
    dv: torch.Tensor,
    alloc=torch.empty,
) -> None:
    """Launch the backward pass into ``dq``, ``dk``, ``dv``.

    Args:
        dout, out: [B, H, Nq, D]; q: [B, H, Nq, D]; k, v: [B, H, Nk, D]; any strides.
        lse: [B, H, Nq] float32 contiguous, base 2, from the forward pass.
        groups, scale: as in the forward pass.
        dq, dk, dv: shaped like q, k, v, any strides (written).
        alloc: allocator of the ``delta`` workspace.
    """
    B, H, Nq, D = q.shape
    Nk = k.shape[2]
    d0, d1 = head_dim_chunks(D)
    q_group, k_group = Nq // groups, Nk // groups
    delta = alloc((B, H, Nq), dtype=torch.float32, device=q.device)
    block = 64
    _delta_kernel[(triton.cdiv(Nq, block), B * H)](
        out, dout, delta, *out.stride(), *dout.stride(), H, Nq,
        HEAD_DIM=D, D_POW2=triton.next_power_of_2(D), ALIGN=stride_alignment(out, dout), BLOCK_M=block,
    )  # fmt: skip
    align = stride_alignment(q, k, v, dout, dq, dk, dv)
    common = dict(HEAD_DIM=D, D0=d0, D1=d1, PRECISION=dot_precision(q.dtype), ALIGN=align)
    sizes = (H, Nq, q_group, k_group, scale, scale * LOG2_E, bucket(q_group), bucket(k_group))
    strides = (*q.stride(), *k.stride(), *v.stride(), *dout.stride())
    _dkdv_kernel[lambda meta: (groups * triton.cdiv(k_group, meta["BLOCK_N"]), B * H)](
        q, k, v, dout, lse, delta, dk, dv, *strides, *dk.stride(), *dv.stride(), *sizes, **common
    )
    _dq_kernel[lambda meta: (groups * triton.cdiv(q_group, meta["BLOCK_M"]), B * H)](
        q, k, v, dout, lse, delta, dq, *strides, *dq.stride(), *sizes, **common
    )
