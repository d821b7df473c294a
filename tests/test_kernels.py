"""The attention kernels against a float64 reference, by relative error ||out - ref|| / ||ref||.

On the CPU (CI) the kernels run in Triton's interpreter (conftest sets TRITON_INTERPRET=1), on small shapes. On a GPU
run the same file compiled: ``TRITON_INTERPRET=0 pytest tests/test_kernels.py`` (tests marked gpu then run too:
bfloat16, which the interpreter cannot do, and large shapes).

Every buffer the kernels write is filled with NaN before the launch (``poisoned_buffers``), so an element a kernel
forgets to write fails the test instead of passing as a stale value.
"""

from __future__ import annotations

import math

import pytest
import torch

from d4rt.kernels import cross_attention, local_attention
from d4rt.kernels import ops
from d4rt.kernels import launch_plan
from d4rt.kernels.launch_plan import SPLIT_GRANULE, head_dim_chunks, interpreting, plan_splits

INTERPRETING = interpreting()
DEVICE = "cpu" if INTERPRETING else "cuda"
pytestmark = pytest.mark.skipif(
    not INTERPRETING and not torch.cuda.is_available(), reason="TRITON_INTERPRET=0 needs a CUDA GPU"
)
gpu_only = pytest.mark.skipif(
    INTERPRETING or not torch.cuda.is_available(), reason="compiled kernels on a CUDA GPU (TRITON_INTERPRET=0)"
)
FWD_TOL, BWD_TOL = 1e-5, 1e-4  # float32


@pytest.fixture(autouse=True)
def poisoned_buffers(monkeypatch):
    def nan_filled(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(ops, "allocate", nan_filled)


# ----- helpers ----------------------------------------------------------------------------------------------------
def reference(q, k, v, window=None, scale=None, query_chunk=8192):
    """softmax(q k^T * scale) v in float64, optionally within windows; chunked over queries to bound memory."""
    q, k, v = q.double(), k.double(), v.double()
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    outs = []
    for start in range(0, q.shape[2], query_chunk):
        s = q[:, :, start : start + query_chunk] @ k.transpose(-1, -2) * scale
        if window:
            rows = torch.arange(start, start + s.shape[2], device=q.device) // window
            cols = torch.arange(k.shape[2], device=q.device) // window
            s = s.masked_fill(rows[:, None] != cols[None, :], float("-inf"))
        outs.append(torch.softmax(s, -1) @ v)
    return torch.cat(outs, 2)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def packed_qkv(B, H, N, D, dtype=torch.float32):
    """q, k, v [B, H, N, D] as the encoder makes them: strided views of one packed [B, N, 3, H, D] projection."""
    qkv = torch.randn(B, N, 3, H, D, dtype=dtype, device=DEVICE, requires_grad=True)
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
    return q, k, v


def decoder_qkv(B, H, Nq, Nk, D, dtype=torch.float32):
    """As the decoder makes them: q a view of [B, Nq, H, D]; k, v views of a packed [B, Nk, 2, H, D] projection."""
    q = torch.randn(B, Nq, H, D, dtype=dtype, device=DEVICE, requires_grad=True).transpose(1, 2)
    kv = torch.randn(B, Nk, 2, H, D, dtype=dtype, device=DEVICE, requires_grad=True)
    k, v = (t.transpose(1, 2) for t in kv.unbind(2))
    return q, k, v


def check_against_reference(out, q, k, v, window=None, scale=None, fwd_tol=FWD_TOL, bwd_tol=BWD_TOL):
    """Forward and (through a random upstream gradient) backward against float64."""
    assert out.shape == q.shape[:3] + (v.shape[3],) and out.dtype == q.dtype
    assert torch.isfinite(out).all(), "NaN in the output: an element was not written"
    ref = reference(q, k, v, window, scale)
    assert rel_err(out, ref) <= fwd_tol, rel_err(out, ref)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    want = torch.autograd.grad(reference(*leaves, window, scale), leaves, grad.double())
    for name, g, w in zip("qkv", got, want):
        assert torch.isfinite(g).all(), f"NaN in d{name}: an element was not written"
        if w.norm() == 0:  # e.g. one key: softmax is constant, dq = dk = 0; compare to the incoming gradient's size
            assert g.double().norm() <= bwd_tol * grad.double().norm(), f"d{name} should be 0: {g.norm()}"
        else:
            assert rel_err(g, w) <= bwd_tol, f"d{name}: {rel_err(g, w)}"


# ----- local attention --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "head_dim, window, windows",
    [(64, 37, 3), (80, 64, 2), (88, 45, 2), (64, 2, 5), (24, 7, 4)],
    ids=["D64-w37", "D80-w64", "D88-w45", "D64-w2", "D24-w7"],
)
def test_local_attention_matches_float64(head_dim, window, windows):
    q, k, v = packed_qkv(1, 2, window * windows, head_dim)
    check_against_reference(local_attention(q, k, v, window), q, k, v, window)


