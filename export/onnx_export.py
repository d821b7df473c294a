"""Split ONNX export: encoder.onnx + decoder.onnx + manifest.json (design.md's tensor contract).

torch.onnx's dynamo exporter (torch.export + onnxscript), opset 18 by default (LayerNormalization is a single node
from opset 17), the query count N dynamic, the frame count T dynamic (any multiple of the tubelet's frames in
[min_frames, num_frames]; the sinusoidal position table is sliced to the clip), S fixed per export. Each graph passes ``onnx.checker``'s full
check (with shape inference) and must match the contract in ``d4rt.runtime.manifest`` before the manifest is
written; the manifest is written last, so a failed export leaves no manifest behind.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from d4rt.export.fused_ops import ONNX_TRANSLATIONS, onnx_runtime_attention
from d4rt.export.graphs import DecoderGraph, EncoderGraph
from d4rt.export.precision import to_float16
from d4rt.runtime.manifest import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    DYNAMIC_DIMS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    EXPORT_ID_KEY,
    GRAPH_FILES,
    MANIFEST_NAME,
    PRECISIONS,
    FRAME_DIM,
    MEMORY_DIM,
    QUERY_DIM,
    Manifest,
    TensorSpec,
    graph_contract,
    sha256_file,
    write_manifest,
)

DEFAULT_OPSET = 18
MIN_OPSET = 17  # single-node LayerNormalization
PROTOBUF_LIMIT_BYTES = 2**31  # the most one serialized ONNX file (a protobuf) can hold
# Above this many bytes of weights (auto), each graph's weights go to a .onnx.data file beside it.
EXTERNAL_DATA_BYTES = 1800 * 1024**2
# How attention is written into the graphs (d4rt.export.fused_ops): "onnxruntime" = one com.microsoft.MultiHeadAttention
# node (ONNX Runtime's flash-attention kernel on the CPU; TensorRT's parser refuses it), "standard" = MatMul ->
# Softmax -> MatMul (any ONNX runtime; TensorRT fuses it itself).
ATTENTION_FORMS = {"onnxruntime": "com.microsoft.MultiHeadAttention", "standard": "MatMul-Softmax-MatMul"}
MAX_QUERIES_TRACED = 2**24  # the upper bound of the dynamic N given to torch.export
# The exporter logs a warning per missing optional library (torchvision ops) on every export: not ours to report.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def onnx_tensor_specs(model_proto, kind: str) -> list[TensorSpec]:
    """The inputs or outputs of a loaded ONNX model as TensorSpecs (dynamic dims by name: "N", "T", "M"; any other
    dynamic dim -> "?", which no contract accepts)."""
    from onnx.helper import tensor_dtype_to_np_dtype

    specs = []
    for value in getattr(model_proto.graph, kind):
        t = value.type.tensor_type
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param if d.dim_param in DYNAMIC_DIMS else "?")
            for d in t.shape.dim
        )
        specs.append(TensorSpec(value.name, shape, tensor_dtype_to_np_dtype(t.elem_type).name))
    return specs


def external_data_files(path: Path) -> list[str]:
    """Names of the external-data files an ONNX file refers to (relative to its directory)."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    proto = onnx.load(str(path), load_external_data=False)
    locations = set()
    for tensor in _get_all_tensors(proto):
        if uses_external_data(tensor):
            locations.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(locations)


def fold_weight_slices(model) -> None:
    """Keep only the rows of a packed weight that a graph uses (in place, on the exporter's ``onnx_ir`` model).

    A decoder block's packed ``in_proj_weight`` [3C, C] feeds both graphs: its K/V rows the encoder graph
    (``memory_kv``), its Q rows the decoder graph. The exporter stores the whole weight in each graph behind a
    Slice (then a Transpose); folding a Slice whose weight has no other use stores just the slice. For g in
    float16 this takes 26 MB off the encoder graph and 52 MB (18 %) off the decoder graph; outputs are unchanged.
    """
    from onnxscript.optimizer import fold_constants

    def sole_use_of_a_weight(node) -> bool | None:
        data = node.inputs[0] if node.op_type == "Slice" and node.domain in ("", "ai.onnx") else None
        return True if data is not None and data.is_initializer() and len(data.uses()) == 1 else None

    fold_constants(model, should_fold=sole_use_of_a_weight)


