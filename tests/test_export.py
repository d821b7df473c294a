"""Split ONNX export: the graphs' contract, parity with eager PyTorch (ONNX Runtime and onnx's reference
evaluator), the float16 variant, external data, and bad export arguments."""

import json
from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from d4rt.export import export_onnx, verify_export
from d4rt.export.parity import relative_error
from d4rt.runtime.manifest import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    graph_contract,
    read_manifest,
    sha256_file,
)
from tests.exported import exported, random_model


def test_graphs_follow_the_contract():
    model, directory = exported("tiny", 4, "fp32")
    manifest = read_manifest(directory)
    cfg = model.config
    assert manifest.frame_range == (2, 4)  # the frame axis is dynamic: M follows T
    assert manifest.tensors("encoder", "outputs")[0].shape == (cfg.dec_depth, 1, cfg.dec_heads, "M", cfg.dec_head_dim)
    assert manifest.memory_tokens == 4 // 2 * (cfg.image_size // 16) ** 2 + 1
    graphs = (("encoder", ENCODER_INPUTS, ENCODER_OUTPUTS), ("decoder", DECODER_INPUTS, DECODER_OUTPUTS))
    for graph, inputs, outputs in graphs:
        proto = onnx.load(str(directory / f"{graph}.onnx"))
        onnx.checker.check_model(proto, full_check=True)
        assert tuple(i.name for i in proto.graph.input) == inputs
        assert tuple(o.name for o in proto.graph.output) == outputs
        assert {o.domain: o.version for o in proto.opset_import}[""] == manifest.opset == 18
        ops = Counter(n.op_type for n in proto.graph.node)
        assert ops["LayerNormalization"] > 0 and ops["ReduceMean"] == 0, "LayerNorm must be one node, not decomposed"
        assert manifest.graphs[graph]["sha256"] == sha256_file(directory / f"{graph}.onnx")
    # the dynamic dimensions by name: N on the query tensors, T on video, M on keys / values
    decoder = onnx.load(str(directory / "decoder.onnx"), load_external_data=False)
    dynamic = {v.name: tuple(d.dim_param for d in v.type.tensor_type.shape.dim if d.dim_param)
               for v in [*decoder.graph.input, *decoder.graph.output]}
    assert dynamic == {"video": ("T",), "keys": ("M",), "values": ("M",), "uv": ("N",), "t": ("N",),
                       **{name: ("N",) for name in DECODER_OUTPUTS}}
    weights = directory / "checkpoint" / "model.safetensors"
    assert manifest.checkpoint["sha256"]["model.safetensors"] == sha256_file(weights)
    assert manifest.config == cfg.to_dict() and "attention" not in manifest.config


def test_fp32_parity_with_eager_pytorch():
    model, directory = exported("tiny", 4, "fp32")
    report = verify_export(model, directory, queries=777)
    assert report.passed and report.tolerance == 1e-4
    assert report.worst < 1e-5  # measured ~1e-6: float32 round-off only
    assert set(report.errors) == {"encoder", "decoder", "end_to_end"}
    assert json.loads((directory / "manifest.json").read_text())["parity"]["passed"] is True


