"""AOTInductor packages: encoder.pt2 / decoder.pt2 (and their bf16 twins) beside the ONNX graphs.

The same two graphs as the ONNX export (``export/graphs.py``: the same inputs, outputs, dynamic query axis N and
dynamic frame axis T), traced with ``torch.export`` and compiled by ``torch._inductor.aoti_compile_and_package``
into packages that PyTorch's C++ runtime (``torch::inductor::AOTIModelPackageLoader``, the C++ runtime in ``cpp/``)
and Python (``torch._inductor.aoti_load_package``, the runtime's "aoti" backend) load without the model's code.

- A package is compiled for the machine it is built on: on the CPU with ``-march=native`` (Inductor's default), so
  it needs the build machine's instruction set; on CUDA for the GPU's compute capability. The manifest's ``aoti``
  section records both (``d4rt.runtime.manifest.machine_isa``) and loaders refuse another machine in one line.
- Each package carries the export id in its metadata (``d4rt.export_id``), so a package of another export is
  refused even when someone edits the sha256 in the manifest.
- bf16: the model in bfloat16 (LayerNorm statistics in float32 as in the fp16 ONNX export); keys / values bf16,
  inputs and outputs as in fp32.
- CUDA: ``attention="triton"`` puts our fused kernels (``torch.library.triton_op``) into the package. Inductor
  compiles user Triton kernels only for CUDA; on the CPU the attention is ``sdpa``. Not run here (no GPU).
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.fx.experimental import _config as fx_config

from d4rt.export.graphs import DecoderGraph, EncoderGraph
from d4rt.export.onnx_export import MAX_QUERIES_TRACED
from d4rt.runtime.manifest import (
    AOTI_PRECISIONS,
    EXPORT_ID_KEY,
    aoti_package_name,
    machine_isa,
    read_manifest,
    sha256_file,
    write_manifest,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def machine(device: str) -> dict[str, Any]:
    """What the packages compiled here need: the CPU's architecture and ISA extensions, or for CUDA the GPU name
    and compute capability."""
    if device.startswith("cuda"):
        import platform

        index = torch.device(device).index or 0
        major, minor = torch.cuda.get_device_capability(index)
        return {"arch": platform.machine(), "gpu_name": torch.cuda.get_device_name(index),
                "compute_capability": f"{major}.{minor}"}
    return machine_isa()


def default_attention(device: str) -> str:
    """Triton kernels inside CUDA packages, torch's sdpa on the CPU (Inductor cannot compile Triton for the CPU)."""
    return "triton" if device.startswith("cuda") else "sdpa"


def precision_model(model: nn.Module, precision: str) -> nn.Module:
    """The model in the package's precision: float32 as is; bf16 a bfloat16 copy whose LayerNorms keep float32
    statistics (the recipe of the fp16 ONNX export, ``export/precision.py``)."""
    if precision == "fp32":
        return model
    import copy

    from d4rt.export.precision import Float32LayerNorm

    low = copy.deepcopy(model).to(DTYPES[precision])
    originals = dict(model.named_modules())
    for prefix, module in list(low.named_modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.LayerNorm) and not isinstance(child, Float32LayerNorm):
                norm = Float32LayerNorm(child.normalized_shape, child.eps, child.elementwise_affine)
                norm.load_state_dict(originals[f"{prefix}.{name}" if prefix else name].state_dict())
                setattr(module, name, norm)
    return low.eval()


def _example_inputs(cfg, T: int, kv_dtype: torch.dtype, device: str):
    S = cfg.image_size
    L, H, Dh = cfg.dec_depth, cfg.dec_heads, cfg.dec_dim // cfg.dec_heads
    M = T // cfg.tubelet[0] * cfg.tokens_per_slice + 1
    video = torch.rand(1, T, 3, S, S, device=device)
    aspect = torch.rand(1, device=device) + 0.5
    keys = torch.randn(L, 1, H, M, Dh, device=device, dtype=kv_dtype)
    values = torch.randn(L, 1, H, M, Dh, device=device, dtype=kv_dtype)
    n = 64
    uv = torch.rand(1, n, 2, device=device)
    t = torch.randint(0, T, (1, n, 3), dtype=torch.int32, device=device)
    return (video, aspect), (video, keys, values, uv, t)


