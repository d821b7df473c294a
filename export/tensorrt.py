"""TensorRT engines from the exported ONNX graphs (``d4rt build-engine``). All of d4rt's engine building is here.

- One optimization profile per graph: the frame count T (min = the manifest's min_frames, opt = max = num_frames;
  the memory tokens M follow from T) on both graphs, and the decoder's query count N (min / opt / max).
- Precision comes from the graph: the network is strongly typed (TensorRT 10's STRONGLY_TYPED flag; always so in
  TensorRT 11), so a float16 export gives a float16 engine with LayerNorm statistics and softmax in float32.
  An int8-qdq export (explicit quantization, :mod:`d4rt.export.int8_qdq`) builds the same way: TensorRT reads its
  Q/DQ pairs and runs int8 kernels there (explicit quantization is meant for strong typing; no INT8 flag).
  TensorRT 10 can instead build the float32 graph with the FP16 builder flag (``fp16_flag``, weak typing, which
  leaves the precision of each layer to TensorRT); TensorRT 11 removed that flag.
- Workspace limit, a timing cache file shared by both builds (and by later builds), and optional hardware
  (Ampere+ / same compute capability) and version compatibility.
- The engines are written atomically with a manifest naming the TensorRT version, GPU, compute capability and
  profile; the runtime refuses engines that do not match its machine.

Written against the TensorRT 10 / 11 Python API documentation; not run on the machines this project is built on
(they have no TensorRT). ``tensorrt`` is imported lazily: without it, a clear ImportError says what to install.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from d4rt.runtime.backend_tensorrt import GpuInfo, gpu_info, import_tensorrt
from d4rt.runtime.files import write_bytes_atomic
from d4rt.runtime.manifest import (
    DEFAULT_QUERY_PROFILE,
    ENGINE_FILES,
    EXPORT_ID_KEY,
    HARDWARE_COMPAT,
    FRAME_DIM,
    MEMORY_DIM,
    QUERY_DIM,
    Manifest,
    check_export_ids,
    check_graph_files,
    major_minor,
    read_manifest,
    sha256_file,
    write_manifest,
)

HARDWARE_LEVELS = {"ampere+": "AMPERE_PLUS", "same-compute-capability": "SAME_COMPUTE_CAPABILITY"}


@dataclass
class EngineBuildOptions:
    """How to build. Query counts bound the decoder's N; the runtime splits larger query batches."""

    min_queries: int = DEFAULT_QUERY_PROFILE[0]
    opt_queries: int = DEFAULT_QUERY_PROFILE[1]
    max_queries: int = DEFAULT_QUERY_PROFILE[2]
    workspace_gb: float | None = None  # TensorRT's default: the GPU's memory
    timing_cache: str | None = None  # read if it exists, written after the build
    hardware_compat: str = "none"  # "none" | "ampere+" | "same-compute-capability"
    version_compat: bool = False
    fp16_flag: bool = False  # TensorRT 10 only: BuilderFlag.FP16 on a float32 graph (weak typing)

    def validate(self) -> None:
        problems = []
        counts = (self.min_queries, self.opt_queries, self.max_queries)
        if not all(isinstance(c, int) and c >= 1 for c in counts):
            problems.append(f"query counts must be positive integers, got min/opt/max = {counts}")
        elif not self.min_queries <= self.opt_queries <= self.max_queries:
            problems.append(f"need min <= opt <= max queries, got {counts}")
        if self.workspace_gb is not None and not self.workspace_gb > 0:
            problems.append(f"workspace_gb must be > 0, got {self.workspace_gb}")
        if self.hardware_compat not in HARDWARE_COMPAT:
            problems.append(f"hardware_compat must be one of {HARDWARE_COMPAT}, got {self.hardware_compat!r}")
        if self.timing_cache is not None and Path(self.timing_cache).is_dir():
            problems.append(f"timing_cache {self.timing_cache} is a directory; give a file path")
        if problems:
            raise ValueError("invalid engine build options: " + "; ".join(problems))


