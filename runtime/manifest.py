"""``manifest.json``: what an export folder holds, what it was made from and for which machine.

The runtime's lowest layer: ``d4rt export`` and ``d4rt build-engine`` write the manifest through this module and
the runtime reads and checks it here, so the runtime never reaches up into ``d4rt.export``. No torch.

An export folder::

    manifest.json      this file
    encoder.onnx       video [1, T, 3, S, S] float32, aspect_ratio [1] float32 -> keys, values [L, 1, H, M, Dh]
    decoder.onnx       video, keys, values, uv [1, N, 2] float32, t [1, N, 3] int32 -> the six outputs, N dynamic

The frame axis T is dynamic (any multiple of the tubelet's frames in ``frame_range`` = [min_frames, num_frames],
named "T" in the graphs, with M = T / tt * (S / th) * (S / tw) + 1 named "M"); manifests written before the
dynamic frame axis have no ``min_frames`` and take exactly ``num_frames`` frames.
    *.onnx.data        the weights, beside the graph, when a graph is too big for one protobuf (> 2 GB)
    encoder.engine     TensorRT engines, when ``d4rt build-engine`` has run on this machine
    decoder.engine
    encoder.pt2        AOTInductor packages (``d4rt export --aoti``; encoder.bf16.pt2 / decoder.bf16.pt2 for bf16),
    decoder.pt2        listed in the ``aoti`` section with the machine they were compiled for

Paths inside the manifest are relative to the manifest's directory.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from d4rt.runtime.files import write_text_atomic

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
GRAPH_FILES = {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}
ENGINE_FILES = {"encoder": "encoder.engine", "decoder": "decoder.engine"}
# int8: ONNX Runtime's dynamic quantization (export/quantize.py); int8-qdq: explicit (Q/DQ) int8 for TensorRT. Each
# records its method per graph in graphs.<name>.quantization.
PRECISIONS = ("fp32", "fp16", "int8", "int8-qdq")

# The two graphs' tensor names (design.md). The decoder's "uv_tgt" is the model's output "uv" (an ONNX graph
# cannot have an input and an output of the same name).
ENCODER_INPUTS = ("video", "aspect_ratio")
ENCODER_OUTPUTS = ("keys", "values")
DECODER_INPUTS = ("video", "keys", "values", "uv", "t")
DECODER_OUTPUTS = ("xyz", "uv_tgt", "visibility", "displacement", "normal", "confidence")
MODEL_OUTPUT_NAMES = dict(zip(DECODER_OUTPUTS, ("xyz", "uv", "visibility", "displacement", "normal", "confidence")))
QUERY_DIM = "N"  # the name of the dynamic query dimension
FRAME_DIM = "T"  # the dynamic frame count (video's dim 1)
MEMORY_DIM = "M"  # the memory token count that follows from it (keys' / values' dim 3)
DYNAMIC_DIMS = (QUERY_DIM, FRAME_DIM, MEMORY_DIM)
DEFAULT_QUERY_PROFILE = (1, 4096, 65536)  # min / opt / max N of TensorRT profiles (d4rt build-engine, ORT's TRT EP)

EXPORT_HINT = "re-export with `d4rt export CKPT_DIR --out DIR`"
# Both graphs of one export carry the same random id in their ONNX metadata (and the manifest records it), so an
# encoder.onnx from another export of the same shapes is refused even when someone edits the manifest's sha256.
EXPORT_ID_KEY = "d4rt.export_id"
BUILD_HINT = "rebuild the engines on this machine with `d4rt build-engine ONNX_DIR --out DIR`"


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, shape (ints, or "N" / "T" / "M" for a dynamic dimension) and numpy dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorSpec":
        return cls(d["name"], tuple(d["shape"]), d["dtype"])


def graph_contract(
    config: dict[str, Any], num_frames: int, precision: str, dynamic_frames: bool = False
) -> dict[str, dict[str, list[TensorSpec]]]:
    """The tensors each graph must have (design.md), from the model config and the exported clip length.

    keys / values are float16 in the float16 export, float32 otherwise; every other tensor keeps its dtype.
    With ``dynamic_frames`` the frame count is "T" and the memory token count "M" (else the fixed values).
    Returns {"encoder": {"inputs": [...], "outputs": [...]}, "decoder": {...}}.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    S, T = int(config["image_size"]), int(num_frames)
    tt, th, tw = (int(x) for x in config["tubelet"])
    L, H = int(config["dec_depth"]), int(config["dec_heads"])
    Dh = int(config["dec_dim"]) // H
    M = T // tt * (S // th) * (S // tw) + 1
    if dynamic_frames:
        T, M = FRAME_DIM, MEMORY_DIM
    kv_dtype = "float16" if precision == "fp16" else "float32"
    video = TensorSpec("video", (1, T, 3, S, S), "float32")
    keys = TensorSpec("keys", (L, 1, H, M, Dh), kv_dtype)
    values = TensorSpec("values", (L, 1, H, M, Dh), kv_dtype)
    N = QUERY_DIM
    outputs = [
        TensorSpec("xyz", (1, N, 3), "float32"),
        TensorSpec("uv_tgt", (1, N, 2), "float32"),
        TensorSpec("visibility", (1, N), "float32"),
        TensorSpec("displacement", (1, N, 3), "float32"),
        TensorSpec("normal", (1, N, 3), "float32"),
        TensorSpec("confidence", (1, N), "float32"),
    ]
    return {
        "encoder": {"inputs": [video, TensorSpec("aspect_ratio", (1,), "float32")], "outputs": [keys, values]},
        "decoder": {
            "inputs": [
                video, keys, values, TensorSpec("uv", (1, N, 2), "float32"), TensorSpec("t", (1, N, 3), "int32"),
            ],
            "outputs": outputs,
        },
    }