def _check_fits_one_protobuf(config, precision: str) -> None:
    """Refuse, before tracing, an export without external data whose graph's weights cannot fit one protobuf."""
    from d4rt.memory_plan import graph_parameters

    value_bytes = 2 if precision == "fp16" else 4
    for graph, count in graph_parameters(config).items():
        if count * value_bytes >= PROTOBUF_LIMIT_BYTES:
            raise ValueError(
                f"the {graph}'s weights ({count * value_bytes / 1e9:.2f} GB in {precision}) cannot be stored inside "
                f"one ONNX file (a protobuf holds at most 2 GB): export them as external data "
                f"(`d4rt export --external-data auto` or `yes`; export_onnx(external_data=None or True))"
            )


def _check_num_frames(model: nn.Module, num_frames: int | None, min_frames: int | None) -> tuple[int, int]:
    """(min_frames, num_frames) of the export's frame axis, both multiples of the tubelet's frames."""
    cfg = model.config
    T = cfg.num_frames if num_frames is None else int(num_frames)
    tt = cfg.tubelet[0]
    if T <= 0 or T % tt or T > cfg.num_frames:
        raise ValueError(
            f"num_frames={T} is not valid for this model: a positive multiple of {tt} up to {cfg.num_frames}"
        )
    lo = tt if min_frames is None else int(min_frames)
    if lo <= 0 or lo % tt or lo > T:
        raise ValueError(f"min_frames={min_frames} is not valid: a positive multiple of {tt} up to num_frames={T}")
    return lo, T


def name_dynamic_dims(model, frame_axis: bool) -> None:
    """Give the graph's dynamic dims their contract names (in place, on the exporter's ``onnx_ir`` model): "N" for
    the query count, "T" for video's frame axis, "M" for the memory tokens (keys / values dim 3). torch.export names
    them after its symbols (``2*frame_pairs``, ``64*s29 + 1``); TensorRT profiles and the manifest use the names."""
    import onnx_ir as ir

    for value in [*model.graph.inputs, *model.graph.outputs]:
        dims = list(value.shape)
        if value.name == "video" and frame_axis:
            dims[1] = FRAME_DIM
        elif value.name in ("keys", "values") and frame_axis:
            dims[3] = MEMORY_DIM
        elif value.name not in ("video", "keys", "values", "aspect_ratio"):
            dims[1] = QUERY_DIM
        value.shape = ir.Shape(dims)


def _quantize_in_place(path: Path, external_data: bool) -> dict[str, Any]:
    """Replace the fp32 graph at ``path`` by its dynamically quantized int8 form; returns its quantization record."""
    from d4rt.export.quantize import quantize_graph

    quantized = path.with_name("int8-" + path.name)
    record = quantize_graph(path, quantized, external_data)
    for name in external_data_files(path):
        (path.parent / name).unlink(missing_ok=True)
    if external_data:  # the int8 weights go to the name the contract expects beside the graph
        import onnx
        from onnx.external_data_helper import load_external_data_for_model

        proto = onnx.load(str(quantized), load_external_data=False)
        load_external_data_for_model(proto, str(path.parent))
        for name in external_data_files(quantized):
            (path.parent / name).unlink(missing_ok=True)
        quantized.unlink()
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data")
    else:
        quantized.replace(path)
    import onnx

    onnx.checker.check_model(str(path))  # (no full check: the com.microsoft ops have no ONNX shape inference)
    return record


