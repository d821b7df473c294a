"""int8 graphs for TensorRT: explicit quantization (Q/DQ) calibrated on clips
(``d4rt export CKPT --out DIR --precision int8-qdq --calibration DIR_OR_VIDEO``).

TensorRT's int8 is explicit quantization: QuantizeLinear / DequantizeLinear pairs in the ONNX graph say where a
tensor is int8, and TensorRT fuses them into int8 kernels (strongly typed; no precision flag). The graphs here are
placed the way TensorRT's explicit-quantization guide asks:

- every MatMul / Gemm with a constant weight (each projection and MLP layer, the heads, the query embedding) gets
  a DequantizeLinear on both inputs: the weight int8, symmetric, one scale per output channel (MatMul axis 1, Gemm
  axis 0 when transB); the activation a Q -> DQ pair, int8, symmetric (zero point 0), one scale per tensor,
  calibrated (max of |x| over the calibration clips, or a percentile of its histogram);
- biases stay float32 (TensorRT's DequantizeLinear takes no int32 bias);
- LayerNormalization and Softmax are not quantized (no DequantizeLinear feeds them, none of their outputs except a
  LayerNorm's feeding a projection is quantized), and attention's two activation x activation MatMuls stay float32,
  so no Q/DQ sits on a softmax's output; the patch embedding's Conv stays float32 too.

Tool: ONNX Runtime's static quantizer (``quantize_static``, QuantFormat.QDQ) with those options. NVIDIA's Model
Optimizer (the field's tool, ``nvidia-modelopt[onnx]``) was tried first and does not install beside this package's
pinned stack: see docs/precision-int8-qdq.md. Calibration runs on ONNX Runtime's CPU provider: the fp32
"standard"-attention graphs are exported first, the encoder is calibrated on the clips' windows, the decoder on
those windows' keys / values (from the fp32 encoder) with random queries.

What ran here: export, calibration and the accuracy of the Q/DQ graphs in ONNX Runtime (CPU). What did not:
TensorRT (it cannot be installed on the machines this project is built on); the engine build follows the
explicit-quantization API as documented.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from d4rt.export.quantize import QUANTIZED_OP_TYPES, constant_weight_nodes
from d4rt.runtime.manifest import GRAPH_FILES, MANIFEST_NAME, Manifest, read_manifest, sha256_file, write_manifest

PRECISION = "int8-qdq"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
CLIP_SUFFIX = ".npz"  # a synthetic clip (d4rt.data.synthetic.write_clip): its "rgb" frames
CALIBRATION_METHODS = ("max", "percentile")
METHOD = "onnxruntime.quantization.quantize_static (QuantFormat.QDQ)"
INSTALL_HINT = "`pip install onnxruntime` (its quantization package, onnxruntime.quantization, ships with it)"
CALIBRATION_HINT = ("give --calibration a video file or a folder of videos (" + ", ".join(VIDEO_SUFFIXES[:4])
                    + ", ...) or synthetic clips (*.npz)")


class CalibrationError(ValueError):
    """The calibration data is missing, empty or unreadable."""


def import_quantization():
    """onnxruntime.quantization, or ImportError saying how to install it."""
    import importlib

    try:
        return importlib.import_module("onnxruntime.quantization")
    except ImportError as e:
        raise ImportError(f"--precision int8-qdq needs ONNX Runtime's quantization package: {INSTALL_HINT}") from e


# ----- calibration data ----------------------------------------------------------------------------------------------
def calibration_sources(path: str | Path) -> list[Path]:
    """The calibration files under ``path``: the file itself (a video or a clip .npz), or every video / clip in the
    folder (not recursive), sorted. CalibrationError when there is nothing to calibrate on."""
    if path is None:
        raise CalibrationError(f"--precision int8-qdq needs calibration data: {CALIBRATION_HINT}")
    path = Path(path)
    suffixes = (*VIDEO_SUFFIXES, CLIP_SUFFIX)
    if path.is_file():
        if path.suffix.lower() not in suffixes:
            raise CalibrationError(f"calibration file {path} is neither a video nor a clip .npz; {CALIBRATION_HINT}")
        return [path]
    if not path.is_dir():
        raise CalibrationError(f"calibration path {path} does not exist; {CALIBRATION_HINT}")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise CalibrationError(f"calibration folder {path} holds no videos or clips; {CALIBRATION_HINT}")
    return files


def _read_frames(path: Path, start: int, count: int) -> np.ndarray:
    """[<= count, H, W, 3] uint8 RGB frames start, start + 1, ... of a video (the runtime's reader) or of a synthetic
    clip's "rgb" (empty past the end)."""
    if path.suffix.lower() == CLIP_SUFFIX:
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["rgb"][start:start + count]
        except (OSError, EOFError, ValueError, KeyError) as e:
            raise CalibrationError(f"calibration clip {path} is not a readable clip .npz with 'rgb' frames "
                                   f"({e})") from e
    from d4rt.runtime.video import read_video

    try:
        return read_video(path, max_frames=count, start=start)
    except (ValueError, FileNotFoundError) as e:
        if start > 0:  # past the end of a video that gave frames before
            return np.empty((0, 1, 1, 3), np.uint8)
        raise CalibrationError(f"calibration video {path}: {e}") from e


@dataclass
class CalibrationWindow:
    """One encoder input: video [1, T, 3, S, S] float32 in [0, 1], aspect_ratio [1] float32."""

    video: np.ndarray
    aspect_ratio: np.ndarray
    source: str


def calibration_windows(
    sources: list[Path], frame_range: tuple[int, int], image_size: int, max_windows: int = 16, step: int = 2
) -> list[CalibrationWindow]:
    """Windows of the most frames the graphs take (frames 0..T-1, T..2T-1, ... of each source; a video shorter than
    T gives one window of its usable frames), read with the runtime's video reader and resized with its
    preprocessing (``prepare_clip``), round-robin over the sources (every source gives its first window before any
    gives a second), at most ``max_windows``; only the frames used are decoded."""
    from d4rt.runtime.video import prepare_clip

    lo, hi = frame_range
    chosen: list[CalibrationWindow] = []
    active, short = list(sources), []
    index = 0
    while active and len(chosen) < max_windows:
        for path in list(active):
            if len(chosen) >= max_windows:
                break
            frames = _read_frames(path, index * hi, hi)
            usable = len(frames) // step * step  # the tubelet spans ``step`` frames
            if frames.ndim != 4 or frames.shape[-1] != 3 or usable < lo or (index > 0 and len(frames) < hi):
                active.remove(path)
                if index == 0:
                    short.append(f"{path.name} ({len(frames)} frames)")
                continue
            clip = prepare_clip(frames[:usable], image_size)
            chosen.append(CalibrationWindow(clip.video, np.array([clip.aspect_ratio], np.float32), path.name))
        index += 1
    if not chosen:
        raise CalibrationError(
            f"no calibration video has the {lo} frames these graphs need at least (too short: {', '.join(short)}); "
            f"{CALIBRATION_HINT}"
        )
    return chosen


# ----- quantizing one graph ------------------------------------------------------------------------------------------
class _Samples:
    """ONNX Runtime's CalibrationDataReader over a list of input dicts (duck-typed: get_next / rewind)."""

    def __init__(self, samples: list[dict[str, np.ndarray]]):
        self.samples, self.index = samples, 0

    def get_next(self):
        if self.index >= len(self.samples):
            return None
        self.index += 1
        return self.samples[self.index - 1]

    def rewind(self):
        self.index = 0


def quantize_graph_qdq(
    src: str | Path, dst: str | Path, samples: list[dict[str, np.ndarray]], method: str = "percentile",
    external_data: bool = False,
) -> dict[str, Any]:
    """Write the Q/DQ int8 form of the float32 graph ``src`` to ``dst``, calibrated on ``samples`` (input dicts).

    Returns the manifest's per-graph record: {"method", "weights", "activations", "calibration", "op_types",
    "quantized_nodes", "fp32_nodes", "not_quantized"}.
    """
    import onnx

    q = import_quantization()
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method {method!r} is not one of {CALIBRATION_METHODS}")
    src, dst = Path(src), Path(dst)
    proto = onnx.load(str(src), load_external_data=False)
    weighted, other = constant_weight_nodes(proto)  # every constant-weight MatMul / Gemm
    metadata = {p.key: p.value for p in proto.metadata_props}
    del proto
    calibrate = {"max": q.CalibrationMethod.MinMax, "percentile": q.CalibrationMethod.Percentile}[method]
    extra = {
        "ActivationSymmetric": True,  # zero point 0: TensorRT's quantization is symmetric
        "WeightSymmetric": True,
        "CalibTensorRangeSymmetric": True,
        "QuantizeBias": False,  # TensorRT's DequantizeLinear takes int8 / fp8 / int4, not an int32 bias
        "DedicatedQDQPair": False,
        # TensorRT: quantize the inputs of a weighted op, not its output (ONNX Runtime's Gemm would add one)
        "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OP_TYPES),
    }
    if method == "percentile":
        extra.update({"CalibPercentile": 99.999, "CalibNumBins": 2048})
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the quantizer logs a line per node it skips
    try:  # (the percentile calibrator prints its progress: not ours to show)
        with tempfile.TemporaryDirectory(prefix="d4rt-calibration-") as work, \
                contextlib.redirect_stdout(io.StringIO()):
            q.quantize_static(
                str(src), str(dst), _Samples(samples), quant_format=q.QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OP_TYPES), nodes_to_quantize=weighted, nodes_to_exclude=other,
                per_channel=True, reduce_range=False, activation_type=q.QuantType.QInt8,
                weight_type=q.QuantType.QInt8, calibrate_method=calibrate, use_external_data_format=external_data,
                calibration_providers=["CPUExecutionProvider"], extra_options={**extra, "CalibTempDir": work},
            )
    finally:
        quiet.setLevel(level)
    out = onnx.load(str(dst), load_external_data=False)
    kept = {p.key: p.value for p in out.metadata_props}
    if any(kept.get(k) != v for k, v in metadata.items()):  # keep the export id the graphs were written with
        onnx.helper.set_model_props(out, {**kept, **metadata})
        if external_data:
            out = onnx.load(str(dst))
            onnx.helper.set_model_props(out, {**kept, **metadata})
            onnx.save(out, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                      location=dst.name + ".data")
        else:
            onnx.save(out, str(dst))
    counts = {op: sum(n.op_type == op for n in out.graph.node) for op in ("QuantizeLinear", "DequantizeLinear")}
    return {
        "method": METHOD,
        "format": "QDQ (explicit quantization, for TensorRT)",
        "weights": "int8, symmetric, per output channel",
        "activations": f"int8, symmetric, per tensor, calibrated ({method})",
        "op_types": list(QUANTIZED_OP_TYPES),
        "quantized_nodes": len(weighted),
        "fp32_nodes": len(other),
        "not_quantized": "attention's activation x activation MatMuls, Softmax, LayerNormalization, Conv, biases",
        "qdq_nodes": counts,
    }


