"""Tile helpers shared by the attention kernels: loads and stores of [rows, columns] tiles, the two head-dim column
chunks, and pointers to a (batch, head, token) with 16-byte alignment hints.

All are ``@triton.jit`` functions, inlined into the kernels when compiled. (In the interpreter every nested call costs
about a millisecond, so the helpers stay few and coarse.)
"""

from __future__ import annotations

import triton
import triton.language as tl

from d4rt.kernels.launch_plan import interpreting

#: True when the kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``), a constant the kernels read.
#: Compiled, the interpreter's branches are dropped at compile time and the kernels are exactly as without it.
#: Why the kernels need it: the interpreter holds every scalar (a kernel argument, and what is computed from one) in a
#: 1-element NumPy array, and Triton 3.6 converts a ``range`` bound with ``int(handle.data)``, which NumPy >= 2.4
#: refuses ("only 0-dimensional arrays can be converted to Python scalars"). So in the interpreter a loop over a
#: run-time number of blocks is a ``while`` loop (a comparison converts through ``bool``, which NumPy allows); compiled,
#: it stays a ``for`` loop over ``range``, the only loop Triton software-pipelines.
INTERPRETED = tl.constexpr(interpreting())


@triton.jit
def load_rows(ptr, rows, row_ok, stride_row, cols, col_ok, stride_col):
    """Load the tile ``ptr[rows, cols]`` ([len(rows), len(cols)]), zeros where a row or column is out of range."""
    return tl.load(
        ptr + rows[:, None] * stride_row + cols[None, :] * stride_col,
        mask=row_ok[:, None] & col_ok[None, :],
        other=0.0,
    )


@triton.jit
def store_rows(ptr, value, rows, row_ok, stride_row, cols, col_ok, stride_col):
    """Store ``value`` [len(rows), len(cols)] into ``ptr[rows, cols]`` in the pointer's dtype, where both are in range."""
    tl.store(
        ptr + rows[:, None] * stride_row + cols[None, :] * stride_col,
        value.to(ptr.dtype.element_ty),
        mask=row_ok[:, None] & col_ok[None, :],
    )


@triton.jit
def columns(first: tl.constexpr, width: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Column indices ``first + [0, width)`` of a head-dim chunk and which of them are < HEAD_DIM (a constant mask
    when the chunk lies inside the head, so the compiler drops it)."""
    cols = first + tl.arange(0, width)
    if first + width <= HEAD_DIM:
        ok = tl.full([width], 1, tl.int1)
    else:
        ok = cols < HEAD_DIM
    return cols, ok


@triton.jit
def last_columns(D0: tl.constexpr, D1: tl.constexpr, HEAD_DIM: tl.constexpr):
    """The second head-dim chunk: the last ``D1`` columns ``[HEAD_DIM - D1, HEAD_DIM)``, all valid, so its loads need
    no column mask. Returns (columns, load mask (all true), ``own``: the columns chunk 0 does not cover). Where the
    chunks overlap (D0 + D1 > HEAD_DIM, e.g. 88 = 64 + 32 - 8), the overlap is zeroed in the operand a program keeps
    in registers (so q k^T and dO v^T count it once) and not stored."""
    cols = (HEAD_DIM - D1) + tl.arange(0, D1)
    valid = tl.full([D1], 1, tl.int1)
    if D0 + D1 > HEAD_DIM:
        own = cols >= D0
    else:
        own = valid
    return cols, valid, own


@triton.jit
def drop_overlap(x, own, D0: tl.constexpr, D1: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Zero the columns of a second-chunk tile [rows, D1] that chunk 0 already covers (see ``last_columns``)."""
    if D0 + D1 > HEAD_DIM:
        x = tl.where(own[None, :], x, tl.zeros_like(x))
    return x


@triton.jit
def aligned(x, ALIGN: tl.constexpr):
    """``x`` rounded down to a multiple of ``ALIGN``: the identity on strides the launcher checked
    (``launch_plan.stride_alignment``), and a fact the compiler uses to vectorise loads into 16-byte accesses (Triton only
    detects multiples of 16 elements on its own; a head dim of 88 gives strides that are multiples of 8)."""
    if ALIGN > 1:
        x = x // ALIGN * ALIGN
    return x


@triton.jit
def seek(ptr, b, h, row, stride_b, stride_h, stride_n, ALIGN: tl.constexpr):
    """Pointer to token ``row`` (int64) of batch ``b``, head ``h`` of a [B, H, N, D] tensor, and its token stride,
    with the strides hinted as multiples of ``ALIGN`` (see ``aligned``; written out: every nested call costs the
    interpreter a millisecond). Offsets inside a block are 32-bit, relative to this pointer."""
    if ALIGN > 1:
        stride_b, stride_h, stride_n = stride_b // ALIGN * ALIGN, stride_h // ALIGN * ALIGN, stride_n // ALIGN * ALIGN
    return ptr + b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h + row * stride_n, stride_n
