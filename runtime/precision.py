"""Which precision runs where, and the default on this machine (docs/precision.md). No torch at import.

Precisions by backend:

    torch          fp32, bf16 (CPU with AMX / avx512_bf16, CUDA GPUs), fp16 (CUDA GPUs)
    onnxruntime    the export's own graphs: fp32, fp16, int8 (``d4rt export --precision int8``, dynamic quantization)
    tensorrt       the export's own graphs (fp32, fp16)

``"auto"`` picks the fastest path measured within the accuracy budget (docs/precision.md): on a CPU with AMX
(``amx_bf16`` in /proc/cpuinfo) and no GPU, the checkpoint on the torch backend in bf16 (3.0x ONNX Runtime fp32 on
base eager, 3.75x with the decoder compiled; xyz within 1 %); everywhere else the export's graphs as they are.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

TORCH_PRECISIONS = ("fp32", "bf16", "fp16")
TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
LOAD_PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8", "int8-qdq")  # what load(..., precision=) and `d4rt infer` take

BF16_ON_ONNXRUNTIME = (
    "ONNX Runtime has no bf16 path (its CPU MatMul has no bfloat16 kernel, and exports hold fp32 / fp16 / int8 "
    "graphs): run bf16 on the torch backend (`--backend torch --precision bf16`, load(dir, backend='torch', "
    "precision='bf16')), or export int8 graphs for ONNX Runtime (`d4rt export CKPT --precision int8`)"
)


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo is missing: macOS, Windows)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.partition(":")[2].split())
    return set()


def cpu_bf16_kind(flags: set[str] | None = None) -> str | None:
    """"amx" (AMX tiles: bf16 matmuls ~6x fp32, measured), "avx512_bf16" (bf16 dot products, no tiles; not
    measured here) or None (bf16 is emulated: slower than fp32)."""
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return None


def default_precision(flags: set[str] | None = None, cuda: bool = False) -> str:
    """What ``precision="auto"`` runs on the torch backend: bf16 on a CPU with AMX, fp32 otherwise.

    CUDA GPUs stay fp32 by default until scripts/gpu_check.sh's bf16 rows are in (ask for bf16 explicitly);
    avx512_bf16 without AMX was not measured, so it stays fp32 too.
    """
    if cuda:
        return "fp32"
    return "bf16" if cpu_bf16_kind(flags) == "amx" else "fp32"


def torch_dtype_name(precision: str) -> str:
    """"bf16" -> "bfloat16" (the torch backend's dtype names)."""
    if precision not in TORCH_DTYPES:
        raise ValueError(
            f"the torch backend runs precision fp32, bf16 or fp16, not {precision!r}"
            + ("; int8 graphs run on ONNX Runtime (`--backend onnxruntime-cpu`)" if precision == "int8" else "")
        )
    return TORCH_DTYPES[precision]


def precision_from_dtype(dtype: str) -> str:
    """The deprecated ``dtype=`` names ("float32", "bfloat16", "float16") as precisions."""
    names = {v: k for k, v in TORCH_DTYPES.items()}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}; use precision= ({TORCH_PRECISIONS})")
    return names[dtype]


def check_graph_precision(requested: str | None, exported: str, backend: str, directory) -> None:
    """An engine backend runs the export's graphs as they are: ``requested`` (None / "auto": anything) must be
    the export's precision. bf16 is refused on every engine backend with what to use instead."""
    if requested in (None, "auto", exported):
        return
    if requested == "bf16":
        raise ValueError(f"precision 'bf16' on backend {backend!r} (the export's graphs): {BF16_ON_ONNXRUNTIME}")
    raise ValueError(
        f"the export in {directory} holds {exported} graphs, not {requested}: re-export with "
        f"`d4rt export CKPT --precision {requested} --out DIR` (or drop --precision to run the {exported} graphs)"
    )


def has_torch() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False
