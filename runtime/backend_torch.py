"""torch backend: the PyTorch model (sdpa attention by default), for baselines and machines without any engine.

The one place in the runtime that imports torch and the model; it is imported only when backend="torch" is asked
for, so the rest of the runtime installs and runs without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from d4rt.runtime.manifest import DECODER_OUTPUTS, MODEL_OUTPUT_NAMES, Manifest


@dataclass
class TorchSceneState:
    video: Any  # torch.Tensor [1, T, 3, S, S] on the model's device
    keys: Any  # [L, 1, H, M, Dh]
    values: Any


def checkpoint_dir_of(directory: Path, manifest: Manifest | None) -> Path:
    """The checkpoint behind an export folder: the directory itself when it holds config.json, else the one
    the manifest records (relative to the export folder)."""
    if (directory / "config.json").is_file():
        return directory
    if manifest is None or not manifest.checkpoint.get("path"):
        raise FileNotFoundError(
            f"the torch backend needs a checkpoint: {directory} holds no config.json and its manifest names none; "
            f"pass a save_pretrained directory instead"
        )
    path = (directory / manifest.checkpoint["path"]).resolve()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the manifest in {directory} names the checkpoint {path}, which does not exist here; copy it beside the "
            f"engines or pass the checkpoint directory to load(..., backend='torch')"
        )
    return path


class TorchBackend:
    """An eager model as a runtime backend. :meth:`open` loads one from a checkpoint (``attention`` "sdpa" (default)
    | "eager" | "triton", ``precision`` "fp32" | "bf16" | "fp16" | "auto", the decoder optionally under torch.compile); the
    constructor wraps a model in memory (the evaluation runs a model being trained this way).

    With ``compile_decoder`` the decoder (``model.decode_kv``) runs under ``torch.compile`` (inductor); if the
    compilation fails (no C++ compiler, an unsupported op), it warns once and runs eagerly from then on.
    """

    max_queries = None

    def __init__(self, model, name: str = "torch", compile_decoder: bool = False):
        import torch

        self._torch = torch
        self.model = model
        param = next(model.parameters())
        self.device = str(param.device)
        self.precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(param.dtype, "?")
        self.name = name
        self.compiled = False  # True once a compiled decode has run
        self._decode_kv = torch.compile(model.decode_kv, dynamic=True) if compile_decoder else model.decode_kv
        self._compiling = bool(compile_decoder)  # until a compilation fails (then eager for good)

    @classmethod
    def open(
        cls,
        directory: str | Path,
        manifest: Manifest | None,
        device: str | None = None,
        attention: str = "sdpa",
        precision: str = "fp32",
        compile_decoder: bool = False,
    ) -> "TorchBackend":
        """``compile_decoder``: the decoder under torch.compile (1.24x the eager bf16 decode on base, CPU with AMX,
        measured; the compilation costs about a minute once per process, so it pays for long jobs only)."""
        import torch

        from d4rt.checkpoint import load_pretrained
        from d4rt.config import D4RTConfig
        from d4rt.runtime.precision import torch_dtype_name

        from d4rt.runtime.precision import default_precision

        directory = Path(directory)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if precision == "auto":  # bf16 on a CPU with AMX, else fp32 (docs/precision.md)
            precision = default_precision(cuda=device.startswith("cuda"))
        dtype = torch_dtype_name(precision)
        ckpt = checkpoint_dir_of(directory, manifest)
        if precision == "fp16" and not device.startswith("cuda"):
            raise ValueError(
                "precision 'fp16' on the torch backend needs a CUDA GPU (CPU float16 matmuls are slower than fp32); "
                "use precision='bf16' on a CPU with AMX, or 'fp32'"
            )
        model = load_pretrained(ckpt, attention=attention).to(device, getattr(torch, dtype)).eval()
        if manifest is not None:
            mine, theirs = model.config.to_dict(), D4RTConfig.from_dict(manifest.config).to_dict()
            diff = sorted(k for k in theirs if mine.get(k) != theirs[k])
            if diff:
                raise ValueError(
                    f"the checkpoint {ckpt} has another config than the engines in {directory} (fields {diff}); "
                    f"re-export the engines from this checkpoint with `d4rt export {ckpt} --out {directory}`"
                )
        name = f"torch-{attention}-{dtype}" if (attention, dtype) != ("sdpa", "float32") else "torch"
        return cls(model, name + ("-compiled" if compile_decoder else ""), compile_decoder)

    def encode(self, video: np.ndarray, aspect_ratio: np.ndarray) -> TorchSceneState:
        torch = self._torch
        with torch.inference_mode():
            v = torch.from_numpy(video).to(self.device)
            memory = self.model.encode(v, torch.from_numpy(aspect_ratio).to(self.device))
            keys, values = self.model.memory_kv(memory)
        return TorchSceneState(video=v, keys=keys, values=values)

    def decode(self, state: TorchSceneState, uv: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            uv_t = torch.from_numpy(uv).to(self.device)
            t_t = torch.from_numpy(t).to(self.device).long()
            t_src, t_tgt, t_cam = t_t.unbind(-1)
            out = self._run_decoder(state.keys, state.values, state.video, uv_t, t_src, t_tgt, t_cam)
            return {name: out[MODEL_OUTPUT_NAMES[name]].float().cpu().numpy() for name in DECODER_OUTPUTS}

    def _run_decoder(self, *args):
        """model.decode_kv, compiled when asked; a failed compilation warns once and falls back to eager."""
        if not self._compiling:
            return self._decode_kv(*args)
        try:  # (a new batch size may compile again: every call is guarded)
            out = self._decode_kv(*args)
        except Exception as e:  # noqa: BLE001 - inductor raises many types (BackendCompilerFailed, CalledProcessError)
            import warnings

            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            warnings.warn(
                f"torch.compile of the decoder failed ({type(e).__name__}: {first[:200]}); the decoder runs eagerly "
                f"(same numbers, slower). Pass compile_decoder=False to skip the attempt", RuntimeWarning,
                stacklevel=4,
            )
            self._decode_kv, self._compiling, self.compiled = self.model.decode_kv, False, False
            self.name = self.name.removesuffix("-compiled")
            return self._decode_kv(*args)
        self.compiled = True
        return out

    def keys_values(self, state: TorchSceneState) -> tuple[np.ndarray, np.ndarray]:
        return state.keys.float().cpu().numpy(), state.values.float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self._torch.cuda.synchronize()
