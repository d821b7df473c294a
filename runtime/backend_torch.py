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
    | "eager" | "triton", ``dtype`` "float32" | "bfloat16" | "float16"); the constructor wraps a model in memory
    (the evaluation runs a model being trained this way)."""

    max_queries = None

    def __init__(self, model, name: str = "torch"):
        import torch

        self._torch = torch
        self.model = model
        param = next(model.parameters())
        self.device = str(param.device)
        self.name = name

    @classmethod
    def open(
        cls,
        directory: str | Path,
        manifest: Manifest | None,
        device: str | None = None,
        attention: str = "sdpa",
        dtype: str = "float32",
    ) -> "TorchBackend":
        import torch

        from d4rt.checkpoint import load_pretrained
        from d4rt.config import D4RTConfig

        directory = Path(directory)
        ckpt = checkpoint_dir_of(directory, manifest)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
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
        return cls(model, name)

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
            out = self.model.decode_kv(state.keys, state.values, state.video, uv_t, t_src, t_tgt, t_cam)
            return {name: out[MODEL_OUTPUT_NAMES[name]].float().cpu().numpy() for name in DECODER_OUTPUTS}

    def keys_values(self, state: TorchSceneState) -> tuple[np.ndarray, np.ndarray]:
        return state.keys.float().cpu().numpy(), state.values.float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self._torch.cuda.synchronize()
