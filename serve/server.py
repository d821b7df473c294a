"""D4RT on Triton Inference Server (through PyTriton): an ``encode`` model and a ``query`` model over one runtime.

    encode  in:  frames [T, S, S, 3] uint8 (the clip resized to the engines' S x S), aspect_ratio [1] float32 (W/H)
            out: scene_id [1] bytes, error [2] bytes (kind, message; both empty when it worked)
    query   in:  scene_id [1, 1] bytes, uv [1, N, 2] float32 in [0, 1], t [1, N, 3] int32 (t_src, t_tgt, t_cam)
            out: xyz [1, N, 3], uv_tgt [1, N, 2], visibility [1, N], displacement [1, N, 3], normal [1, N, 3],
                 confidence [1, N] (float32, probabilities as ``Runtime.query``'s), error [1, 2] bytes
            (the leading 1 is Triton's batch dimension: its dynamic batcher merges requests of equal N)

Shapes and dtypes are checked by Triton itself (a 400 with its message). Values (NaN, ranges, too many queries,
an unknown scene) are checked here and answered per request in ``error``, never by raising: PyTriton turns an
exception into a 500 for every request of the call. Every refused request is logged with its reason.
Inference is ``d4rt.runtime`` (``Runtime.encode`` / ``Runtime.query``); nothing here imports torch.
"""

from __future__ import annotations

import logging
import os
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from d4rt.runtime import Runtime, load
from d4rt.runtime.inputs import check_queries
from d4rt.runtime.manifest import DECODER_OUTPUTS
from d4rt.runtime.runtime import OUTPUT_TAILS
from d4rt.serve.scene_store import SceneStore, UnknownSceneError, scene_nbytes

LOG = logging.getLogger("d4rt.serve")
NO_ERROR = np.array([b"", b""], dtype=object)