def test_local_attention_window_324_and_custom_scale():
    """An 18 x 18 frame: windows that are no multiple of any block size (forward; the backward's window tails are
    covered above at lower cost)."""
    q, k, v = packed_qkv(1, 1, 2 * 324, 64)
    with torch.no_grad():
        out = local_attention(q, k, v, 324, scale=0.3)
    assert rel_err(out, reference(q, k, v, 324, scale=0.3)) <= FWD_TOL


def test_local_windows_do_not_leak():
    q, k, v = packed_qkv(1, 2, 3 * 40, 64)
    out = local_attention(q, k, v, 40)
    v2 = v.detach().clone()
    v2[:, :, 40:80] = torch.randn_like(v2[:, :, 40:80])  # change window 1 only
    out2 = local_attention(q.detach(), k.detach(), v2, 40)
    assert torch.equal(out[:, :, :40].detach(), out2[:, :, :40]) and torch.equal(out[:, :, 80:].detach(), out2[:, :, 80:])
    assert (out[:, :, 40:80].detach() - out2[:, :, 40:80]).abs().max() > 1e-3


# ----- cross-attention --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "head_dim, n_queries, n_keys",
    [(64, 45, 70), (80, 1, 150), (88, 37, 97), (80, 3, 1), (64, 70, 33)],
    ids=["D64-q45-k70", "D80-q1-k150", "D88-q37-k97", "D80-q3-k1", "D64-q70-k33"],
)
def test_cross_attention_matches_float64(head_dim, n_queries, n_keys):
    q, k, v = decoder_qkv(2, 2, n_queries, n_keys, head_dim)
    check_against_reference(cross_attention(q, k, v), q, k, v)


def test_one_query_against_the_g_memory():
    """Nq = 1 against 6,145 keys (48 frames of 256 tokens + the aspect token): a key tail, and the automatic split-K
    (forward; split-K does not change the backward)."""
    q, k, v = decoder_qkv(1, 1, 1, 6145, 80)
    programs = 1  # one query block x one (batch, head): far fewer than the processors
    assert plan_splits(programs, 6145, ops.processor_count(q.device)).splits > 1
    with torch.no_grad():
        out = cross_attention(q, k, v)
    assert rel_err(out, reference(q, k, v)) <= FWD_TOL


@pytest.mark.parametrize("splits", [2, 3, 5])
def test_split_k_matches_float64(splits):
    """Forced splits of the key loop (the last one partial) and the combine step, log-sum-exp included."""
    q, k, v = decoder_qkv(1, 2, 20, 4 * SPLIT_GRANULE + 11, 88)
    scale = 0.125
    out, lse = ops.attention_op(q, k, v, 0, scale, splits)
    check_against_reference(out, q, k, v, scale=scale)
    s = q.detach().double() @ k.detach().double().transpose(-1, -2) * scale
    lse_ref = torch.logsumexp(s, -1) / math.log(2.0)  # the kernels keep it in base 2
    assert rel_err(lse, lse_ref) <= FWD_TOL