def query_profile(
    manifest: Manifest, options: EngineBuildOptions, graph: str = "decoder"
) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes of every input of ``graph`` with a dynamic dimension, e.g. for the decoder
    {"video": ((1, 2, 3, S, S), (1, T, ...), (1, T, ...)), "keys": (... M ...), "uv": ((1, 1, 2), ...), "t": ...}.

    N spans the options' query counts; T spans the manifest's frame range with opt = max (full windows are the
    common case: a long video runs in windows of T frames), and M = T / tt * tokens per slice + 1 follows T.
    """
    lo, hi = manifest.frame_range
    tt, th, tw = (int(x) for x in manifest.config["tubelet"])
    per_slice = (manifest.image_size // th) * (manifest.image_size // tw)
    levels = {
        QUERY_DIM: (options.min_queries, options.opt_queries, options.max_queries),
        FRAME_DIM: (lo, hi, hi),
        MEMORY_DIM: tuple(t // tt * per_slice + 1 for t in (lo, hi, hi)),
    }
    profile = {}
    for spec in manifest.tensors(graph, "inputs"):
        if any(isinstance(d, str) for d in spec.shape):
            profile[spec.name] = tuple(
                tuple(levels[d][i] if isinstance(d, str) else int(d) for d in spec.shape) for i in range(3)
            )
    return profile


def engine_precision(manifest: Manifest, options: EngineBuildOptions) -> str:
    if options.fp16_flag:
        return "fp16 (TensorRT 10 FP16 builder flag on the fp32 graph, weak typing)"
    if manifest.precision == "int8-qdq":  # explicit quantization is built strongly typed, no INT8 flag
        return ("int8-qdq (explicit quantization: int8 where the graph's Q/DQ pairs are, float32 elsewhere; "
                "strongly typed)")
    return f"{manifest.precision} (strongly typed from the {manifest.precision} graph)"


def engine_section(
    manifest: Manifest,
    options: EngineBuildOptions,
    tensorrt_version: str,
    gpu: GpuInfo,
    engine_sha256: dict[str, str],
) -> dict[str, Any]:
    """The manifest's "engines" entry: machine, TensorRT version, profile, options and the engine files."""
    return {
        "tensorrt_version": tensorrt_version,
        "gpu_name": gpu.name,
        "compute_capability": gpu.compute_capability,
        "hardware_compatibility": options.hardware_compat,
        "version_compatible": options.version_compat,
        "precision": engine_precision(manifest, options),
        "profile": {"min": options.min_queries, "opt": options.opt_queries, "max": options.max_queries},
        "frame_profile": dict(zip(("min", "opt", "max"), (*manifest.frame_range, manifest.frame_range[1]))),
        "workspace_gb": options.workspace_gb,
        "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **{
            graph: {"file": ENGINE_FILES[graph], "sha256": engine_sha256[graph],
                    "onnx_sha256": manifest.graphs[graph]["sha256"], "export_id": manifest.export_id}
            for graph in ENGINE_FILES
        },
    }


def rebase_graphs(manifest: Manifest, onnx_dir: Path, out_dir: Path) -> Manifest:
    """A copy of the manifest whose graph paths are relative to ``out_dir`` (engines written elsewhere)."""
    rebased = copy.deepcopy(manifest)

    def rel(name: str) -> str:
        return os.path.relpath((onnx_dir / name).resolve(), out_dir.resolve())

    for entry in rebased.graphs.values():
        entry["file"] = rel(entry["file"])
        for data in entry.get("external_data", []):
            data["file"] = rel(data["file"])
    if rebased.checkpoint.get("path") and not Path(rebased.checkpoint["path"]).is_absolute():
        rebased.checkpoint["path"] = rel(rebased.checkpoint["path"])
    return rebased


