"""An export's graphs run by ONNX Runtime directly, with no d4rt.runtime code: the independent reference for tests
of what `d4rt infer` and the runtime compute. Inputs are built here by hand (frames resized with OpenCV's area
filter, / 255, [1, T, 3, S, S]; uv and t packed as the graphs take them); visibility and confidence are the raw
logits, turned into probabilities in float64."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class OnnxReference:
    def __init__(self, export_dir: str | Path):
        import onnxruntime as ort

        options = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(Path(export_dir) / "encoder.onnx"), providers=options)
        self.decoder = ort.InferenceSession(str(Path(export_dir) / "decoder.onnx"), providers=options)
        self.size = int(self.encoder.get_inputs()[0].shape[-1])

    def encode(self, frames: np.ndarray, aspect_ratio: float) -> None:
        """frames [T, H, W, 3] uint8 -> this reference's clip (one at a time)."""
        S = self.size
        resized = np.stack([cv2.resize(f, (S, S), interpolation=cv2.INTER_AREA) for f in frames])
        self.video = np.ascontiguousarray((resized.astype(np.float32) / 255.0).transpose(0, 3, 1, 2)[None])
        self.keys, self.values = self.encoder.run(
            None, {"video": self.video, "aspect_ratio": np.array([aspect_ratio], np.float32)})

    def query(self, uv: np.ndarray, t_src, t_tgt, t_cam) -> dict[str, np.ndarray]:
        """uv [N, 2]; t_* [N] (or scalars) frame indices of the clip -> the six outputs [N, ...] (probabilities
        for visibility and confidence, float64)."""
        N = len(uv)
        t = np.stack([np.broadcast_to(np.asarray(x), (N,)) for x in (t_src, t_tgt, t_cam)], -1).astype(np.int32)
        names = [o.name for o in self.decoder.get_outputs()]
        raw = self.decoder.run(None, {"video": self.video, "keys": self.keys, "values": self.values,
                                      "uv": np.asarray(uv, np.float32)[None], "t": t[None]})
        out = {name: a[0] for name, a in zip(names, raw)}
        for name in ("visibility", "confidence"):
            out[name] = 1.0 / (1.0 + np.exp(-out[name].astype(np.float64)))
        return out


def grid(n: int) -> np.ndarray:
    """n x n pixels corner to corner, row-major (v outer, u inner) -> uv [n * n, 2]: the grid d4rt's depth maps,
    clouds and track grids use, written out here."""
    g = np.linspace(0.0, 1.0, n)
    u, v = np.meshgrid(g, g, indexing="xy")
    return np.stack([u.ravel(), v.ravel()], -1)