# ----- the placement TensorRT expects --------------------------------------------------------------------------------
def qdq_placement_problems(model_proto) -> list[str]:
    """Where a Q/DQ graph departs from the placement above (empty: as TensorRT's explicit quantization expects).

    Checks: every MatMul / Gemm with a constant weight reads both inputs from a DequantizeLinear; the weight's is
    int8 with one scale per output channel on the right axis and zero points 0; the activation's comes from a
    QuantizeLinear with a single scale and zero point 0; no DequantizeLinear feeds a LayerNormalization or a
    Softmax and no QuantizeLinear reads the output of a Softmax, a MatMul or a Gemm; no bias is quantized.
    """
    from onnx import numpy_helper

    graph = model_proto.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    problems = []

    def attr(node, name, default):
        return next((a.i for a in node.attribute if a.name == name), default)

    def array(name):
        return numpy_helper.to_array(inits[name]) if name in inits else None

    for node in graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            fed = [producer[i].op_type for i in node.input if i in producer]
            if "DequantizeLinear" in fed:
                problems.append(f"{node.name}: {node.op_type} is fed by a DequantizeLinear (it must stay float)")
        source = producer.get(node.input[0]) if node.op_type == "QuantizeLinear" else None
        if source is not None and source.op_type in ("Softmax", *QUANTIZED_OP_TYPES):
            problems.append(f"{node.name}: quantizes the output of {source.op_type} {source.name} (TensorRT quantizes "
                            f"the inputs of MatMul / Gemm, never a Softmax's or a weighted op's output)")
        if node.op_type not in QUANTIZED_OP_TYPES:
            continue
        dq = [producer.get(i) for i in node.input[:2]]
        if not all(d is not None and d.op_type == "DequantizeLinear" for d in dq):
            if any(d is not None and d.op_type == "DequantizeLinear" and d.input[0] in inits for d in dq):
                problems.append(f"{node.name}: {node.op_type} has a quantized weight but a float activation")
            elif node.input[1] in inits:
                problems.append(f"{node.name}: {node.op_type} with a constant weight is not quantized")
            continue
        act_dq, w_dq = dq
        weight = array(w_dq.input[0])
        if weight is None or weight.dtype != np.int8:
            problems.append(f"{node.name}: the weight {w_dq.input[0]} is not a constant int8 tensor")
            continue
        axis = 0 if node.op_type == "Gemm" and attr(node, "transB", 0) else 1
        scale = array(w_dq.input[1])
        if scale is None or scale.ndim != 1 or scale.shape[0] != weight.shape[axis] or attr(w_dq, "axis", 1) != axis:
            problems.append(f"{node.name}: the weight's scales are not one per output channel (axis {axis} of "
                            f"{list(weight.shape)}, found scale shape {None if scale is None else list(scale.shape)}, "
                            f"axis {attr(w_dq, 'axis', 1)})")
        zero = array(w_dq.input[2]) if len(w_dq.input) > 2 and w_dq.input[2] else None
        if zero is not None and np.any(zero != 0):
            problems.append(f"{node.name}: the weight's zero points are not 0 (TensorRT is symmetric)")
        q_node = producer.get(act_dq.input[0])
        if q_node is None or q_node.op_type != "QuantizeLinear":
            problems.append(f"{node.name}: the activation's DequantizeLinear is not fed by a QuantizeLinear")
            continue
        a_scale = array(act_dq.input[1])
        a_zero = array(act_dq.input[2]) if len(act_dq.input) > 2 and act_dq.input[2] else None
        if a_scale is None or a_scale.size != 1:
            problems.append(f"{node.name}: the activation's scale is not a single constant (per tensor)")
        if a_zero is not None and (a_zero.dtype != np.int8 or np.any(a_zero != 0)):
            problems.append(f"{node.name}: the activation's zero point is not int8 0 (TensorRT is symmetric)")
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] in producer \
                and producer[node.input[2]].op_type == "DequantizeLinear":
            problems.append(f"{node.name}: the bias is quantized (TensorRT takes a float bias)")
    return problems


