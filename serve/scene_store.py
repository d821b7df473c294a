"""Encoded scenes kept by the server between a client's encode and its queries: an LRU store bounded in bytes.

A scene id is 32 random hex digits (``uuid4``), never reused, so a client can only reach a scene whose id it was
given. An evicted or unknown id is an :class:`UnknownSceneError` that tells the client to encode again.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict

import numpy as np

from d4rt.runtime import Runtime, Scene


class UnknownSceneError(KeyError):
    """The scene id is not (or no longer) on this server: the client should encode the clip again."""

    def __str__(self) -> str:  # KeyError would quote the whole sentence
        return str(self.args[0])


def scene_nbytes(runtime: Runtime, scene: Scene) -> int:
    """Bytes one scene holds: its frames and video on the host, the video again and the keys / values on the device.

    The keys / values size comes from the engine manifest's encoder outputs ([L, 1, H, M, Dh] each), so it is the
    same on every backend; without a manifest (the torch backend on a checkpoint) from the state's arrays.
    """
    host = scene.frames.nbytes + scene.video.nbytes
    manifest = runtime.manifest
    if manifest is not None:
        # symbolic dims of a dynamic-frame export: "T" and "M" are this clip's frames and memory tokens
        dims = {"T": scene.num_frames, "M": manifest.memory_tokens_for(scene.num_frames)}
        kv = sum(
            int(np.prod([dims[d] if isinstance(d, str) else int(d) for d in spec.shape])) * np.dtype(spec.dtype).itemsize
            for spec in manifest.tensors("encoder", "outputs")
        )
        return int(host + scene.video.nbytes + kv)
    device = 0
    for value in vars(scene.state).values() if hasattr(scene.state, "__dict__") else ():
        n = getattr(value, "nbytes", None)
        device += int(n() if callable(n) else n or 0)
    return int(host + device)


class SceneStore:
    """Scenes by id, least recently used evicted first so that the total stays <= ``max_bytes``. Thread-safe."""

    def __init__(self, max_bytes: int):
        if not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}")
        self.max_bytes = int(max_bytes)
        self._scenes: OrderedDict[str, tuple[Scene, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.evictions = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the scenes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._scenes)

    def put(self, scene: Scene, nbytes: int) -> str:
        """Keep ``scene`` (``nbytes`` bytes), evicting the least recently used ones; returns its new id."""
        if nbytes > self.max_bytes:
            raise ValueError(
                f"one scene needs {nbytes / 2**20:.1f} MiB but the scene store holds at most "
                f"{self.max_bytes / 2**20:.1f} MiB; start the server with a larger --max-scene-bytes"
            )
        scene_id = uuid.uuid4().hex
        with self._lock:
            while self._scenes and self._bytes + nbytes > self.max_bytes:
                _, (_, freed) = self._scenes.popitem(last=False)
                self._bytes -= freed
                self.evictions += 1
            self._scenes[scene_id] = (scene, int(nbytes))
            self._bytes += int(nbytes)
        return scene_id

    def get(self, scene_id: str) -> Scene:
        """The scene of ``scene_id`` (now the most recently used), or :class:`UnknownSceneError`."""
        with self._lock:
            entry = self._scenes.get(scene_id)
            if entry is None:
                raise UnknownSceneError(
                    f"scene {scene_id!r} is not on this server: it was evicted (the server keeps "
                    f"{self.max_bytes / 2**20:.0f} MiB of scenes, least recently used first), the server restarted, "
                    f"or it was never encoded here; encode the clip again and query the new scene"
                )
            self._scenes.move_to_end(scene_id)
            return entry[0]