@dataclass
class Manifest:
    """The content of ``manifest.json``. ``graphs`` / ``engines`` map "encoder" / "decoder" to their files."""

    config: dict[str, Any]
    num_frames: int
    image_size: int
    precision: str
    opset: int
    checkpoint: dict[str, Any]
    graphs: dict[str, dict[str, Any]]
    engines: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    export_id: str = ""
    d4rt_version: str = ""
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION
    min_frames: int | None = None  # the dynamic frame axis' minimum (None: exactly num_frames, older exports)
    aoti: dict[str, Any] | None = None  # AOTInductor packages (``d4rt export --aoti``), see ``aoti_files``

    @property
    def frame_range(self) -> tuple[int, int]:
        """(fewest, most) frames a clip may have for these graphs; any multiple of the tubelet's frames between."""
        return (int(self.min_frames or self.num_frames), int(self.num_frames))

    @property
    def dynamic_frames(self) -> bool:
        return self.min_frames is not None

    # ----- tensors ---------------------------------------------------------------------------------------------
    def tensors(self, graph: str, kind: str) -> list[TensorSpec]:
        """The recorded inputs or outputs ("inputs" | "outputs") of "encoder" or "decoder"."""
        return [TensorSpec.from_dict(d) for d in self.graphs[graph][kind]]

    @property
    def memory_tokens(self) -> int:
        """M of the longest clip (num_frames)."""
        return self.memory_tokens_for(self.num_frames)

    def memory_tokens_for(self, num_frames: int) -> int:
        """M of a clip of ``num_frames`` frames: T / tt * (S / th) * (S / tw) + 1 (the aspect-ratio token)."""
        tt, th, tw = (int(x) for x in self.config["tubelet"])
        return int(num_frames) // tt * (self.image_size // th) * (self.image_size // tw) + 1

    @property
    def kv_dtype(self) -> str:
        return self.tensors("encoder", "outputs")[0].dtype

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


REQUIRED_FIELDS = ("config", "num_frames", "image_size", "precision", "opset", "checkpoint", "graphs")


def sha256_file(path: str | Path, chunk_bytes: int = 16 * 1024 * 1024) -> str:
    """Hex sha256 of a file, streamed (graphs and engines can be several GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def package_version() -> str:
    """The installed d4rt's version (pyproject's), read from the package metadata: the runtime never imports the
    core package for it (``d4rt.__version__`` is the same string; tests/test_imports.py checks)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("d4rt")
    except PackageNotFoundError:
        return "unknown (not installed)"


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    """Write ``directory/manifest.json`` atomically."""
    if not manifest.d4rt_version:
        manifest.d4rt_version = package_version()
    return write_text_atomic(Path(directory) / MANIFEST_NAME, json.dumps(manifest.to_dict(), indent=2) + "\n")