# ----- the export ----------------------------------------------------------------------------------------------------
def _check_options(method: str, max_windows: int, queries_per_window: int) -> None:
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method {method!r} is not one of {CALIBRATION_METHODS}")
    if max_windows < 1 or queries_per_window < 1:
        raise ValueError(f"max_windows and queries_per_window must be >= 1, got {max_windows}, {queries_per_window}")


def export_int8_qdq(
    model,
    out_dir: str | Path,
    calibration: str | Path,
    *,
    num_frames: int | None = None,
    min_frames: int | None = None,
    opset: int = 18,
    checkpoint: dict[str, Any] | None = None,
    external_data: bool | None = None,
    method: str = "percentile",
    max_windows: int = 16,
    queries_per_window: int = 2048,
    seed: int = 0,
    progress: bool = True,
) -> Manifest:
    """Export ``model`` as int8 Q/DQ encoder.onnx + decoder.onnx (for TensorRT) calibrated on ``calibration``:
    the float32 "standard"-attention graphs (:func:`d4rt.export.onnx_export.export_onnx`), then
    :func:`quantize_export`. Arguments as those two functions'.

    Nothing is written to ``out_dir`` before the calibration data has been found; the manifest is written last.
    """
    from d4rt.export.onnx_export import export_onnx

    import_quantization()  # a missing package is refused before any work
    _check_options(method, max_windows, queries_per_window)
    calibration_sources(calibration)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # no manifest unless this export completes
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".fp32-") as fp32_dir:
        export_onnx(model, fp32_dir, precision="fp32", num_frames=num_frames, min_frames=min_frames, opset=opset,
                    checkpoint=checkpoint, external_data=external_data, attention="standard", progress=progress)
        return quantize_export(fp32_dir, out_dir, calibration, method=method, max_windows=max_windows,
                               queries_per_window=queries_per_window, seed=seed)


