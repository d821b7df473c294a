"""AOTInductor backend: the encoder.pt2 / decoder.pt2 packages of ``d4rt export --aoti`` run by torch's
``aoti_load_package`` (what the C++ runtime in ``cpp/`` runs through ``AOTIModelPackageLoader``).

Imports torch (only when backend="aoti" is asked for). The manifest's ``aoti`` section is checked first: packages
compiled for another CPU (instruction set), GPU or torch version, another export, or missing / altered files are
refused in one line.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from d4rt.runtime.manifest import (
    AOTI_HINT,
    DECODER_OUTPUTS,
    EXPORT_ID_KEY,
    Manifest,
    aoti_files,
    check_aoti_compat,
    check_export_ids,
    check_files,
    cpu_flags,
)

PRECISION_OF_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "fp32": "fp32", "bf16": "bf16"}


@dataclass
class AotiSceneState:
    video: Any  # torch.Tensor [1, T, 3, S, S] float32
    keys: Any  # [L, 1, H, M, Dh] (float32 or bfloat16)
    values: Any


class AotiBackend:
    """Both packages of one precision ("fp32" | "bf16") of an export folder, on the CPU or the GPU they were
    compiled for."""

    def __init__(self, directory: str | Path, manifest: Manifest, precision: str = "fp32",
                 threads: int | None = None, verify_checksums: bool = True):
        import torch

        self._torch = torch
        directory = Path(directory)
        aoti = manifest.aoti
        capability = None
        if aoti and aoti.get("device") == "cuda" and torch.cuda.is_available():
            capability = "{}.{}".format(*torch.cuda.get_device_capability())
        check_aoti_compat(aoti, precision, platform.machine(), cpu_flags(), torch.__version__, capability)
        files = aoti_files(manifest, directory, precision)
        check_files(list(files.values()), f"AOTInductor ({precision})", AOTI_HINT, verify_checksums)
        if threads:
            torch.set_num_threads(int(threads))
        self.device = "cuda" if aoti["device"] == "cuda" else "cpu"
        self.precision = precision
        self.max_queries = int(aoti.get("max_queries") or 0) or None
        self.name = f"aoti-{precision}"
        self.models = {}
        found = {}
        for graph, (path, _) in files.items():
            model = torch._inductor.aoti_load_package(str(path))
            found[graph] = model.get_metadata().get(EXPORT_ID_KEY)
            self.models[graph] = model
        check_export_ids(manifest, found, f"the AOTInductor packages in {directory}")

    def encode(self, video: np.ndarray, aspect_ratio: np.ndarray) -> AotiSceneState:
        torch = self._torch
        with torch.inference_mode():
            v = torch.from_numpy(video).to(self.device)
            keys, values = self.models["encoder"](v, torch.from_numpy(aspect_ratio).to(self.device))
        return AotiSceneState(video=v, keys=keys, values=values)

    def decode(self, state: AotiSceneState, uv: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self.models["decoder"](state.video, state.keys, state.values,
                                         torch.from_numpy(uv).to(self.device), torch.from_numpy(t).to(self.device))
        return {name: o.float().cpu().numpy() for name, o in zip(DECODER_OUTPUTS, out)}

    def keys_values(self, state: AotiSceneState) -> tuple[np.ndarray, np.ndarray]:
        return state.keys.float().cpu().numpy(), state.values.float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device == "cuda":
            self._torch.cuda.synchronize()