def check_export_ids(manifest: Manifest, found: dict[str, str | None], where: str) -> None:
    """``found`` maps "encoder" / "decoder" to the export id read from that graph (ONNX metadata or an engine's
    manifest entry); every one must equal the manifest's. Manifests written before export ids existed have none
    and are not checked."""
    if not manifest.export_id:
        return
    for graph, export_id in found.items():
        if export_id != manifest.export_id:
            raise ValueError(
                f"the {graph} in {where} comes from another export (export id {export_id or 'none'}) than this "
                f"manifest ({manifest.export_id}); the encoder and decoder of one export folder must be exported "
                f"together: {EXPORT_HINT}"
            )


# The fields whose type the reader checks (name -> (types, what to call them)); config's are nested under "config".
FIELD_TYPES = {
    "config": (dict, "an object"), "checkpoint": (dict, "an object"), "graphs": (dict, "an object"),
    "num_frames": (int, "an integer"), "image_size": (int, "an integer"), "opset": (int, "an integer"),
    "precision": (str, "a string"), "min_frames": ((int, type(None)), "an integer or null"),
    "export_id": (str, "a string"), "engines": ((dict, type(None)), "an object or null"),
}
CONFIG_FIELD_TYPES = {"image_size": int, "dec_depth": int, "dec_heads": int, "dec_dim": int}


def check_fields(data: dict[str, Any], path: Path) -> None:
    """Each field of a manifest has its type, and the sizes agree with each other (ValueError naming the field).

    A hand-edited manifest (``num_frames`` = "sixteen", an ``image_size`` that is not the graphs') is refused here
    with the field's name, rather than deep inside a backend.
    """

    def wrong(field: str, expected: str, value: Any) -> ValueError:
        return ValueError(f"{path}: field {field!r} must be {expected}, found {json.dumps(value)}; the manifest was "
                          f"edited or is corrupt: {EXPORT_HINT}")

    for name, (types, expected) in FIELD_TYPES.items():
        if name in data and (not isinstance(data[name], types) or isinstance(data[name], bool)):
            raise wrong(name, expected, data[name])
    for name in ("num_frames", "image_size", "opset", "min_frames"):
        if isinstance(data.get(name), int) and data[name] < 1:
            raise wrong(name, "a positive integer", data[name])
    config = data["config"]
    for name, types in CONFIG_FIELD_TYPES.items():
        if not isinstance(config.get(name), types) or isinstance(config.get(name), bool) or config[name] < 1:
            raise wrong(f"config.{name}", "a positive integer", config.get(name))
    tubelet = config.get("tubelet")
    if not (isinstance(tubelet, list) and len(tubelet) == 3 and all(type(x) is int and x >= 1 for x in tubelet)):
        raise wrong("config.tubelet", "three positive integers [frames, height, width]", tubelet)
    if data["image_size"] != config["image_size"]:
        raise ValueError(f"{path}: field 'image_size' is {data['image_size']} but the graphs were exported for "
                         f"{config['image_size']} x {config['image_size']} frames (config.image_size); the manifest "
                         f"was edited: {EXPORT_HINT}")
    if data.get("min_frames") is not None and data["min_frames"] > data["num_frames"]:
        raise ValueError(f"{path}: field 'min_frames' ({data['min_frames']}) is above 'num_frames' "
                         f"({data['num_frames']}); the manifest was edited: {EXPORT_HINT}")