def export_aoti(
    model: nn.Module,
    out_dir: str | Path,
    *,
    precisions: tuple[str, ...] = AOTI_PRECISIONS,
    device: str = "cpu",
    attention: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Compile AOTInductor packages of ``model`` into ``out_dir``, which must hold this model's ONNX export (its
    manifest gives the export id and frame range), and record them in the manifest's ``aoti`` section.

    Args:
        precisions: any of "fp32", "bf16" (one encoder + decoder package each).
        device: "cpu" or "cuda" (a CUDA torch on the GPU that will run the packages).
        attention: the attention backend compiled in (default: "triton" on CUDA, "sdpa" on the CPU).
    Returns:
        the manifest's new ``aoti`` section.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    bad = [p for p in precisions if p not in AOTI_PRECISIONS]
    if bad or not precisions:
        raise ValueError(f"AOTInductor precisions must be among {AOTI_PRECISIONS}, got {list(precisions)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' needs a CUDA build of torch on a machine with an NVIDIA GPU")
    attention = attention or default_attention(device)
    if attention == "triton" and not device.startswith("cuda"):
        raise ValueError("attention='triton' compiles into CUDA packages only (Inductor builds Triton kernels for CUDA)")
    cfg = model.config
    T_min, T = manifest.frame_range
    tt = cfg.tubelet[0]
    previous = model.attention
    packages: dict[str, dict[str, Any]] = {}
    try:
        for precision in precisions:
            graph_model = precision_model(model, precision).to(device).eval()
            graph_model.set_attention(attention)
            enc_args, dec_args = _example_inputs(cfg, T, DTYPES[precision], device)
            N = torch.export.Dim("N", min=1, max=MAX_QUERIES_TRACED)
            video_dims = kv_dims = None
            if T_min < T:
                slices = torch.export.Dim("tubelet_slices", min=T_min // tt, max=T // tt)
                video_dims, kv_dims = {1: tt * slices}, {3: cfg.tokens_per_slice * slices + 1}
            steps = [
                ("encoder", EncoderGraph(graph_model), enc_args, {"video": video_dims, "aspect_ratio": None}),
                ("decoder", DecoderGraph(graph_model), dec_args,
                 {"video": video_dims, "keys": kv_dims, "values": kv_dims, "uv": {1: N}, "t": {1: N}}),
            ]
            entry: dict[str, Any] = {"kv_dtype": str(DTYPES[precision]).removeprefix("torch.")}
            for graph, module, args, dynamic in steps:
                start = time.perf_counter()
                name = aoti_package_name(graph, precision)
                # backed_size_oblivious: no 0/1 specialisation of the frame axis (a range of 1..2 tubelet slices
                # was otherwise fixed to the example's; torch.onnx's exporter traces under the same setting)
                with warnings.catch_warnings(), torch.no_grad(), \
                        fx_config.patch(backed_size_oblivious=True):
                    warnings.simplefilter("ignore")
                    program = torch.export.export(module.eval(), args, dynamic_shapes=dynamic, strict=False)
                    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".aoti-") as tmp:
                        path = torch._inductor.aoti_compile_and_package(
                            program, package_path=str(Path(tmp) / name),
                            inductor_configs={"aot_inductor.metadata": {EXPORT_ID_KEY: manifest.export_id,
                                                                        "d4rt.precision": precision,
                                                                        "d4rt.graph": graph}},
                        )
                        os.replace(path, out_dir / name)
                entry[graph] = {"file": name, "sha256": sha256_file(out_dir / name)}
                if progress:
                    print(f"AOTInductor {graph} ({precision}, {device}, {attention}): {name} in "
                          f"{time.perf_counter() - start:.1f} s", flush=True)
            packages[precision] = entry
    finally:
        model.set_attention(previous)
    section = {
        "export_id": manifest.export_id,
        "torch_version": torch.__version__,
        "device": "cuda" if device.startswith("cuda") else "cpu",
        "attention": attention,
        "max_queries": MAX_QUERIES_TRACED,
        "machine": machine(device),
        "packages": packages,
    }
    manifest = read_manifest(out_dir)  # unchanged since; keep every other section as it is
    manifest.aoti = section
    write_manifest(out_dir, manifest)
    return section