def test_reference_evaluator_agrees_with_onnxruntime_and_torch():
    """onnx's pure-numpy reference implementation of every op, on the same graphs."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class GatherElements(OpRun):
        """np.take_along_axis, ONNX's definition. onnx 1.23's reference GatherElements uses np.choose, which
        fails above 32 values along the axis (our RGB patches gather from the whole flattened video)."""

        op_domain = ""

        def _run(self, data, indices, axis=0):
            indices = np.where(indices < 0, indices + data.shape[axis], indices)
            return (np.take_along_axis(data, indices, axis=axis),)

    class MultiHeadAttention(OpRun):
        """ONNX Runtime's com.microsoft.MultiHeadAttention as its operator docs define it, in float64 numpy:
        query [B, N, H * Dh], key, value [B, M, H * Dh]; per head softmax(q k^T * scale) v."""

        op_domain = "com.microsoft"

        def _run(self, query, key, value, num_heads=None, scale=None):
            B, N, D = query.shape
            Dh = D // num_heads

            def heads(x):
                return x.astype(np.float64).reshape(B, x.shape[1], num_heads, Dh).transpose(0, 2, 1, 3)

            q, k, v = heads(query), heads(key), heads(value)
            scores = q @ k.transpose(0, 1, 3, 2) * (scale or 1 / np.sqrt(Dh))
            p = np.exp(scores - scores.max(-1, keepdims=True))
            out = (p / p.sum(-1, keepdims=True)) @ v
            return (out.transpose(0, 2, 1, 3).reshape(B, N, D).astype(query.dtype),)

    model, directory = exported("tiny", 4, "fp32")
    T, S = 4, model.config.image_size
    video = torch.rand(1, T, 3, S, S)
    aspect = torch.tensor([0.75])
    uv = torch.rand(1, 9, 2)
    t = torch.randint(0, T, (1, 9, 3), dtype=torch.int32)
    encoder = ReferenceEvaluator(str(directory / "encoder.onnx"), new_ops=[MultiHeadAttention])
    keys, values = encoder.run(None, {"video": video.numpy(), "aspect_ratio": aspect.numpy()})
    outs = ReferenceEvaluator(str(directory / "decoder.onnx"), new_ops=[GatherElements, MultiHeadAttention]).run(
        None, {"video": video.numpy(), "keys": keys, "values": values, "uv": uv.numpy(), "t": t.numpy()})
    with torch.no_grad():
        ref = model(video, uv, t[..., 0].long(), t[..., 1].long(), t[..., 2].long(), aspect)
        ref_keys, _ = model.memory_kv(model.encode(video, aspect))
    assert relative_error(keys, ref_keys.numpy()) < 1e-5
    for name, out in zip(DECODER_OUTPUTS, outs):
        key = "uv" if name == "uv_tgt" else name
        assert relative_error(out, ref[key].numpy()) < 1e-5, name


def optimized_ops(path) -> Counter:
    """Op counts of a graph after ONNX Runtime's CPU optimizations (its fusions)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # fusions, no layouts
    options.optimized_model_filepath = str(path.parent / (path.stem + ".ort-optimized.onnx"))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    found = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    (path.parent / (path.stem + ".ort-optimized.onnx")).unlink()
    return found


def test_fused_attention_gemm_and_gelu_in_the_default_export():
    """fp32 default: every attention one com.microsoft.MultiHeadAttention node (no Softmax: no score matrix);
    projections and MLPs 2-D Gemms with their bias; each GELU written so ONNX Runtime fuses it into one node."""
    model, directory = exported("tiny", 4, "fp32")
    cfg, manifest = model.config, read_manifest(directory)
    attention_layers = {"encoder": cfg.enc_depth, "decoder": cfg.dec_depth}
    for graph in ("encoder", "decoder"):
        assert manifest.graphs[graph]["attention"] == "com.microsoft.MultiHeadAttention"
        ops = Counter(n.op_type for n in onnx.load(str(directory / f"{graph}.onnx")).graph.node)
        assert ops["MultiHeadAttention"] == attention_layers[graph] and ops["Softmax"] == 0, ops
    fused = optimized_ops(directory / "decoder.onnx")
    # per block: q projection, out projection, two MLP layers; patch MLP (2) + uv projection; the six heads as one
    assert fused["Gemm"] == 4 * cfg.dec_depth + 3 + 1, fused
    assert fused["Gelu"] == cfg.dec_depth + 1 and fused["Erf"] == 0, fused
    assert fused["MatMul"] == 0, fused


def test_standard_attention_export_for_tensorrt():
    """attention="standard": plain ONNX (MatMul -> Softmax -> MatMul), only ops TensorRT parses, same parity."""
    from d4rt.export.tensorrt import tensorrt_unsupported_nodes

    model, directory = exported("tiny", 4, "fp32", attention="standard")
    manifest = read_manifest(directory)
    for graph in ("encoder", "decoder"):
        proto = onnx.load(str(directory / f"{graph}.onnx"))
        assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
        assert Counter(n.op_type for n in proto.graph.node)["Softmax"] > 0
        assert tensorrt_unsupported_nodes(proto) == []
        assert manifest.graphs[graph]["attention"] == "MatMul-Softmax-MatMul"
    report = verify_export(model, directory, queries=300)
    assert report.passed and report.tolerance == 1e-4, report.table()