def read_manifest(directory: str | Path) -> Manifest:
    """Read and validate ``directory/manifest.json``; FileNotFoundError / ValueError say what is wrong and what
    to do."""
    directory = Path(directory)
    if directory.name == MANIFEST_NAME and directory.is_file():
        directory = directory.parent  # the manifest's own path names its folder
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise FileNotFoundError(f"export folder {directory} does not exist; {EXPORT_HINT}")
    if not path.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in {directory}: not an export folder (or an export that did not "
            f"finish); {EXPORT_HINT}"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the file is corrupt: {EXPORT_HINT}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(data).__name__}; {EXPORT_HINT}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"{path} has schema_version {version!r}; this d4rt reads version {SCHEMA_VERSION}: {EXPORT_HINT} "
            f"with this d4rt version"
        )
    missing = [k for k in REQUIRED_FIELDS if k not in data]
    if missing:
        raise ValueError(f"{path} lacks the fields {missing}; the file is incomplete: {EXPORT_HINT}")
    check_fields(data, path)
    known = set(Manifest.__dataclass_fields__)
    manifest = Manifest(**{k: v for k, v in data.items() if k in known})
    if manifest.precision not in PRECISIONS:
        raise ValueError(f"{path}: precision {manifest.precision!r} is not one of {PRECISIONS}; {EXPORT_HINT}")
    for graph in GRAPH_FILES:
        entry = manifest.graphs.get(graph)
        if not isinstance(entry, dict) or not {"file", "sha256", "inputs", "outputs"} <= set(entry):
            raise ValueError(f"{path}: the {graph} graph entry is missing or incomplete; {EXPORT_HINT}")
    tt = int(manifest.config["tubelet"][0])
    lo, hi = manifest.frame_range
    if not (tt <= lo <= hi and lo % tt == 0 and hi % tt == 0):
        raise ValueError(
            f"{path}: frame range [{lo}, {hi}] is not a range of multiples of the tubelet's {tt} frames; {EXPORT_HINT}"
        )
    expected = graph_contract(manifest.config, manifest.num_frames, manifest.precision, manifest.dynamic_frames)
    for graph, kinds in expected.items():
        for kind, specs in kinds.items():
            found = manifest.tensors(graph, kind)
            if found != specs:
                raise ValueError(
                    f"{path}: the {graph} {kind} {[s.to_dict() for s in found]} do not match the config's "
                    f"contract {[s.to_dict() for s in specs]}; {EXPORT_HINT}"
                )
    return manifest


def graph_files(manifest: Manifest, directory: str | Path, graph: str) -> list[tuple[Path, str]]:
    """[(path, sha256)] of a graph's ONNX file and its external-data files."""
    directory = Path(directory)
    entry = manifest.graphs[graph]
    files = [(directory / entry["file"], entry["sha256"])]
    files += [(directory / d["file"], d["sha256"]) for d in entry.get("external_data", [])]
    return files


def check_files(files: list[tuple[Path, str]], what: str, hint: str, verify_sha256: bool = True) -> None:
    """Every file exists and (optionally) has its recorded sha256; else FileNotFoundError / ValueError with ``hint``."""
    for path, digest in files:
        if not path.is_file():
            raise FileNotFoundError(f"{what} file {path} is missing; {hint}")
        if verify_sha256 and sha256_file(path) != digest:
            raise ValueError(
                f"{what} file {path} does not match the sha256 in {MANIFEST_NAME} (corrupt, truncated or replaced); "
                f"{hint}"
            )


def check_graph_files(manifest: Manifest, directory: str | Path, verify_sha256: bool = True) -> None:
    for graph in GRAPH_FILES:
        check_files(graph_files(manifest, directory, graph), f"{graph} ONNX", EXPORT_HINT, verify_sha256)


# ----- engines ---------------------------------------------------------------------------------------------------
HARDWARE_COMPAT = ("none", "ampere+", "same-compute-capability")


def engine_files(manifest: Manifest, directory: str | Path) -> list[tuple[Path, str]]:
    if not manifest.engines:
        raise FileNotFoundError(f"{Path(directory) / MANIFEST_NAME} lists no TensorRT engines; {BUILD_HINT}")
    return [(Path(directory) / manifest.engines[g]["file"], manifest.engines[g]["sha256"]) for g in ENGINE_FILES]


