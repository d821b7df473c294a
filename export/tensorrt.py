"""TensorRT engines from the exported ONNX graphs (``d4rt build-engine``). All of d4rt's engine building is here.

- One optimization profile on the decoder's query count N (min / opt / max); the encoder is static.
- Precision comes from the graph: the network is strongly typed (TensorRT 10's STRONGLY_TYPED flag; always so in
  TensorRT 11), so a float16 export gives a float16 engine with LayerNorm statistics and softmax in float32.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from d4rt.runtime.backend_tensorrt import GpuInfo, gpu_info, import_tensorrt
from d4rt.runtime.files import write_bytes_atomic
from d4rt.runtime.manifest import (
    ENGINE_FILES,
    HARDWARE_COMPAT,
    QUERY_DIM,
    Manifest,
    check_graph_files,
    read_manifest,
    sha256_file,
    write_manifest,
)

HARDWARE_LEVELS = {"ampere+": "AMPERE_PLUS", "same-compute-capability": "SAME_COMPUTE_CAPABILITY"}


@dataclass
class EngineBuildOptions:
    """How to build. Query counts bound the decoder's N; the runtime splits larger query batches."""

    min_queries: int = 1
    opt_queries: int = 4096
    max_queries: int = 65536
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


def query_profile(manifest: Manifest, options: EngineBuildOptions) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes of every decoder input with the dynamic N: {"uv": ((1, 1, 2), ...), "t": ...}."""
    profile = {}
    for spec in manifest.tensors("decoder", "inputs"):
        if QUERY_DIM in spec.shape:
            profile[spec.name] = tuple(
                tuple(n if d == QUERY_DIM else int(d) for d in spec.shape)
                for n in (options.min_queries, options.opt_queries, options.max_queries)
            )
    return profile


def engine_precision(manifest: Manifest, options: EngineBuildOptions) -> str:
    if options.fp16_flag:
        return "fp16 (TensorRT 10 FP16 builder flag on the fp32 graph, weak typing)"
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
        "workspace_gb": options.workspace_gb,
        "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **{
            graph: {"file": ENGINE_FILES[graph], "sha256": engine_sha256[graph],
                    "onnx_sha256": manifest.graphs[graph]["sha256"]}
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


# ----- the TensorRT part -------------------------------------------------------------------------------------------
def _build_one(trt, builder, logger, onnx_path: Path, profile: dict, options: EngineBuildOptions, cache):
    """Parse one ONNX graph and build a serialized engine (bytes), timing into the shared ``cache``."""
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if not options.fp16_flag and strongly_typed is not None:  # TensorRT 11: accepted and ignored (always strong)
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # resolves *.onnx.data beside the graph
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT's ONNX parser rejected {onnx_path}:\n  {errors}")

    config = builder.create_builder_config()
    if options.workspace_gb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gb * 1024**3))
    if profile:
        opt_profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile.items():
            opt_profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(opt_profile)
    if options.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if options.version_compat:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.hardware_compat != "none":
        member = HARDWARE_LEVELS[options.hardware_compat]
        level = getattr(trt.HardwareCompatibilityLevel, member, None)
        if level is None:
            raise ValueError(f"TensorRT {trt.__version__} has no HardwareCompatibilityLevel.{member}")
        config.hardware_compatibility_level = level
    config.set_timing_cache(cache, False)  # ignore_mismatch=False: refuse a cache from another device / version

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    return bytes(plan)


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
    check_graph_files(manifest, onnx_dir)

    trt = import_tensorrt()
    major = int(trt.__version__.split(".")[0])
    if options.fp16_flag and major >= 11:
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
    cache_config = builder.create_builder_config()  # owns the cache for the whole build
    cache = cache_config.create_timing_cache(cache_bytes)

    out_dir.mkdir(parents=True, exist_ok=True)
    digests = {}
    profile = query_profile(manifest, options)
    for graph in tqdm(ENGINE_FILES, desc="TensorRT build", disable=not progress):
        plan = _build_one(trt, builder, logger, onnx_dir / manifest.graphs[graph]["file"],
                          profile if graph == "decoder" else {}, options, cache)
        path = write_bytes_atomic(out_dir / ENGINE_FILES[graph], plan)
        digests[graph] = sha256_file(path)
    if cache_path is not None:
        write_bytes_atomic(cache_path, bytes(cache.serialize()))

    result = manifest if out_dir.resolve() == onnx_dir.resolve() else rebase_graphs(manifest, onnx_dir, out_dir)
    result.engines = engine_section(manifest, options, trt.__version__, gpu, digests)
    write_manifest(out_dir, result)
    return result
