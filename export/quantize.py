"""int8 graphs for ONNX Runtime: dynamic quantization of an fp32 export's graphs (``d4rt export --precision int8``).

``onnxruntime.quantization.quantize_dynamic`` with int8 weights per output channel on every MatMul / Gemm whose
weight is a constant (each projection and MLP layer of both graphs, the heads, the query embedding), activations
quantized per tensor on the fly (uint8, ONNX Runtime's ``DynamicQuantizeLinear`` / ``MatMulInteger``, fused into
``DynamicQuantizeMatMul`` by its optimizer). Attention stays fp32: the fused
``com.microsoft.MultiHeadAttention`` node is not a MatMul, and a MatMul between two activations is never
quantized. The graphs' inputs and outputs keep their float32 contract, so ``load()`` runs them unchanged.

These ops are ONNX Runtime's: TensorRT cannot build engines from them (``d4rt build-engine`` refuses; TensorRT's
int8 wants explicit Q/DQ graphs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

QUANTIZED_OP_TYPES = ("MatMul", "Gemm")
# Layers with a weight dim below this stay fp32: the Fourier features of uv (34 inputs: 8-bit uv would be a pixel at
# 256^2) and the prediction heads (13 outputs, among them the small displacement); < 0.5 % of the decoder's work.
MIN_QUANTIZED_DIM = 64
METHOD = "onnxruntime.quantization.quantize_dynamic"
INSTALL_HINT = "`pip install onnxruntime` (its quantization package, onnxruntime.quantization, ships with it)"


def import_quantization():
    """onnxruntime.quantization, or ImportError saying how to install it."""
    import importlib

    try:
        quantization = importlib.import_module("onnxruntime.quantization")
    except ImportError as e:
        raise ImportError(f"int8 export needs ONNX Runtime's quantization package: {INSTALL_HINT} ({e})") from e
    return quantization


def constant_weight_nodes(model_proto, min_dim: int = 0) -> tuple[list[str], list[str]]:
    """(names of MatMul / Gemm nodes to quantize, names of those that stay fp32).

    Quantized: a constant weight (an initializer) whose both dims are at least ``min_dim``. fp32: products of two
    activations (attention's scores in an unfused graph) and small layers (the query embedding's Fourier features of
    uv, 34 inputs; the 13-column prediction heads), where int8 would cost accuracy and save no time.
    """
    from onnx import numpy_helper  # noqa: F401  (dims are read from the protos)

    initializers = {t.name: t for t in model_proto.graph.initializer}
    weighted, other = [], []
    for node in model_proto.graph.node:
        if node.op_type in QUANTIZED_OP_TYPES and node.domain in ("", "ai.onnx"):
            weight = initializers.get(node.input[1]) if len(node.input) > 1 else None
            big = weight is not None and len(weight.dims) == 2 and min(weight.dims) >= min_dim
            (weighted if big else other).append(node.name)
    return weighted, other


def gemms_as_matmuls(model_proto) -> int:
    """Rewrite every Gemm with a constant weight as MatMul (+ Add of its bias), in place; returns how many.

    ONNX Runtime's dynamic quantizer quantizes MatMul, not Gemm (its IntegerOpsRegistry has no Gemm), and the
    exported decoder is all Gemms (2-D token matrices). ``Y = A B^T + C`` becomes ``MatMul(A, B^T) + C`` with B^T
    stored transposed (the same numbers); ONNX Runtime fuses the quantized MatMul and its Add again
    (DynamicQuantizeMatMul with bias).
    """
    from onnx import helper, numpy_helper

    graph = model_proto.graph
    initializers = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    nodes, rewritten = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx") or not plain or node.input[1] not in initializers:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            array = numpy_helper.to_array(initializers[weight]).T.copy()
            name = weight if uses[weight] == 1 else f"{weight}_transposed_for_{node.name}"
            tensor = numpy_helper.from_array(array, name)
            if name == weight:
                initializers[weight].CopyFrom(tensor)
            else:
                graph.initializer.append(tensor)
            weight = name
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        product = f"{node.output[0]}_matmul" if bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}_MatMul"))
        if bias:
            nodes.append(helper.make_node("Add", [product, bias], [node.output[0]], name=f"{node.name}_Add"))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # shapes of the old weights / outputs: the quantizer infers them again
    return rewritten


def quantize_graph(src: str | Path, dst: str | Path, external_data: bool = False) -> dict[str, Any]:
    """Write the dynamically quantized ``src`` graph to ``dst``; returns the manifest's per-graph record.

    Args:
        src: an fp32 graph of this package's export (its metadata, e.g. the export id, is kept).
        dst: where the int8 graph goes (its weights beside it in ``dst.data`` when ``external_data``).
    Returns:
        {"method", "weights", "activations", "op_types", "quantized_nodes", "fp32_nodes", "attention"}.
    """
    import onnx

    quantization = import_quantization()
    src, dst = Path(src), Path(dst)
    proto = onnx.load(str(src))
    gemms_as_matmuls(proto)
    weighted, other = constant_weight_nodes(proto, MIN_QUANTIZED_DIM)
    metadata = {p.key: p.value for p in proto.metadata_props}
    attention = sorted({n.op_type for n in proto.graph.node if "Attention" in n.op_type})
    logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer logs one line per skipped node
    quantization.quantize_dynamic(
        proto, str(dst), op_types_to_quantize=list(QUANTIZED_OP_TYPES), per_channel=True, reduce_range=False,
        weight_type=quantization.QuantType.QInt8, nodes_to_exclude=other, use_external_data_format=external_data,
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},  # (all float32)
    )
    del proto
    out = onnx.load(str(dst), load_external_data=False)
    kept = {p.key: p.value for p in out.metadata_props}
    if any(kept.get(k) != v for k, v in metadata.items()):
        raise RuntimeError(f"quantizing {src} lost the graph's metadata {sorted(metadata)}: an export bug, please report it")
    integer_ops = sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul", "QGemm") for n in out.graph.node)
    remaining = sum(n.op_type in QUANTIZED_OP_TYPES for n in out.graph.node)
    return {
        "method": METHOD,
        "weights": "int8, symmetric, per output channel",
        "activations": "uint8, per tensor, dynamic (computed per batch)",
        "op_types": list(QUANTIZED_OP_TYPES),
        "quantized_nodes": integer_ops,
        "fp32_nodes": remaining,
        "attention": (", ".join(attention) or "none") + " in float32",
    }