def test_no_queries():
    q, k, v = decoder_qkv(1, 2, 0, 50, 64)
    out = cross_attention(q, k, v)
    assert out.shape == (1, 2, 0, 64)
    dk, dv = torch.autograd.grad(out, (k, v), torch.randn_like(out))
    assert not dk.any() and not dv.any()


# ----- layouts, dtypes --------------------------------------------------------------------------------------------
def test_any_strides_and_output_layout():
    """Inputs with a transposed head dim (stride != 1) and a sliced batch; the output is [B, N, H, D] in memory."""
    B, H, Nq, Nk, D = 3, 2, 33, 40, 80
    q = torch.randn(B, H, D, Nq, device=DEVICE).transpose(-1, -2)[::2].requires_grad_()
    k = torch.randn(B * 2, Nk, H, D, device=DEVICE).transpose(1, 2)[1::3]
    v = torch.randn(B, H, Nk, D + 8, device=DEVICE)[1:, :, :, 4 : 4 + D]
    k, v = k.detach().requires_grad_(), v.detach().requires_grad_()
    out = cross_attention(q, k, v)
    assert out.transpose(1, 2).is_contiguous()
    check_against_reference(out, q, k, v)


def test_float16():
    q, k, v = packed_qkv(1, 2, 2 * 48, 88, torch.float16)
    check_against_reference(local_attention(q, k, v, 48), q, k, v, 48, fwd_tol=1e-3, bwd_tol=2e-3)
    q, k, v = decoder_qkv(1, 2, 5, 70, 64, torch.float16)
    check_against_reference(cross_attention(q, k, v), q, k, v, fwd_tol=1e-3, bwd_tol=2e-3)


@gpu_only
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gpu_preset_shapes(dtype):
    """The g preset's shapes, compiled: local windows of 256 at D = 88, cross-attention at D = 80 with 6,145 keys."""
    tol = {torch.bfloat16: (1e-2, 1e-2), torch.float16: (2e-3, 5e-3), torch.float32: (FWD_TOL, BWD_TOL)}[dtype]
    q, k, v = packed_qkv(2, 16, 4 * 256, 88, dtype)
    check_against_reference(local_attention(q, k, v, 256), q, k, v, 256, fwd_tol=tol[0], bwd_tol=tol[1])
    for n_queries in (1, 2048):
        q, k, v = decoder_qkv(1, 16, n_queries, 6145, 80, dtype)
        check_against_reference(cross_attention(q, k, v), q, k, v, fwd_tol=tol[0], bwd_tol=tol[1])


@gpu_only
@pytest.mark.gpu
def test_gpu_262144_queries():
    q, k, v = decoder_qkv(1, 2, 262144, 6145, 80, torch.bfloat16)
    with torch.no_grad():
        assert rel_err(cross_attention(q, k, v), reference(q, k, v)) <= 1e-2


# ----- the plan of split-K ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("programs, keys, processors", [(1, 6145, 132), (16, 6145, 132), (4096, 6145, 132),
                                                        (3, 100, 8), (1, 1, 132), (2, 300, 8)])  # fmt: skip
def test_split_plan_covers_every_key_once(programs, keys, processors):
    plan = plan_splits(programs, keys, processors)
    assert plan.keys_per_split % SPLIT_GRANULE == 0
    assert (plan.splits - 1) * plan.keys_per_split < keys <= plan.splits * plan.keys_per_split  # none empty
    if programs >= processors:
        assert plan.splits == 1
    for requested in (2, 7):
        forced = plan_splits(programs, keys, processors, requested=requested)
        assert 1 <= forced.splits <= requested
        assert (forced.splits - 1) * forced.keys_per_split < keys <= forced.splits * forced.keys_per_split