@dataclass
class ServeSettings:
    """Limits of one server. Sizes in bytes, times in seconds."""

    max_scene_bytes: int = 4 * 2**30  # the scene store (LRU); a g-model scene is ~250 MB in fp16
    max_queries: int = 262_144  # per request
    decoder_batch: int = 8192  # queries per decoder call inside a merged batch (Runtime.query batch_size)
    max_delay_s: float = 0.002  # Triton's queue delay: how long a query request waits for others to merge with
    max_merged_requests: int = 64  # Triton's max_batch_size of the query model: requests merged into one call

    def __post_init__(self):
        for name in ("max_scene_bytes", "max_queries", "decoder_batch", "max_merged_requests"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (0.0 <= self.max_delay_s <= 1.0):
            raise ValueError(f"max_delay_s must be in [0, 1] seconds, got {self.max_delay_s!r}")


def _error(kind: str, message: str) -> np.ndarray:
    return np.array([kind.encode(), message.encode()], dtype=object)


def _text(value: np.ndarray) -> str:
    item = np.asarray(value).reshape(-1)[0]
    return item.decode("utf-8", "replace") if isinstance(item, (bytes, np.bytes_)) else str(item)


def check_query_values(uv: np.ndarray, t: np.ndarray, num_frames: int, max_queries: int) -> str | None:
    """uv [N, 2] float32, t [N, 3] int32 -> None, or the sentence saying what is wrong and what to do."""
    n = len(uv)
    if len(t) != n:
        return f"uv has {n} rows but t has {len(t)}; send one (t_src, t_tgt, t_cam) row per uv row"
    if n > max_queries:
        return (f"{n} queries in one request; this server takes at most {max_queries}: split them "
                f"(Client.query(..., batch_size=...) does) or start the server with a larger --max-queries")
    if n == 0:
        return "the request has no queries; send at least one (uv [1, N, 2] with N >= 1)"
    try:  # the runtime's own checks and words (d4rt.runtime.inputs), as the client's before it sent them
        check_queries(uv, t[:, 0], t[:, 1], t[:, 2], num_frames)
    except ValueError as exc:
        return str(exc)
    return None


class D4RTService:
    """The two models' inference callables over one runtime and one scene store.

    Triton's dynamic batcher hands ``query`` every request that arrived within the queue delay (same query count,
    any scene); they are grouped by scene and each group is answered by one ``Runtime.query`` call (one decoder
    batch, split into ``decoder_batch`` chunks by the runtime), then split back per request.
    """

    def __init__(self, runtime: Runtime, settings: ServeSettings | None = None):
        self.runtime = runtime
        self.settings = settings or ServeSettings()
        self.store = SceneStore(self.settings.max_scene_bytes)
        self._runtime_lock = threading.Lock()  # encode and query run on Triton's threads; the runtime is not shared
        self.merged_calls = self.merged_requests = self.most_merged = 0

    # ----- encode -----------------------------------------------------------------------------------------------
    def encode_one(self, frames: np.ndarray, aspect_ratio: np.ndarray) -> dict[str, np.ndarray]:
        ar = float(np.asarray(aspect_ratio).reshape(-1)[0])
        if not np.isfinite(ar) or not (0.01 <= ar <= 100.0):
            return self._refuse("encode", "bad_input", f"aspect_ratio must be the original width / height, a finite "
                                f"number in [0.01, 100], got {ar!r}")
        try:
            with self._runtime_lock:
                scene = self.runtime.encode(frames, aspect_ratio=ar)
            scene_id = self.store.put(scene, scene_nbytes(self.runtime, scene))
        except ValueError as exc:
            return self._refuse("encode", "bad_input", str(exc))
        LOG.info("encoded scene %s (%d scenes, %.1f MiB in the store, %d evicted so far)", scene_id, len(self.store),
                 self.store.nbytes / 2**20, self.store.evictions)
        return {"scene_id": np.array([scene_id.encode()], dtype=object), "error": NO_ERROR}

    def encode(self, requests: list) -> list[dict[str, np.ndarray]]:
        """PyTriton inference callable of the ``encode`` model (no batching: one clip per request)."""
        return [self._guard("encode", lambda r=r: self.encode_one(r["frames"], r["aspect_ratio"])) for r in requests]

    # ----- query ------------------------------------------------------------------------------------------------
    def query(self, requests: list) -> list[dict[str, np.ndarray]]:
        """PyTriton inference callable of the ``query`` model: requests [1, N_i, ...] -> one answer each."""
        answers: list[dict[str, np.ndarray] | None] = [None] * len(requests)
        groups: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        scenes = {}
        for i, r in enumerate(requests):
            scene_id = _text(r["scene_id"])
            if r["uv"].shape[0] != 1 or r["t"].shape[0] != 1 or r["scene_id"].shape[0] != 1:
                answers[i] = self._refuse("query", "bad_input", "send one query batch per request: scene_id [1, 1], "
                                          "uv [1, N, 2], t [1, N, 3]", scene_id)
                continue
            uv, t = r["uv"][0], r["t"][0]
            problem = check_query_values(uv, t, self.runtime.num_frames, self.settings.max_queries)
            if problem:
                answers[i] = self._refuse("query", "bad_input", problem, scene_id)
                continue
            try:
                scenes[scene_id] = self.store.get(scene_id)
            except UnknownSceneError as exc:
                answers[i] = self._refuse("query", "unknown_scene", str(exc), scene_id)
                continue
            groups.setdefault(scene_id, []).append((i, uv, t))
        for scene_id, members in groups.items():
            try:
                uv = np.concatenate([m[1] for m in members])
                t = np.concatenate([m[2] for m in members])
                with self._runtime_lock:
                    out = self.runtime.query(scenes[scene_id], uv, t[:, 0], t[:, 1], t[:, 2],
                                             batch_size=self.settings.decoder_batch)
            except Exception as exc:  # a runtime failure: every request of the group hears of it
                LOG.exception("query on scene %s failed", scene_id)
                for i, _, _ in members:
                    answers[i] = self._refuse("query", "internal", f"the server failed on this request "
                                              f"({type(exc).__name__}: {exc}); see the server log", scene_id)
                continue
            self.merged_calls += 1
            self.merged_requests += len(members)
            self.most_merged = max(self.most_merged, len(members))
            start = 0
            for i, uv_i, _ in members:
                end = start + len(uv_i)
                answers[i] = {**{k: v[None, start:end] for k, v in out.items()}, "error": NO_ERROR[None]}
                start = end
        return answers

    # ----- errors -----------------------------------------------------------------------------------------------
    def _placeholder_outputs(self) -> dict[str, np.ndarray]:
        """One NaN row per output beside an error (PyTriton cannot send empty tensors)."""
        return {name: np.full((1, 1, *OUTPUT_TAILS[name]), np.nan, np.float32) for name in DECODER_OUTPUTS}

    def _refuse(self, model: str, kind: str, message: str, scene_id: str = "") -> dict[str, np.ndarray]:
        LOG.warning("refused %s request%s (%s): %s", model, f" on scene {scene_id}" if scene_id else "", kind, message)
        if model == "encode":
            return {"scene_id": np.array([b""], dtype=object), "error": _error(kind, message)}
        return {**self._placeholder_outputs(), "error": _error(kind, message)[None]}

    def _guard(self, model: str, fn) -> dict[str, np.ndarray]:
        try:
            return fn()
        except Exception as exc:  # never let one request's failure fail the others, nor the server
            LOG.exception("%s request failed", model)
            return self._refuse(model, "internal", f"the server failed on this request ({type(exc).__name__}: "
                                f"{exc}); see the server log")

    def close(self) -> None:
        LOG.info("query: %d requests answered in %d decoder calls (at most %d requests merged)",
                 self.merged_requests, self.merged_calls, self.most_merged)


# ----- Triton ----------------------------------------------------------------------------------------------------
def bind_models(triton, service: D4RTService) -> None:
    """Bind ``encode`` (one clip per request) and ``query`` (Triton's dynamic batcher) to a PyTriton ``Triton``."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    rt, settings = service.runtime, service.settings
    T, S = rt.num_frames, rt.image_size
    error = Tensor(name="error", dtype=bytes, shape=(2,))
    triton.bind(
        model_name="encode",
        infer_func=service.encode,
        inputs=[Tensor(name="frames", dtype=np.uint8, shape=(T, S, S, 3)),
                Tensor(name="aspect_ratio", dtype=np.float32, shape=(1,))],
        outputs=[Tensor(name="scene_id", dtype=bytes, shape=(1,)), error],
        config=ModelConfig(batching=False),
        strict=True,
    )
    triton.bind(
        model_name="query",
        infer_func=service.query,
        inputs=[Tensor(name="scene_id", dtype=bytes, shape=(1,)),
                Tensor(name="uv", dtype=np.float32, shape=(-1, 2)),
                Tensor(name="t", dtype=np.int32, shape=(-1, 3))],
        outputs=[Tensor(name=name, dtype=np.float32, shape=(-1, *OUTPUT_TAILS[name])) for name in DECODER_OUTPUTS]
        + [error],
        config=ModelConfig(
            batching=True, max_batch_size=settings.max_merged_requests,
            batcher=DynamicBatcher(max_queue_delay_microseconds=int(settings.max_delay_s * 1e6)),
        ),
        strict=True,
    )


def stub_library_path() -> None:
    """Let Triton's Python-backend stub load this interpreter's own libpython.

    The stub (``triton_python_backend_stub``, shipped in the PyTriton wheel) links ``libpython3.X.so.1.0`` and finds
    it on the system path: on a machine whose Python is another build of the same minor version (pyenv's 3.11.7
    beside Debian's 3.11.2) it loads the system's library with this interpreter's standard library and fails at
    start (``'_thread.RLock' object has no attribute '_recursion_count'``). Putting this interpreter's LIBDIR first
    on LD_LIBRARY_PATH (inherited by tritonserver and the stub only; this process is already running) fixes it.
    """
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        LOG.warning("this Python is not a shared-library build; Triton's Python stub will use the system libpython")
        return
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir and libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


def serve(
    engines: str | Path,
    *,
    host: str = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    backend: str = "onnxruntime-cpu",
    threads: int | None = None,
    settings: ServeSettings | None = None,
    verbose: bool = False,
    exit_timeout_s: int = 5,
) -> None:
    """Load ``engines`` on ``backend`` and serve them until SIGINT / SIGTERM (blocks)."""
    from pytriton.triton import Triton, TritonConfig

    runtime = load(engines, backend=backend, threads=threads)
    service = D4RTService(runtime, settings)
    stub_library_path()
    config = TritonConfig(
        http_address=host, http_port=http_port, grpc_address=host, grpc_port=grpc_port,
        metrics_address=host, metrics_port=metrics_port, allow_gpu_metrics=False, log_verbose=1 if verbose else 0,
        exit_timeout_secs=exit_timeout_s,  # at shutdown, wait at most this long for clients' open connections
    )
    LOG.info("serving %s (%s, %d frames at %d px) on http://%s:%d, grpc %s:%d, metrics http://%s:%d/metrics",
             engines, runtime.name, runtime.num_frames, runtime.image_size, host, http_port, host, grpc_port, host,
             metrics_port)
    try:
        with Triton(config=config) as triton:
            bind_models(triton, service)
            triton.serve()
    finally:
        service.close()