def check_engine_compat(
    engines: dict[str, Any], tensorrt_version: str, gpu_name: str, compute_capability: str
) -> list[str]:
    """Refuse engines built for another TensorRT version or GPU (ValueError saying how to rebuild).

    Args:
        engines: the manifest's ``engines`` section; the other arguments describe this machine.
    Returns:
        warnings that do not stop the run (another GPU model of the same compute capability).
    """
    built_trt, built_cc = str(engines["tensorrt_version"]), str(engines["compute_capability"])
    problems, warnings = [], []
    if engines.get("version_compatible"):
        if not version_compatible_runs(built_trt, tensorrt_version):
            problems.append(
                f"the engines were built with TensorRT {built_trt} (version-compatible), which runs on that version "
                f"or a newer one of the same major version (or TensorRT 11 for a TensorRT 10 engine), but this "
                f"machine has TensorRT {tensorrt_version}"
            )
    elif tensorrt_version != built_trt:
        problems.append(
            f"the engines were built with TensorRT {built_trt}, this machine has TensorRT {tensorrt_version}"
        )
    level = engines.get("hardware_compatibility", "none")
    if level == "ampere+":
        if major_minor(compute_capability) < (8, 0):
            problems.append(f"ampere+ engines need compute capability >= 8.0, this GPU has {compute_capability}")
    elif built_cc != str(compute_capability):
        problems.append(
            f"the engines were built for compute capability {built_cc} ({engines.get('gpu_name')}), this GPU "
            f"({gpu_name}) has {compute_capability}"
        )
    if not problems and level == "none" and engines.get("gpu_name") and engines["gpu_name"] != gpu_name:
        warnings.append(
            f"the engines were built on a {engines['gpu_name']} and run on a {gpu_name} of the same compute "
            f"capability: they work, but their tactics were timed on the other GPU; {BUILD_HINT} for best speed"
        )
    if problems:
        raise ValueError("TensorRT engines do not match this machine: " + "; ".join(problems) + f". {BUILD_HINT}")
    return warnings


def check_engines_match_graphs(manifest: Manifest) -> None:
    """The engines must have been built from the graphs this manifest describes (not from an older export)."""
    for graph in ENGINE_FILES:
        built_from = manifest.engines[graph].get("onnx_sha256")
        if built_from != manifest.graphs[graph]["sha256"]:
            raise ValueError(
                f"the {graph} engine was built from another {GRAPH_FILES[graph]} (sha256 {built_from}) than the one "
                f"in the manifest ({manifest.graphs[graph]['sha256']}); {BUILD_HINT}"
            )
    check_export_ids(manifest, {g: manifest.engines[g].get("export_id") for g in ENGINE_FILES}, "the engines")


def major_minor(version: str) -> tuple[int, int]:
    """(major, minor) of a version string: "10.9.0.34" -> (10, 9), "11.0.0b6" -> (11, 0), "9.0" -> (9, 0).

    Used for ``tensorrt.__version__`` (four numbers in release wheels, "10.0.0b6" in early-access ones) and for
    compute capabilities. Raises ValueError when there is no leading number.
    """
    import re

    match = re.match(r"\s*(\d+)(?:\.(\d+))?", str(version))
    if match is None:
        raise ValueError(f"cannot read a version number from {version!r}; expected e.g. '10.9.0.34'")
    return int(match.group(1)), int(match.group(2) or 0)


# Version-compatible engines (BuilderFlag.VERSION_COMPATIBLE) run on the TensorRT they were built with or a later
# release of the same major version; across major versions only these (built, runtime) pairs are supported
# (TensorRT 11.4 support matrix, "Engine Portability": 10 -> 11 and 8 -> 10, no other combination).
CROSS_MAJOR_VERSION_COMPAT = {(8, 10), (10, 11)}


def version_compatible_runs(built_version: str, runtime_version: str) -> bool:
    """Whether a version-compatible engine built with TensorRT ``built_version`` runs on ``runtime_version``."""
    built, runtime = major_minor(built_version), major_minor(runtime_version)
    if built[0] == runtime[0]:
        return runtime >= built
    return (built[0], runtime[0]) in CROSS_MAJOR_VERSION_COMPAT