def test_autotune_pruning():
    gpu = launch_plan._configs(launch_plan._GPU_FORWARD, ("BLOCK_M", "BLOCK_N"))
    q16, q32 = torch.empty(0, dtype=torch.bfloat16), torch.empty(0)

    def blocks(q, rows, keys):
        return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in launch_plan.prune_configs(gpu, {"Q": q, "Q_GROUP": rows, "K_GROUP": keys})}

    assert blocks(q16, 65536, 6145) == {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in gpu}
    assert {m for m, _ in blocks(q16, 1, 6145)} == {64}  # one query: the smallest query block only
    assert {n for _, n in blocks(q16, 4096, 20)} == {32}  # 20 keys: the smallest key block only
    assert all(m * n <= 64 * 32 for m, n in blocks(q32, 4096, 4096))  # float32: small tiles


def test_head_dim_chunks():
    for d in range(1, 257):
        d0, d1 = head_dim_chunks(d)
        assert d0 >= 16 and d0 & (d0 - 1) == 0 and (d1 == 0 or (d1 >= 16 and d1 & (d1 - 1) == 0))
        assert d0 + d1 >= d and (d1 == 0 or d1 <= d)  # covers every column; chunk 1 starts inside the head
    assert [head_dim_chunks(d) for d in (64, 80, 88)] == [(64, 0), (64, 16), (64, 32)]


# ----- errors -----------------------------------------------------------------------------------------------------
def test_bad_inputs_are_refused():
    q, k, v = (torch.randn(1, 2, 12, 16, device=DEVICE) for _ in range(3))
    cases = [
        (lambda: local_attention(q, k, v, 5), "whole number of windows"),
        (lambda: local_attention(q, k, v, 0), "positive int"),
        (lambda: local_attention(q, k[:, :, :6], v[:, :, :6], 6), "self-attention within windows"),
        (lambda: cross_attention(q[0], k, v), r"\[B, H, N, D\]"),
        (lambda: cross_attention(q, k.half(), v), "dtype"),
        (lambda: cross_attention(q.double(), k.double(), v.double()), "dtype"),
        (lambda: cross_attention(q, k[:, :, :0], v[:, :, :0]), "no keys"),
        (lambda: cross_attention(q, k[:, :1], v[:, :1]), "same B, H, D"),
        (lambda: cross_attention(q, k, v[..., :8]), "same B, H, D"),
        (lambda: cross_attention(*(torch.randn(1, 1, 4, 300, device=DEVICE) for _ in range(3))), "head dim 300"),
        (lambda: cross_attention(q, k, v, scale=float("nan")), "finite"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q = torch.randn(1, 1, 4, 16)
    with pytest.raises(ValueError, match="CUDA tensors"):
        cross_attention(q, q, q)


# ----- torch integration ------------------------------------------------------------------------------------------
def test_opcheck():
    """torch.library.opcheck: schema, fake (meta) implementation, autograd registration, AOT dispatch."""
    q, k, v = packed_qkv(1, 2, 2 * 20, 24)
    torch.library.opcheck(ops.attention_op, (q, k, v, 20, 0.2, 0))


def test_compile_and_export_see_one_op():
    """torch.compile traces through without a graph break; torch.export keeps d4rt::attention as one node."""

    class Block(torch.nn.Module):
        def forward(self, qkv, memory):
            q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
            x = local_attention(q, k, v, 16)
            return cross_attention(x, memory, memory)

    qkv = torch.randn(1, 32, 3, 2, 16, device=DEVICE, requires_grad=True)
    memory = torch.randn(1, 2, 20, 16, device=DEVICE)
    eager = Block()(qkv, memory)
    compiled = torch.compile(Block(), fullgraph=True, backend="aot_eager")(qkv, memory)
    torch.testing.assert_close(compiled, eager)
    g_eager, g_compiled = (torch.autograd.grad(o, qkv, torch.ones_like(o))[0] for o in (eager, compiled))
    torch.testing.assert_close(g_compiled, g_eager)
    graph = torch.export.export(Block(), (qkv.detach(), memory)).graph
    targets = [str(n.target) for n in graph.nodes if n.op == "call_function"]
    assert targets.count("d4rt.attention.default") == 2, targets
