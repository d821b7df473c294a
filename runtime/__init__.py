"""d4rt.runtime: the thin runtime. Engines in, numpy out; no torch (design.md).

    >>> from d4rt.runtime import load
    >>> rt = load("engines/")              # tensorrt > onnxruntime-cuda > onnxruntime-cpu, or name one
    >>> scene = rt.encode("clip.mp4")      # or frames [T, H, W, 3] uint8 of any size
    >>> res = rt.query(scene, uv, t_src, t_tgt, t_cam, batch_size=8192)

Engine libraries (onnxruntime, tensorrt, cv2) are imported only when a backend or a video needs them.
"""

from d4rt.runtime.runtime import BACKENDS, Runtime, Scene, load

__all__ = ["BACKENDS", "Runtime", "Scene", "load"]
