"""Parity of an export: both graphs in ONNX Runtime (CPU) against the eager PyTorch model, on fresh random inputs.

Three comparisons, each a relative error ||onnx - torch|| / ||torch|| (float64) per tensor:
- encoder: keys and values of the encoder graph vs model.memory_kv(model.encode(...));
- decoder: the decoder graph fed the *model's* keys / values vs model.decode_kv (the decoder alone);
- end to end: the decoder graph fed the *encoder graph's* keys / values vs model(...) (what the runtime does).
The reference is always the float32 eager model: a float16 export is measured against float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from d4rt.runtime.manifest import DECODER_OUTPUTS, MODEL_OUTPUT_NAMES, read_manifest, write_manifest

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 3e-2, "int8-qdq": 3e-2}  # int8: the accuracy budget (docs/precision.md)
# The tensors whose error decides pass / fail (None: every tensor). int8 is held to its budget on xyz, the budgeted
# output; every other tensor is reported. (A near-zero output such as the bundled model's displacement, RMS 0.003
# beside xyz's 2.2, has a relative error of tens of percent under any rounding: bf16 gives 0.32, int8 0.35.)
GATED = {"int8": ("xyz",)}


def relative_error(found: np.ndarray, reference: np.ndarray) -> float:
    """||found - reference||_2 / ||reference||_2 in float64 (0 when both are zero)."""
    f, r = np.asarray(found, np.float64), np.asarray(reference, np.float64)
    denom = np.linalg.norm(r)
    return float(np.linalg.norm(f - r) / denom) if denom > 0 else float(np.linalg.norm(f - r))


class ParityError(ValueError):
    """An exported graph disagrees with the eager model beyond the tolerance."""


@dataclass
class ParityReport:
    precision: str
    tolerance: float
    queries: int
    errors: dict[str, dict[str, float]]  # "encoder" | "decoder" | "end_to_end" -> tensor -> relative error
    seed: int  # of the random inputs, to reproduce a failure
    gated: tuple[str, ...] | None = None  # the tensors that decide pass / fail (None: all)

    @property
    def worst(self) -> float:
        """The largest relative error among the gated tensors."""
        return max(e for group in self.errors.values() for k, e in group.items()
                   if self.gated is None or k in self.gated)

    @property
    def passed(self) -> bool:
        return self.worst <= self.tolerance

    def to_dict(self) -> dict:
        return {"precision": self.precision, "tolerance": self.tolerance, "queries": self.queries,
                "seed": self.seed, "worst": self.worst, "passed": self.passed, "errors": self.errors,
                "gated": list(self.gated) if self.gated else "all"}

    def table(self) -> str:
        lines = [f"parity vs eager PyTorch float32 ({self.precision} graphs, ONNX Runtime CPU, {self.queries} random "
                 f"queries, seed {self.seed}; relative error, tolerance {self.tolerance:g})"]
        for group, errs in self.errors.items():
            lines.append(f"  {group:11s} " + "  ".join(f"{k} {v:.2e}" for k, v in errs.items()))
        which = "" if self.gated is None else f" (of {', '.join(self.gated)}, the budgeted outputs)"
        lines.append(f"  worst {self.worst:.2e}{which}: {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


def verify_export(
    model: nn.Module,
    directory: str | Path,
    queries: int = 2048,
    tolerance: float | None = None,
    record: bool = True,
    raise_on_failure: bool = True,
    seed: int | None = None,
    video: tuple[np.ndarray, np.ndarray] | None = None,
) -> ParityReport:
    """Run the exported graphs in ONNX Runtime (CPU) and compare them with ``model`` (float32, eager attention).

    Inputs are fresh random draws (from ``seed``, a new one per call when None): a video in [0, 1], an aspect
    ratio in [0.5, 2], ``queries`` uniform uv and uniform frame indices. ``video`` = (video [1, T, 3, S, S] float32,
    aspect_ratio [1] float32) replaces the random frames by a real clip: int8-qdq graphs are calibrated on real
    video, and noise frames lie outside their calibrated activation ranges. With ``record`` the report is stored in
    the manifest under "parity".
    """
    import secrets

    from d4rt.runtime.backend_onnxruntime import OnnxRuntimeBackend

    directory = Path(directory)
    manifest = read_manifest(directory)
    tolerance = TOLERANCE[manifest.precision] if tolerance is None else tolerance
    T, S = manifest.num_frames, manifest.image_size
    backend = OnnxRuntimeBackend(directory, manifest, "cpu")

    seed = secrets.randbits(63) if seed is None else int(seed)
    g = torch.Generator().manual_seed(seed)
    if video is None:
        video = torch.rand(1, T, 3, S, S, generator=g)
        aspect_ratio = 0.5 + 1.5 * torch.rand(1, generator=g)
    else:
        video, aspect_ratio = torch.from_numpy(np.asarray(video[0], np.float32)), torch.from_numpy(
            np.asarray(video[1], np.float32).reshape(1))
        T = video.shape[1]
    uv = torch.rand(1, queries, 2, generator=g)
    t = torch.randint(0, T, (1, queries, 3), dtype=torch.int32, generator=g)

    previous = model.attention
    model.eval().set_attention("eager")
    try:
        with torch.no_grad():
            keys, values = model.memory_kv(model.encode(video, aspect_ratio))
            t64 = t.long()
            alone = model.decode_kv(keys, values, video, uv, t64[..., 0], t64[..., 1], t64[..., 2])
            whole = model(video, uv, t64[..., 0], t64[..., 1], t64[..., 2], aspect_ratio)
    finally:
        model.set_attention(previous)

    state = backend.encode(video.numpy(), aspect_ratio.numpy())
    onnx_keys, onnx_values = backend.keys_values(state)
    kv_dtype = np.dtype(manifest.kv_dtype)
    fed = type(state)(video=state.video, keys=_ort_value(keys.numpy().astype(kv_dtype)),
                      values=_ort_value(values.numpy().astype(kv_dtype)))
    uv_np, t_np = uv.numpy(), t.numpy()
    decoder_alone = {k: v.copy() for k, v in backend.decode(fed, uv_np, t_np).items()}  # buffers may be reused
    end_to_end = backend.decode(state, uv_np, t_np)

    errors = {
        "encoder": {"keys": relative_error(onnx_keys, keys.numpy()),
                    "values": relative_error(onnx_values, values.numpy())},
        "decoder": {n: relative_error(decoder_alone[n], alone[MODEL_OUTPUT_NAMES[n]].numpy()) for n in DECODER_OUTPUTS},
        "end_to_end": {n: relative_error(end_to_end[n], whole[MODEL_OUTPUT_NAMES[n]].numpy()) for n in DECODER_OUTPUTS},
    }
    report = ParityReport(manifest.precision, tolerance, queries, errors, seed, GATED.get(manifest.precision))
    if record:
        manifest.parity = report.to_dict()
        write_manifest(directory, manifest)
    if raise_on_failure and not report.passed:
        raise ParityError(f"the export in {directory} does not match the eager model:\n{report.table()}")
    return report


def _ort_value(array: np.ndarray):
    import onnxruntime as ort

    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