def quantize_export(
    fp32_dir: str | Path,
    out_dir: str | Path,
    calibration: str | Path,
    *,
    method: str = "percentile",
    max_windows: int = 16,
    queries_per_window: int = 2048,
    seed: int = 0,
) -> Manifest:
    """The int8 Q/DQ form of an fp32 export with standard attention (``d4rt export --attention standard``), into
    ``out_dir`` (graphs + manifest; may be ``fp32_dir`` itself). No torch: calibration runs the fp32 graphs in
    ONNX Runtime (CPU).

    Args:
        calibration: a video, a synthetic clip (.npz), or a folder of them; windows of the export's most frames
            (at most ``max_windows``, round-robin over the files) calibrate the encoder; the decoder is calibrated
            on those windows' keys / values (from the fp32 encoder) with ``queries_per_window`` uniform random
            queries each (from ``seed``).
        method: "max" (the largest |x| seen) or "percentile" (99.999 % of |x|'s histogram) for activation scales.
    Returns:
        the written Manifest: precision "int8-qdq", each graph's record under graphs.<name>.quantization.
    """
    import onnx

    from d4rt.export.onnx_export import external_data_files, onnx_tensor_specs
    from d4rt.runtime.backend_onnxruntime import OnnxRuntimeBackend

    import_quantization()
    _check_options(method, max_windows, queries_per_window)
    fp32_dir, out_dir = Path(fp32_dir), Path(out_dir)
    fp32 = read_manifest(fp32_dir)
    if fp32.precision != "fp32":
        raise ValueError(f"{fp32_dir} holds {fp32.precision} graphs; int8-qdq quantizes an fp32 export")
    fused = [g for g, e in fp32.graphs.items() if e.get("attention", "").startswith("com.microsoft")]
    if fused:
        raise ValueError(f"{fp32_dir} was exported with ONNX Runtime's fused attention, which TensorRT cannot parse: "
                         f"export with `--attention standard` first")
    windows = calibration_windows(calibration_sources(calibration), fp32.frame_range, fp32.image_size, max_windows,
                                  int(fp32.config["tubelet"][0]))
    backend = OnnxRuntimeBackend(fp32_dir, fp32, "cpu")
    rng = np.random.default_rng(seed)
    encoder_samples, decoder_samples = [], []
    for w in windows:
        keys, values = (np.array(a) for a in backend.keys_values(backend.encode(w.video, w.aspect_ratio)))
        encoder_samples.append({"video": w.video, "aspect_ratio": w.aspect_ratio})
        decoder_samples.append({
            "video": w.video, "keys": keys, "values": values,
            "uv": rng.random((1, queries_per_window, 2), dtype=np.float32),
            "t": rng.integers(0, w.video.shape[1], (1, queries_per_window, 3)).astype(np.int32),
        })
    del backend
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # no manifest unless this export completes
    graphs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".int8-qdq-") as tmp:
        for graph, samples in (("encoder", encoder_samples), ("decoder", decoder_samples)):
            entry = {k: v for k, v in fp32.graphs[graph].items() if k != "sha256"}
            dst = Path(tmp) / GRAPH_FILES[graph]
            record = quantize_graph_qdq(fp32_dir / entry["file"], dst, samples, method, bool(entry["external_data"]))
            record["calibration"] = {
                "windows": len(windows), "frames": sorted({w.video.shape[1] for w in windows}),
                "files": sorted({w.source for w in windows}), "seed": seed,
                **({"queries_per_window": queries_per_window} if graph == "decoder" else {}),
            }
            proto = onnx.load(str(dst), load_external_data=False)
            found = {"inputs": onnx_tensor_specs(proto, "input"), "outputs": onnx_tensor_specs(proto, "output")}
            problems = qdq_placement_problems(proto)
            del proto
            for kind in ("inputs", "outputs"):
                if [s.to_dict() for s in found[kind]] != entry[kind]:
                    raise RuntimeError(f"quantizing the {graph} graph changed its {kind}: an export bug, please "
                                       f"report it")
            if problems:
                raise RuntimeError(f"the {graph} graph's Q/DQ placement is not TensorRT's: {problems[:5]}; an export "
                                   f"bug, please report it")
            entry.update(file=GRAPH_FILES[graph], external_data=external_data_files(dst), precision=PRECISION,
                         quantization=record)
            graphs[graph] = entry
        for graph, entry in graphs.items():
            for name in [entry["file"], *entry["external_data"]]:
                os.replace(Path(tmp) / name, out_dir / name)
            stale = out_dir / (GRAPH_FILES[graph] + ".data")
            if stale.name not in entry["external_data"]:
                stale.unlink(missing_ok=True)
    for graph, entry in graphs.items():
        entry["sha256"] = sha256_file(out_dir / entry["file"])
        entry["external_data"] = [{"file": f, "sha256": sha256_file(out_dir / f)} for f in entry["external_data"]]
    fp32.graphs, fp32.precision, fp32.parity, fp32.engines, fp32.d4rt_version = graphs, PRECISION, None, None, ""
    write_manifest(out_dir, fp32)
    return read_manifest(out_dir)