def test_fp16_export_keeps_norms_and_softmax_in_float32_and_uses_external_data():
    model, directory = exported("tiny", 2, "fp16", external_data=True)
    manifest = read_manifest(directory)
    assert manifest.kv_dtype == "float16"
    for graph in ("encoder", "decoder"):
        data = manifest.graphs[graph]["external_data"]
        assert [d["file"] for d in data] == [f"{graph}.onnx.data"]
        assert data[0]["sha256"] == sha256_file(directory / f"{graph}.onnx.data")
        proto = onnx.load(str(directory / f"{graph}.onnx"), load_external_data=False)
        producer = {o: n for n in proto.graph.node for o in n.output}
        consumers = {}
        for n in proto.graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        guarded = [n for n in proto.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
        assert guarded
        for node in guarded:
            cast_in = producer[node.input[0]]
            assert cast_in.op_type == "Cast" and cast_in.attribute[0].i == onnx.TensorProto.FLOAT, node.name
            after = consumers[node.output[0]]
            assert all(c.op_type == "Cast" and c.attribute[0].i == onnx.TensorProto.FLOAT16 for c in after), node.name
        matmul_types = {init.data_type for init in proto.graph.initializer if len(init.dims) == 2}
        assert onnx.TensorProto.FLOAT16 in matmul_types
    report = verify_export(model, directory, queries=512)  # against the float32 eager model
    assert report.passed and report.tolerance == 1e-2
    assert 1e-6 < report.worst < 5e-3  # float16 round-off, far from the tolerance


@pytest.mark.slow
def test_base_parity_on_a_short_clip():
    model, directory = exported("base", 2, "fp32")
    report = verify_export(model, directory, queries=300)
    assert report.passed, report.table()


def test_export_refuses_bad_arguments(tmp_path):
    model = random_model("tiny")
    with pytest.raises(ValueError, match="multiple of 2"):
        export_onnx(model, tmp_path, num_frames=3)
    with pytest.raises(ValueError, match="up to 16"):
        export_onnx(model, tmp_path, num_frames=18)
    with pytest.raises(ValueError, match="precision"):
        export_onnx(model, tmp_path, precision="int4")
    with pytest.raises(ValueError, match="opset >= 17"):
        export_onnx(model, tmp_path, opset=16)
    with pytest.raises(ValueError, match="attention='flash' is not an export attention form"):
        export_onnx(model, tmp_path, attention="flash")
    with pytest.raises(ValueError, match="fp32 and int8 graphs only.*--attention standard"):
        export_onnx(model, tmp_path, precision="fp16", attention="onnxruntime")
    assert model.attention == "sdpa"  # untouched by the refused exports
    assert not (tmp_path / "manifest.json").exists()


def test_parity_check_fails_for_a_different_model():
    """verify_export must catch graphs that belong to other weights (it compares, it does not assume)."""
    from d4rt.export.parity import ParityError

    import torch

    model, directory = exported("tiny", 4, "fp32")
    other = random_model("tiny")
    assert not torch.equal(other.heads.xyz_head.weight, model.heads.xyz_head.weight)  # other weights indeed
    with pytest.raises(ParityError, match="does not match"):
        verify_export(other, directory, queries=64, record=False)


def test_contract_sizes():
    cfg = random_model("tiny").config.to_dict()
    c = graph_contract(cfg, 16, "fp32")
    assert c["encoder"]["outputs"][0].shape == (2, 1, 3, 8 * 64 + 1, 64)
    assert [s.dtype for s in c["decoder"]["inputs"]] == ["float32", "float32", "float32", "float32", "int32"]
    assert graph_contract(cfg, 16, "fp16")["decoder"]["inputs"][1].dtype == "float16"
    assert np.all([s.shape[1] == "N" for s in c["decoder"]["outputs"]])
