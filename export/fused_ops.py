"""What the exported graphs fuse: attention as one node, GELU in the pattern ONNX Runtime fuses.

Attention. The plain pattern MatMul -> Softmax -> MatMul holds the H x N x M scores, so ONNX Runtime's peak memory
grows with the query batch (base, 8k -> 32k queries: 2.4 -> 4.8 GB). Measured on ONNX Runtime 1.32's CPU provider
(docs/performance.md): ONNX's own opset-23 ``Attention``, and ``com.microsoft.MultiHeadAttention`` with keys in
[B, H, M, Dh], run an unfused kernel (scores held; no faster); ``MultiHeadAttention`` with query, key and value all
[B, N, H * Dh] runs its flash-attention kernel (MLAS, blocked on the L2 cache): no scores held, memory flat in N.
TensorRT's ONNX parser takes no ``com.microsoft`` op, so graphs for TensorRT are exported with the plain pattern
(``export_onnx(..., attention="standard")``), which TensorRT fuses into its own MHA kernels.

How: :func:`multi_head_attention` is a torch custom op (eager implementation: sdpa) that the model calls through
its pluggable attention backend (:func:`onnx_runtime_attention`); the exporter translates it to the contrib node
through ``custom_translation_table`` (:data:`ONNX_TRANSLATIONS`). The model carries no export code.

GELU. torch's exporter writes exact GELU as ((1 + erf(x / sqrt 2)) * 0.5) * x, an order ONNX Runtime's GeluFusion
does not match, so each GELU stayed five nodes. :func:`_gelu_onnx` writes (0.5 x) (1 + erf(x / sqrt 2)), the
pattern it fuses into one Gelu node: standard ops, the same arithmetic up to rounding, in every export.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CONTRIB_DOMAIN = "com.microsoft"


@torch.library.custom_op("d4rt_export::multi_head_attention", mutates_args=())
def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v per head. q [B, N, H * Dh], k, v [B, M, H * Dh] -> [B, N, H * Dh]."""
    B, N, D = q.shape
    M, Dh = k.shape[1], D // num_heads

    def heads(x: torch.Tensor, n: int) -> torch.Tensor:
        return x.reshape(B, n, num_heads, Dh).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads(q, N), heads(k, M), heads(v, M), scale=scale)
    return out.transpose(1, 2).reshape(B, N, D)


@multi_head_attention.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float) -> torch.Tensor:
    return q.new_empty(q.shape)


def onnx_runtime_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """An attention backend for :func:`d4rt.models.attention.attend`: q [B, H, N, Dh], k, v [B, H, M, Dh] ->
    [B, H, N, Dh] through :func:`multi_head_attention` (heads merged into the last axis, the op's layout)."""
    B, H, N, Dh = q.shape

    def merged(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(B, x.shape[2], H * Dh)

    out = torch.ops.d4rt_export.multi_head_attention(merged(q), merged(k), merged(v), H, scale)
    return out.reshape(B, N, H, Dh).transpose(1, 2)


def _multi_head_attention_onnx(q, k, v, num_heads: int, scale: float):
    import onnxscript

    op = onnxscript.values.Op(onnxscript.values.Opset(CONTRIB_DOMAIN, 1), "MultiHeadAttention", _contrib_schema())
    return op(q, k, v, num_heads=num_heads, scale=scale)


def _contrib_schema():
    """The part of ONNX Runtime's MultiHeadAttention schema we use (onnx's registry has no com.microsoft ops):
    query [B, N, H * Dh], key, value [B, M, H * Dh] -> output [B, N, H * Dh]; attributes num_heads, scale."""
    from onnx.defs import OpSchema

    T = "T"
    return OpSchema(
        "MultiHeadAttention", CONTRIB_DOMAIN, 1,
        inputs=[OpSchema.FormalParameter(name, T) for name in ("query", "key", "value")],
        outputs=[OpSchema.FormalParameter("output", T)],
        type_constraints=[(T, ["tensor(float)", "tensor(float16)"], "float tensors")],
        attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "heads"),
                    OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, "softmax scale")],
    )


def _gelu_onnx(x, approximate: str = "none"):
    """Exact GELU as Mul(x, 0.5) * Add(Erf(Div(x, sqrt 2)), 1): ONNX Runtime's GeluFusion pattern."""
    from onnxscript import opset18 as op

    if approximate != "none":
        raise ValueError(f"GELU approximate={approximate!r}: D4RT uses the exact (erf) GELU only")
    half_x = op.Mul(x, op.CastLike(0.5, x))
    return op.Mul(half_x, op.Add(op.Erf(op.Div(x, op.CastLike(1.4142135623730951, x))), op.CastLike(1.0, x)))


# aten op -> ONNX translation, for torch.onnx.export(custom_translation_table=...). GELU always; attention only when
# the model's attention backend is onnx_runtime_attention (else no graph node calls it).
ONNX_TRANSLATIONS = {
    torch.ops.d4rt_export.multi_head_attention.default: _multi_head_attention_onnx,
    torch.ops.aten.gelu.default: _gelu_onnx,
}