# ----- what TensorRT's ONNX parser takes ----------------------------------------------------------------------------
# ONNX op -> element types TensorRT 10 / 11 parse, for every op our two graphs use (github.com/onnx/onnx-tensorrt, its docs/operators.md,
# TensorRT 10.15: "Supported Types"; INT64 is a native type since TensorRT 10.0). Checked on every export by the
# tests, so a model change that brings in, say, an int64 Clip (Clip: FP32 / FP16 / BF16 only) fails here and not
# on the user's GPU.
_FLOATS = {"float32", "float16", "bfloat16"}
_NUMBERS = _FLOATS | {"int32", "int64"}
_ANY = _NUMBERS | {"bool"}
TENSORRT_ONNX_TYPES: dict[str, set[str]] = {
    **{op: _FLOATS for op in (
        "Clip", "Conv", "Cos", "Erf", "Floor", "Gemm", "LayerNormalization", "MatMul", "Sin", "Softmax", "Sqrt",
        "Tanh", "Sigmoid", "Exp", "Log", "Reciprocal", "Round", "Ceil")},
    **{op: _NUMBERS for op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Neg", "Abs", "Pow", "Range")},
    **{op: _ANY for op in (
        "Cast", "Concat", "Expand", "Gather", "GatherElements", "Identity", "Reshape", "Shape", "Slice", "Squeeze",
        "Transpose", "Unsqueeze", "Where", "Split", "Tile", "Constant")},
    # explicit quantization (int8-qdq exports): Q takes a float tensor, DQ an int8 one (TensorRT's DequantizeLinear
    # takes INT8 / FP8 / INT4 / FP4, not an INT32 bias: our Q/DQ graphs keep biases float)
    "QuantizeLinear": _FLOATS,
    "DequantizeLinear": {"int8"},
}


def tensorrt_unsupported_nodes(model_proto) -> list[str]:
    """Nodes of an ONNX model that TensorRT's parser does not take, per :data:`TENSORRT_ONNX_TYPES` (empty: fine).

    Each entry names the node, its op and the element type of its first input (for Cast, also the target type).
    Ops outside the table are reported too: add them to the table only after checking operators.md.
    """
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    model_proto = onnx.shape_inference.infer_shapes(model_proto)
    elem_types = {v.name: v.type.tensor_type.elem_type
                  for v in [*model_proto.graph.input, *model_proto.graph.value_info, *model_proto.graph.output]}
    elem_types.update({t.name: t.data_type for t in model_proto.graph.initializer})

    def type_name(elem_type: int | None) -> str:
        return tensor_dtype_to_np_dtype(elem_type).name if elem_type else "unknown"

    problems = []
    for node in model_proto.graph.node:
        allowed = TENSORRT_ONNX_TYPES.get(node.op_type)
        types = [type_name(elem_types.get(node.input[0]))] if node.input else []
        if node.op_type == "Cast":
            types += [type_name(next(a.i for a in node.attribute if a.name == "to"))]
        if allowed is None:
            problems.append(f"{node.name}: {node.op_type} is not in the TensorRT support table")
        elif not set(types) <= allowed:
            problems.append(f"{node.name}: {node.op_type} on {'/'.join(types)} (TensorRT takes {sorted(allowed)})")
    return problems


# ----- the TensorRT part -------------------------------------------------------------------------------------------
def network_flags(trt, major: int, weak_typing: bool) -> int:
    """create_network() flags. TensorRT 10: STRONGLY_TYPED unless weak typing (the FP16 builder flag) is asked for;
    EXPLICIT_BATCH is deprecated and ignored since 10.0, so it is never passed. TensorRT 11: 0, strongly typed is
    the only mode and its flag is deprecated and ignored (TensorRT 11.0 Builder Python API,
    NetworkDefinitionCreationFlag)."""
    if major >= 11 or weak_typing:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _check_profile_covers_inputs(network, profile: dict, onnx_path: Path) -> None:
    """Every network input with a dynamic dimension needs min/opt/max shapes in the profile (else the build
    fails with a terse TensorRT error); say which and why here instead."""
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if any(int(d) < 0 for d in tensor.shape) and tensor.name not in profile:
            raise ValueError(
                f"{onnx_path} has input {tensor.name!r} of shape {tuple(tensor.shape)} with a dynamic dimension "
                f"that the optimization profile does not cover (it covers {sorted(profile)}); re-export the graphs "
                f"with this d4rt version (`d4rt export`)"
            )


def _build_one(trt, builder, logger, onnx_path: Path, profile: dict, options: EngineBuildOptions, cache):
    """Parse one ONNX graph and build a serialized engine (bytes), timing into the shared ``cache``.

    API as in the TensorRT 10 / 11 Python docs (Builder, OnnxParser, IBuilderConfig, IOptimizationProfile).
    """
    major = major_minor(trt.__version__)[0]
    network = builder.create_network(network_flags(trt, major, weak_typing=options.fp16_flag))
    parser = trt.OnnxParser(network, logger)  # the parser owns the weights: keep it alive until the build is done
    # parse_from_file, not parse(bytes): it resolves external data (*.onnx.data) relative to the graph's folder.
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT's ONNX parser rejected {onnx_path}:\n  {errors}")
    _check_profile_covers_inputs(network, profile, onnx_path)

    config = builder.create_builder_config()
    if options.workspace_gb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gb * 1024**3))
    if profile:
        opt_profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile.items():
            opt_profile.set_shape(name, lo, opt, hi)  # raises on inconsistent shapes
        if config.add_optimization_profile(opt_profile) < 0:
            raise ValueError(f"TensorRT refused the optimization profile {profile} for {onnx_path}")
    if options.fp16_flag:  # TensorRT 10 only (checked by build_engines); weak typing
        config.set_flag(trt.BuilderFlag.FP16)
    if options.version_compat:
        # Without EXCLUDE_LEAN_RUNTIME the plan embeds the lean runtime; the loader must then set
        # Runtime.engine_host_code_allowed (runtime/backend_tensorrt.py does, from the manifest).
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.hardware_compat != "none":
        # AMPERE_PLUS (8.6+), SAME_COMPUTE_CAPABILITY (later 10.x): both dGPU only, not on JetPack / DriveOS.
        member = HARDWARE_LEVELS[options.hardware_compat]
        level = getattr(trt.HardwareCompatibilityLevel, member, None)
        if level is None:
            raise ValueError(f"TensorRT {trt.__version__} has no HardwareCompatibilityLevel.{member}")
        config.hardware_compatibility_level = level
    # ignore_mismatch=False: a cache from another device or TensorRT version is not used for this build.
    if not config.set_timing_cache(cache, False):
        raise RuntimeError("TensorRT did not accept the timing cache (see the TensorRT log above)")

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    return bytes(plan)  # IHostMemory has the buffer protocol