# ----- AOTInductor packages ----------------------------------------------------------------------------------------
# ``d4rt export --aoti`` (d4rt.export.aoti) writes them; the runtime's "aoti" backend and the C++ runtime
# (cpp/src/manifest.cpp, the same checks and wording) read them. The ``aoti`` section:
#   {"export_id", "torch_version", "device": "cpu" | "cuda", "attention", "max_queries",
#    "machine": {"arch", "cpu_flags": [...] (cpu) | "gpu_name", "compute_capability" (cuda)},
#    "packages": {"fp32" | "bf16": {"kv_dtype", "encoder": {"file", "sha256"}, "decoder": {...}}}}
AOTI_PRECISIONS = ("fp32", "bf16")
AOTI_HINT = "rebuild the packages on this machine with `d4rt export CKPT_DIR --out DIR --aoti`"
# The instruction-set extensions a package compiled with -march=native may use (x86 and Arm names as the kernel
# writes them in /proc/cpuinfo). A package needs every one of these the build machine had; the others (virtualisation,
# security, power flags) say nothing about the code.
ISA_FLAGS = (
    "sse3", "pni", "ssse3", "sse4_1", "sse4_2", "popcnt", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "movbe",
    "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx512ifma", "avx512vbmi", "avx512_vbmi2",
    "avx512_vnni", "avx512_bitalg", "avx512_vpopcntdq", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
    "amx_bf16", "amx_int8", "gfni", "vaes", "vpclmulqdq", "sha_ni",
    "asimd", "asimdhp", "asimddp", "sve", "sve2", "bf16", "i8mm", "fphp", "atomics",
)


def aoti_package_name(graph: str, precision: str) -> str:
    """encoder.pt2, decoder.pt2 (fp32); encoder.bf16.pt2, decoder.bf16.pt2."""
    return f"{graph}.pt2" if precision == "fp32" else f"{graph}.{precision}.pt2"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags ("flags" on x86, "Features" on Arm) from /proc/cpuinfo (empty where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def machine_isa() -> dict[str, Any]:
    """What a CPU package compiled here needs: the CPU architecture and its ISA extensions (a CUDA package's GPU
    and compute capability are recorded by ``d4rt.export.aoti``, which has torch)."""
    import platform

    return {"arch": platform.machine(), "cpu_flags": sorted(cpu_flags() & set(ISA_FLAGS))}


def check_aoti_compat(aoti: dict[str, Any] | None, precision: str, arch: str, flags: set[str],
                      torch_version: str, compute_capability: str | None = None) -> None:
    """Refuse, in one line, packages this machine cannot run: none exported, not in this precision, another CPU
    architecture or missing ISA extensions, another GPU compute capability, another torch version."""
    if not aoti:
        raise FileNotFoundError(f"{MANIFEST_NAME} lists no AOTInductor packages; export them with "
                                f"`d4rt export CKPT_DIR --out DIR --aoti`")
    if precision not in aoti.get("packages", {}):
        raise ValueError(f"no {precision} AOTInductor packages in this export (it has "
                         f"{sorted(aoti.get('packages', {}))}); {AOTI_HINT}")
    machine = aoti.get("machine", {})
    if machine.get("arch") != arch:
        raise ValueError(f"the AOTInductor packages were compiled for {machine.get('arch')}, this machine is "
                         f"{arch}; {AOTI_HINT}")
    if aoti.get("device") == "cuda":
        if compute_capability is None:
            raise ValueError(f"the AOTInductor packages were compiled for CUDA ({machine.get('gpu_name')}), this "
                             f"machine has no CUDA GPU; {AOTI_HINT}")
        if compute_capability != machine.get("compute_capability"):
            raise ValueError(f"the AOTInductor packages were compiled for compute capability "
                             f"{machine.get('compute_capability')} ({machine.get('gpu_name')}), this GPU has "
                             f"{compute_capability}; {AOTI_HINT}")
    else:
        missing = sorted(set(machine.get("cpu_flags", [])) - set(flags))
        if missing:
            raise ValueError(f"the AOTInductor packages were compiled for a CPU with {' '.join(missing)}, which this "
                             f"CPU lacks; {AOTI_HINT}")
    if str(aoti.get("torch_version")).split("+")[0] != torch_version.split("+")[0]:
        raise ValueError(f"the AOTInductor packages were compiled with torch {aoti.get('torch_version')}, this is "
                         f"torch {torch_version}; {AOTI_HINT}")


def aoti_files(manifest: Manifest, directory: str | Path, precision: str) -> dict[str, tuple[Path, str]]:
    """{"encoder": (path, sha256), "decoder": ...} of the packages of one precision."""
    entry = manifest.aoti["packages"][precision]
    return {g: (Path(directory) / entry[g]["file"], entry[g]["sha256"]) for g in GRAPH_FILES}
