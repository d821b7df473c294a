"""How the attention kernels cut their work: head-dim chunks, block-size configs, the split of the key loop.

Everything here is plain Python run at launch time; the kernels (``forward.py``, ``backward.py``) read the
results as ``tl.constexpr`` values or launch arguments.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import triton

#: Largest head dim the kernels take (two chunks of at most 128 columns each).
MAX_HEAD_DIM = 256


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1`` before triton is imported).
    Reads the environment as Triton does (``triton.knobs.runtime.interpret`` itself cannot be traced by
    torch.compile, and the input checks run while it traces)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on")


# ----- head dim ---------------------------------------------------------------------------------------------------
def head_dim_chunks(head_dim: int) -> tuple[int, int]:
    """Cover a head dim with at most two power-of-two column chunks ``(D0, D1)``, each at least 16 wide.

    ``tl.arange`` and ``tl.dot`` need power-of-two extents (and at least 16 for the tensor cores), so a head dim that
    is not a power of two has to be covered by wider tiles. Rounding up to the next power of two wastes a lot on the
    D4RT presets: 80 -> 128 is 60 % more matmul work, 88 -> 128 is 45 %. Instead chunk 0 is the first ``D0`` columns
    (the largest power of two <= D) and chunk 1 the LAST ``D1`` columns (the rest rounded up to a power of two):
    64 -> 64 + 0, 80 -> 64 + 16 (exact), 88 -> 64 + 32 (columns 56..87; 8 columns overlap), 96 -> 64 + 32 (exact).
    Each ``q k^T`` is two ``tl.dot`` s summed and each ``p v`` two accumulators. Because chunk 1 ends at the last
    column rather than running past it, every load in the inner loops is in bounds and needs no column mask (a
    masked column tail stops the compiler from vectorising and pipelining the loads: measured on sm_90 code, see
    ``benchmarks/compile_check.py``); the overlap is zeroed once in the operand a program keeps in registers and is
    not stored. ``D1 == 0`` means one chunk (the kernels drop the second at compile time).
    """
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head dim {head_dim} is not supported: the kernels take 1 to {MAX_HEAD_DIM}")
    d0 = max(16, 1 << (head_dim.bit_length() - 1))  # largest power of two <= head_dim (at least 16)
    rest = head_dim - d0
    d1 = 0 if rest <= 0 else max(16, triton.next_power_of_2(rest))
    return d0, d1


def bucket(n: int) -> int:
    """Autotuning key of a length: the next power of two, so a new query count does not retune the kernels."""
    return triton.next_power_of_2(max(int(n), 1))


# ----- block sizes ------------------------------------------------------------------------------------------------
def _configs(blocks: list[tuple[int, int, int, int]], names: tuple[str, str]) -> list[triton.Config]:
    return [triton.Config({names[0]: m, names[1]: n}, num_warps=w, num_stages=s) for m, n, w, s in blocks]


# (rows, cols, warps, stages). On a GPU the autotuner times each and keeps the fastest per key. The interpreter gets
# one small config: a single config is never benchmarked, and 32-wide blocks make small test shapes cross tails.
_GPU_FORWARD = [
    (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 32, 4, 4),
    (64, 64, 4, 3), (64, 128, 4, 3), (64, 32, 4, 4),
]  # fmt: skip
_GPU_BACKWARD_KV = [(32, 128, 4, 3), (64, 128, 8, 3), (64, 64, 4, 3), (32, 64, 4, 4)]  # (query rows, key rows)
_GPU_BACKWARD_Q = [(128, 32, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 4)]  # (query rows, key rows)
_INTERPRETER = [(32, 32, 4, 1)]


def forward_configs() -> list[triton.Config]:
    return _configs(_INTERPRETER if interpreting() else _GPU_FORWARD, ("BLOCK_M", "BLOCK_N"))


def backward_kv_configs() -> list[triton.Config]:
    return _configs(_INTERPRETER if interpreting() else _GPU_BACKWARD_KV, ("BLOCK_M", "BLOCK_N"))


def backward_q_configs() -> list[triton.Config]:
    return _configs(_INTERPRETER if interpreting() else _GPU_BACKWARD_Q, ("BLOCK_M", "BLOCK_N"))


def smallest_query_block() -> int:
    """The fewest query rows a forward program takes (the split-K decision counts programs with it)."""
    return min(c.kwargs["BLOCK_M"] for c in forward_configs())


def prune_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """The autotuner's early pruning (``BLOCK_M`` = query rows, ``BLOCK_N`` = key rows in every kernel):
    - blocks far larger than a group (128 query rows for Nq = 1, 128 key rows for a 33-key memory) only waste work;
    - float32 multiplies on CUDA cores ("ieee" dots, see ``forward.dot_precision``): on sm_90 a 64 x 64 tile spills
      7 kB of stack per thread and needs 140 kB of shared memory (``benchmarks/compile_check.py --dtype float32``),
      so float32 keeps tiles of at most 64 x 32.
    Keeps at least the smallest config.
    """
    args = {**named_args, **kwargs}
    rows, keys = triton.next_power_of_2(args["Q_GROUP"]), triton.next_power_of_2(args["K_GROUP"])
    smallest_m = min(c.kwargs["BLOCK_M"] for c in configs)
    smallest_n = min(c.kwargs["BLOCK_N"] for c in configs)
    fp32 = args["Q"].dtype == torch.float32
    kept = [
        c
        for c in configs
        if c.kwargs["BLOCK_M"] <= max(smallest_m, rows)
        and c.kwargs["BLOCK_N"] <= max(smallest_n, keys)
        and (not fp32 or c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 32)
    ]
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


def stride_alignment(*tensors: torch.Tensor) -> int:
    """The ``ALIGN`` hint of a launch: how many elements of the first tensor's dtype make 16 bytes, if every tensor
    starts on a 16-byte boundary and all its strides but the last are multiples of that; else 1 (no hint)."""
    elements = max(1, 16 // tensors[0].element_size())
    for t in tensors:
        if t.data_ptr() % 16 or any(s % elements for s in t.stride()[:-1]):
            return 1
    return elements


# ----- split of the key loop (split-K) ----------------------------------------------------------------------------
#: Keys per split are a multiple of this (the largest key block of any config), so only the last block of a split
#: can be partial.
SPLIT_GRANULE = max(n for _, n, _, _ in (_INTERPRETER if interpreting() else _GPU_FORWARD))
#: A split gets at least this many keys: below it the combine step costs more than the parallelism gains.
MIN_KEYS_PER_SPLIT = 2 * SPLIT_GRANULE
MAX_SPLITS = 64


@dataclass(frozen=True)
class SplitPlan:
    """The key loop of each query block runs as ``splits`` programs of ``keys_per_split`` keys (the last shorter)."""

    splits: int
    keys_per_split: int


def plan_splits(
    query_programs: int, keys: int, processors: int, requested: int = 0, granule: int | None = None
) -> SplitPlan:
    """Decide the split-K of a launch.

    Args:
        query_programs: programs without splitting (query blocks x groups x batch x heads).
        keys: keys each query sees (a group's keys).
        processors: streaming multiprocessors of the GPU.
        requested: a forced number of splits (tests); 0 decides: split only when the query programs fill less than
            the GPU, into enough splits for about two programs per processor, each at least ``MIN_KEYS_PER_SPLIT``.
        granule: keys per split round up to a multiple of this (default ``SPLIT_GRANULE``).
    Returns:
        a plan with no empty split (``splits`` may come out lower than requested for that reason).
    """
    granule = granule or SPLIT_GRANULE
    if requested < 0:
        raise ValueError(f"num_splits must be >= 0 (0 decides), got {requested}")
    if requested:
        splits = requested
    elif query_programs >= processors:
        splits = 1
    else:
        splits = min(triton.cdiv(2 * processors, query_programs), keys // MIN_KEYS_PER_SPLIT, MAX_SPLITS)
    splits = max(1, min(splits, triton.cdiv(keys, granule)))
    keys_per_split = triton.cdiv(triton.cdiv(keys, splits), granule) * granule
    return SplitPlan(splits=triton.cdiv(keys, keys_per_split), keys_per_split=keys_per_split)


@functools.lru_cache(maxsize=None)
def processor_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device. In the interpreter (CPU) we pretend to have 8, so the automatic
    split-K decision runs the same way on small test shapes as it does on a GPU with large ones."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 8