def check_not_dynamic_int8(onnx_dir: Path, manifest) -> None:
    """Refuse an int8 export of ONNX Runtime's dynamic quantization (DynamicQuantizeLinear / MatMulInteger are
    ONNX Runtime's ops, not TensorRT's; TensorRT's int8 is explicit quantization: Q/DQ graphs)."""
    if manifest.precision == "int8":
        raise ValueError(
            f"the export in {onnx_dir} holds dynamically quantized int8 graphs (ONNX Runtime-only ops such as "
            f"MatMulInteger, which TensorRT cannot build): re-export for TensorRT with `d4rt export CKPT --precision "
            f"int8-qdq --calibration CLIPS --out DIR` (or --precision fp16); run this export with ONNX Runtime"
        )


def check_standard_attention(onnx_dir: Path, manifest) -> None:
    """Refuse graphs exported with ONNX Runtime's fused attention op (TensorRT's parser takes no com.microsoft op)."""
    fused = [g for g, entry in manifest.graphs.items() if entry.get("attention", "").startswith("com.microsoft")]
    if fused:
        raise ValueError(
            f"the graphs in {onnx_dir} use ONNX Runtime's fused attention op ({', '.join(fused)}), which TensorRT "
            f"cannot parse: re-export for TensorRT with `d4rt export ... --attention standard` "
            f"(export_onnx(..., attention='standard'))"
        )