def export_onnx(
    model: nn.Module,
    out_dir: str | Path,
    *,
    precision: str = "fp32",
    num_frames: int | None = None,
    min_frames: int | None = None,
    opset: int = DEFAULT_OPSET,
    checkpoint: dict[str, Any] | None = None,
    external_data: bool | None = None,
    attention: str | None = None,
    progress: bool = True,
) -> Manifest:
    """Export ``model`` as encoder.onnx + decoder.onnx into ``out_dir`` and write manifest.json.

    Args:
        model: a D4RT (float32 weights); its attention backend is switched for the export and restored after.
        precision: "fp32", "fp16" (float16 weights and activations, LayerNorm statistics and softmax in float32;
            see :mod:`d4rt.export.precision`), or "int8" (the fp32 graphs dynamically quantized for ONNX Runtime:
            int8 per-channel weights on every MatMul / Gemm, attention fp32; see :mod:`d4rt.export.quantize`).
        num_frames: the most frames a clip may have (default: the config's num_frames).
        min_frames: the fewest (default: the tubelet's frames, 2): the graphs take any multiple of the tubelet's
            frames in [min_frames, num_frames]; min_frames = num_frames gives graphs of exactly that many frames.
        opset: ONNX opset, at least 17.
        checkpoint: what the weights came from, recorded in the manifest (path, sha256, ...).
        external_data: store the weights in ``*.onnx.data`` beside each graph; default: when they exceed
            ~1.8 GB (one protobuf holds at most 2 GB).
        attention: "onnxruntime" (default for fp32): every attention one ``com.microsoft.MultiHeadAttention`` node,
            ONNX Runtime's fused (flash) kernel: fastest on ONNX Runtime, memory flat in the query batch, but
            TensorRT's parser refuses it. "standard" (default, and the only choice, for fp16): MatMul -> Softmax
            -> MatMul in plain ONNX, for TensorRT (``d4rt build-engine``), which fuses it itself.
    Returns:
        the written Manifest.
    """
    import onnx
    from tqdm import tqdm

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8-qdq":
        raise ValueError(
            "int8-qdq graphs are calibrated on clips: export them with d4rt.export.int8_qdq.export_int8_qdq(model, "
            "out_dir, calibration=DIR_OR_VIDEO) (`d4rt export --precision int8-qdq --calibration DIR_OR_VIDEO`)"
        )
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old: LayerNormalization needs opset >= {MIN_OPSET}")
    if attention is None:
        attention = "standard" if precision == "fp16" else "onnxruntime"
    if attention not in ATTENTION_FORMS:
        raise ValueError(f"attention={attention!r} is not an export attention form; choose one of {sorted(ATTENTION_FORMS)}")
    if attention == "onnxruntime" and precision == "fp16":
        raise ValueError(
            "attention='onnxruntime' (the fused com.microsoft op) is exported for fp32 and int8 graphs only; export "
            "fp16 with attention='standard' (`--attention standard`)"
        )
    if attention == "standard" and precision == "int8":
        raise ValueError(
            "int8 graphs are ONNX Runtime's (dynamic quantization) and keep its fused attention: drop "
            "attention='standard' (`--attention standard`); for TensorRT export fp16, or int8-qdq"
        )
    if precision == "int8":
        from d4rt.export.quantize import import_quantization

        import_quantization()  # a missing package is refused before any work
    T_min, T = _check_num_frames(model, num_frames, min_frames)
    dynamic_frames = T_min < T
    cfg = model.config
    S = cfg.image_size
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # no manifest unless this export completes

    export_id = uuid.uuid4().hex
    previous_attention = model.attention
    graph_model = to_float16(model) if precision == "fp16" else model.eval()
    graph_model.set_attention(onnx_runtime_attention if attention == "onnxruntime" else "eager")
    try:
        weight_bytes = sum(p.numel() * p.element_size() for p in graph_model.parameters())
        use_external = weight_bytes > EXTERNAL_DATA_BYTES if external_data is None else bool(external_data)
        if not use_external:
            _check_fits_one_protobuf(cfg, precision)
        video = torch.rand(1, T, 3, S, S)
        aspect_ratio = torch.rand(1) + 0.5
        n = 64
        uv = torch.rand(1, n, 2)
        t = torch.randint(0, T, (1, n, 3), dtype=torch.int32)
        encoder, decoder = EncoderGraph(graph_model).eval(), DecoderGraph(graph_model).eval()
        contract = graph_contract(cfg.to_dict(), T, precision, dynamic_frames)
        fixed = graph_contract(cfg.to_dict(), T, precision)
        # Example keys / values of the right shape and dtype: tracing needs no real ones (and running the encoder
        # of a large model on the CPU would take minutes).
        kv = fixed["encoder"]["outputs"][0]
        keys = torch.randn(kv.shape, dtype=getattr(torch, kv.dtype))
        values = torch.randn(kv.shape, dtype=getattr(torch, kv.dtype))
        N = torch.export.Dim(QUERY_DIM, min=1, max=MAX_QUERIES_TRACED)
        video_dims = kv_dims = None
        if dynamic_frames:  # T = tt * tubelet_slices, M = tokens_per_slice * tubelet_slices + 1
            tt = cfg.tubelet[0]
            slices = torch.export.Dim("tubelet_slices", min=T_min // tt, max=T // tt)
            video_dims, kv_dims = {1: tt * slices}, {3: cfg.tokens_per_slice * slices + 1}
        steps = [
            ("encoder", encoder, (video, aspect_ratio), ENCODER_INPUTS, ENCODER_OUTPUTS,
             {"video": video_dims, "aspect_ratio": None}),
            ("decoder", decoder, (video, keys, values, uv, t), DECODER_INPUTS, DECODER_OUTPUTS,
             {"video": video_dims, "keys": kv_dims, "values": kv_dims, "uv": {1: N}, "t": {1: N}}),
        ]
        graphs: dict[str, dict[str, Any]] = {}
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
            for graph, module, args, inputs, outputs, dynamic in tqdm(steps, desc="ONNX export", disable=not progress):
                path = Path(tmp) / GRAPH_FILES[graph]
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    program = torch.onnx.export(
                        module, args, dynamo=True, opset_version=opset, input_names=list(inputs),
                        output_names=list(outputs), dynamic_shapes=dynamic, optimize=True, verbose=False,
                        custom_translation_table=ONNX_TRANSLATIONS,
                    )
                    fold_weight_slices(program.model)
                    name_dynamic_dims(program.model, dynamic_frames)
                    program.model.metadata_props[EXPORT_ID_KEY] = export_id
                    program.save(str(path), external_data=use_external)
                del program
                onnx.checker.check_model(str(path), full_check=True)
                quantization = None
                if precision == "int8":
                    quantization = _quantize_in_place(path, use_external)
                proto = onnx.load(str(path), load_external_data=False)
                found = {"inputs": onnx_tensor_specs(proto, "input"), "outputs": onnx_tensor_specs(proto, "output")}
                del proto
                for kind in ("inputs", "outputs"):
                    if found[kind] != contract[graph][kind]:
                        raise RuntimeError(
                            f"the exported {graph} graph's {kind} {found[kind]} differ from the contract "
                            f"{contract[graph][kind]}: an export bug, please report it"
                        )
                graphs[graph] = {"file": GRAPH_FILES[graph], "external_data": external_data_files(path),
                                 "attention": ATTENTION_FORMS[attention]}
                if quantization is not None:
                    graphs[graph]["quantization"] = quantization
                graphs[graph].update({k: [s.to_dict() for s in v] for k, v in found.items()})
            # Move the finished files in; drop data files an earlier export left that this one does not use.
            for graph, entry in graphs.items():
                stale = out_dir / (GRAPH_FILES[graph] + ".data")
                if stale.name not in entry["external_data"]:
                    stale.unlink(missing_ok=True)
                for name in [entry["file"], *entry["external_data"]]:
                    os.replace(Path(tmp) / name, out_dir / name)
    finally:
        if precision != "fp16":  # (fp16 exported a copy)
            model.set_attention(previous_attention)

    for graph, entry in graphs.items():
        entry["sha256"] = sha256_file(out_dir / entry["file"])
        entry["external_data"] = [{"file": f, "sha256": sha256_file(out_dir / f)} for f in entry["external_data"]]
    manifest = Manifest(
        config=cfg.to_dict(),
        num_frames=T,
        min_frames=T_min if dynamic_frames else None,
        image_size=S,
        precision=precision,
        opset=opset,
        checkpoint=checkpoint or {},
        graphs=graphs,
        export_id=export_id,
    )
    write_manifest(out_dir, manifest)
    return manifest