def warn_unsupported_nodes(onnx_dir: Path, manifest) -> None:
    """Warn, naming them, about nodes the table says TensorRT's parser does not take, before a long build fails
    on them (a warning, not an error: the table was checked against the graphs we export, not every TensorRT)."""
    import onnx

    for graph, entry in manifest.graphs.items():
        model_proto = onnx.load(str(onnx_dir / entry["file"]), load_external_data=False)
        bad = tensorrt_unsupported_nodes(model_proto)
        if bad:
            warnings.warn(f"{graph}.onnx has nodes TensorRT's ONNX parser may refuse: {bad[:10]}", stacklevel=2)


def onnx_export_id(path: Path) -> str | None:
    """The export id in an ONNX graph's metadata (written by ``export_onnx``), without loading its weights.
    TensorRT engines carry no such metadata, so the engines' manifest entries record the id they were built from."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return props.get(EXPORT_ID_KEY)


def build_engines(
    onnx_dir: str | Path, out_dir: str | Path | None = None, options: EngineBuildOptions | None = None,
    progress: bool = True,
) -> Manifest:
    """Build encoder.engine and decoder.engine from an export directory; write them with their manifest.

    Args:
        onnx_dir: a ``d4rt export`` directory. out_dir: where the engines go (default: ``onnx_dir``); its
            manifest points back at the ONNX graphs, so every backend can open it.
    """
    from tqdm import tqdm

    options = options or EngineBuildOptions()
    options.validate()
    onnx_dir = Path(onnx_dir)
    out_dir = Path(out_dir) if out_dir is not None else onnx_dir
    manifest = read_manifest(onnx_dir)
    check_not_dynamic_int8(onnx_dir, manifest)
    check_graph_files(manifest, onnx_dir)
    check_standard_attention(onnx_dir, manifest)
    check_export_ids(manifest, {graph: onnx_export_id(onnx_dir / manifest.graphs[graph]["file"])
                                for graph in ENGINE_FILES}, str(onnx_dir))
    warn_unsupported_nodes(onnx_dir, manifest)

    trt = import_tensorrt()
    major = major_minor(trt.__version__)[0]
    # TensorRT 11 removed BuilderFlag.FP16 with all weak typing (TensorRT 10.x -> 11.x migration guide, Python API).
    if options.fp16_flag and (major >= 11 or not hasattr(trt.BuilderFlag, "FP16")):
        raise ValueError(
            f"TensorRT {trt.__version__} removed the FP16 builder flag: export a float16 graph "
            f"(`d4rt export ... --precision fp16`) and build from it"
        )
    if options.fp16_flag and manifest.precision != "fp32":
        raise ValueError("fp16_flag applies to a float32 graph; this export is already float16")
    gpu = gpu_info()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    cache_path = Path(options.timing_cache) if options.timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache_config = builder.create_builder_config()  # creates the cache shared by both builds
    cache = cache_config.create_timing_cache(cache_bytes)  # b"": a new, empty cache
    if cache is None and cache_bytes:  # unreadable (another TensorRT version, or corrupt): start afresh
        warnings.warn(f"TensorRT could not read the timing cache {cache_path}; building with an empty one "
                      f"(the file is overwritten after the build)", stacklevel=2)
        cache = cache_config.create_timing_cache(b"")
    if cache is None:
        raise RuntimeError("TensorRT could not create a timing cache (see the TensorRT log above)")

    out_dir.mkdir(parents=True, exist_ok=True)
    digests = {}
    for graph in tqdm(ENGINE_FILES, desc="TensorRT build", disable=not progress):
        plan = _build_one(trt, builder, logger, onnx_dir / manifest.graphs[graph]["file"],
                          query_profile(manifest, options, graph), options, cache)
        path = write_bytes_atomic(out_dir / ENGINE_FILES[graph], plan)
        digests[graph] = sha256_file(path)
    if cache_path is not None:
        write_bytes_atomic(cache_path, bytes(cache.serialize()))

    result = manifest if out_dir.resolve() == onnx_dir.resolve() else rebase_graphs(manifest, onnx_dir, out_dir)
    result.engines = engine_section(manifest, options, trt.__version__, gpu, digests)
    write_manifest(out_dir, result)
    return result
