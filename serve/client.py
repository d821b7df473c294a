"""The client of ``d4rt serve``: the in-process runtime's surface (encode, query, depth, tracks, camera_poses, ...)
over Triton's HTTP or gRPC protocol, so code moves between the two unchanged.

    >>> from d4rt.serve import Client
    >>> rt = Client("127.0.0.1:8000")                  # or Client("127.0.0.1:8001", protocol="grpc")
    >>> scene = rt.encode(frames)                      # [T, H, W, 3] uint8 or a video path, resized here
    >>> res = rt.query(scene, uv, t_src, t_tgt, t_cam) # the same dict as d4rt.runtime's
    >>> depth, T_wc = rt.depth(scene, 0), rt.camera_poses(scene)

``Client`` is a :class:`d4rt.runtime.Runtime` whose backend is the server: ``encode`` reads and resizes the clip
here (the runtime's own code), the server encodes it and keeps its keys / values; ``query`` sends batches of
``batch_size`` queries. ``depth``, ``tracks``, ``camera_poses``, ``intrinsics``, ``point_cloud`` are the runtime's
methods, made of queries. A client holds one connection: use one per thread.

Scene affinity: ``encode`` makes a random 128-bit routing key for the scene and sends it as the header
``x-d4rt-route`` with the encode and every query of that scene, so a balancer that hashes the header (nginx in
``d4rt serve --replicas N``, an ingress) sends them all to the replica that encoded it; servers keep their own scene
ids. When the replica that answers does not hold the scene (the one that encoded it died and the balancer moved its
keys, or the scene was evicted), the client encodes the clip again there, once per call, logs it and counts it in
``Client.reencodes``; ``failover=False`` raises :class:`UnknownSceneError` instead.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

import numpy as np

from d4rt.runtime import Runtime, Scene
from d4rt.runtime.inputs import check_batch_size, check_queries
from d4rt.runtime.runtime import OUTPUT_TAILS
from d4rt.runtime.manifest import DECODER_OUTPUTS
from d4rt.serve.scene_store import UnknownSceneError

DEFAULT_BATCH = 8192
DEFAULT_TIMEOUT_S = 300.0  # one request, network and inference; nginx's proxy time-outs in front of replicas match it
MODELS = ("encode", "query")
ROUTE_HEADER = "x-d4rt-route"  # lower case: gRPC metadata keys must be; nginx reads it as $http_x_d4rt_route
LOG = logging.getLogger("d4rt.serve.client")
UNAVAILABLE_STATUSES = ("StatusCode.UNAVAILABLE", "502", "503")  # tried once more (a balancer's upstream went away)


@dataclass(eq=False)
class RemoteScene:
    """Where a served scene lives: the id the server gave it and the routing key (32 hex digits) that pins its
    requests to one replica. The id changes when the client encodes the clip again after a failover."""

    scene_id: str
    route: str

    def __str__(self) -> str:
        return self.scene_id


class ServerUnavailableError(ConnectionError):
    """The server did not answer (stopped, restarting, or not started)."""


class _RemoteBackend:
    """The server as a runtime backend: ``encode`` sends the resized clip; decoding goes through Client.query."""

    min_queries = 1

    def __init__(self, client: "Client", name: str):
        self.client, self.name, self.max_queries = client, name, None

    def encode(self, video: np.ndarray, aspect_ratio: np.ndarray, route: str | None = None) -> RemoteScene:
        """video [1, T, 3, S, S] float32 (uint8 / 255, from the runtime's prepare_clip) -> the scene on the server
        that the routing key ``route`` (default: a new random one) leads to."""
        route = route or secrets.token_hex(16)
        frames = np.rint(video[0].transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)  # exact: video = uint8 / 255
        out = self.client._infer("encode", {"frames": frames, "aspect_ratio": aspect_ratio.astype(np.float32)},
                                 ("scene_id",), route=route)
        return RemoteScene(out["scene_id"].reshape(-1)[0].decode(), route)

    def decode(self, state, uv, t):  # pragma: no cover - Client.query does not call it
        raise NotImplementedError("the server answers whole query batches: use Client.query")


class Client(Runtime):
    """A connection to ``d4rt serve`` with the runtime's methods.

    Args:
        url: "host:port" of the server's HTTP (default port 8000) or gRPC (8001) endpoint.
        protocol: "http" or "grpc".
        timeout_s: the longest one request may take (network and inference).
        ready_timeout_s: how long to wait for the server to become ready before giving up.
        failover: when the server that answers does not hold a scene, encode its clip there again (once per call,
            logged, counted in ``reencodes``) and answer; False raises :class:`UnknownSceneError`.
    """

    def __init__(self, url: str = "127.0.0.1:8000", protocol: str = "http", timeout_s: float = DEFAULT_TIMEOUT_S,
                 ready_timeout_s: float = 30.0, failover: bool = True):
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        if not timeout_s > 0 or not ready_timeout_s >= 0:
            raise ValueError(f"timeouts must be positive, got timeout_s={timeout_s!r}, ready_timeout_s={ready_timeout_s!r}")
        self.url, self.protocol, self.timeout_s = url, protocol, float(timeout_s)
        self.failover, self.reencodes = bool(failover), 0
        if protocol == "http":
            import tritonclient.http as triton_client

            self._client = triton_client.InferenceServerClient(
                url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s)
        else:
            import tritonclient.grpc as triton_client

            self._client = triton_client.InferenceServerClient(url)
        self._tc = triton_client
        self._transport_errors: tuple[type[BaseException], ...] = (OSError, EOFError)
        if protocol == "http":  # a connection closed mid-response (a killed server) is not an OSError there
            from geventhttpclient.response import HTTPParseError

            self._transport_errors += (HTTPParseError,)
        self._wait_ready(ready_timeout_s)
        meta = self._call(self._client.get_model_metadata, "encode", **({"as_json": True} if protocol == "grpc" else {}))
        frames = next(i for i in meta["inputs"] if i["name"] == "frames")
        T, S = int(frames["shape"][0]), int(frames["shape"][1])
        super().__init__(_RemoteBackend(self, f"triton-{protocol}://{url}"), T, S, manifest=None)

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, protocol={self.protocol!r}, frames={self.num_frames}, image_size={self.image_size})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # ----- transport --------------------------------------------------------------------------------------------
    def _wait_ready(self, ready_timeout_s: float) -> None:
        deadline = time.monotonic() + ready_timeout_s
        last = None
        while True:
            try:
                if self._client.is_server_ready() and all(self._client.is_model_ready(m) for m in MODELS):
                    return
            except Exception as exc:  # connection refused while the server starts
                last = exc
            if time.monotonic() >= deadline:
                raise ServerUnavailableError(
                    f"no D4RT server ready at {self.url} ({self.protocol}) after {ready_timeout_s:.0f} s"
                    f"{f' ({last})' if last else ''}; start one with `d4rt serve ENGINES`"
                )
            time.sleep(0.2)

    def _call(self, fn, *args, **kwargs):
        """A tritonclient call; Triton's own refusals (shape, dtype) -> ValueError, no answer -> ConnectionError.

        A connection closed under the request (not a time-out), and an "unavailable" answer (gRPC UNAVAILABLE, HTTP
        502 / 503), are tried once more at once: a balancer that reloads its config (nginx in front of replicas)
        closes idle keep-alive connections, and a request may just have been sent on one; and nginx cannot resend a
        gRPC request (its body is streamed, not kept) when the replica dies under it, so it answers 502 after
        marking that replica down, and the second try goes to a live one. Queries are read-only; a repeated encode
        at worst leaves an unused scene behind."""
        for attempt in (0, 1):
            try:
                return fn(*args, **kwargs)
            except self._tc.InferenceServerException as exc:
                status = str(exc.status() or "")
                message = exc.message() or str(exc)
                if status in ("400", "StatusCode.INVALID_ARGUMENT"):
                    raise ValueError(f"the server refused the request: {message}") from None
                if attempt == 0 and status in UNAVAILABLE_STATUSES:
                    LOG.debug("%s answered %s under a request (%s); trying once more", self.url, status, message)
                    continue
                raise ServerUnavailableError(
                    f"the D4RT server at {self.url} did not answer ({status or 'no status'}: {message}); if it "
                    f"stopped, restart it and encode the clip again (scenes do not survive a restart)"
                ) from None
            except self._transport_errors as exc:
                if attempt == 0 and not isinstance(exc, TimeoutError):
                    LOG.debug("connection to %s closed under a request (%s: %s); trying once more", self.url,
                              type(exc).__name__, exc)
                    continue
                raise ServerUnavailableError(
                    f"the D4RT server at {self.url} did not answer ({type(exc).__name__}: {exc}); if it stopped, "
                    f"restart it and encode the clip again (scenes do not survive a restart)"
                ) from None

    def _infer(self, model: str, inputs: dict[str, np.ndarray], outputs: tuple[str, ...],
               route: str | None = None) -> dict[str, np.ndarray]:
        from tritonclient.utils import np_to_triton_dtype

        tc = self._tc
        infer_inputs = []
        for name, array in inputs.items():
            x = tc.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            x.set_data_from_numpy(array)
            infer_inputs.append(x)
        names = (*outputs, "error")
        wanted = [tc.InferRequestedOutput(n) for n in names]
        extra = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        if route:
            extra["headers"] = {ROUTE_HEADER: route}
        result = self._call(self._client.infer, model, infer_inputs, outputs=wanted, **extra)
        kind, message = (v.decode() if isinstance(v, bytes) else str(v) for v in result.as_numpy("error").reshape(-1))
        if kind == "unknown_scene":
            raise UnknownSceneError(message)
        if kind == "bad_input":
            raise ValueError(message)
        if kind:
            raise RuntimeError(message)
        return {n: result.as_numpy(n) for n in outputs}

    # ----- the runtime surface ----------------------------------------------------------------------------------
    def _check_scene(self, scene: Scene) -> None:
        """Any client of the server may query a scene encoded there (its id travels, not its keys / values)."""
        if not isinstance(scene, Scene) or not isinstance(scene.state, RemoteScene):
            raise ValueError(
                f"scene must be a Scene from a d4rt.serve Client's encode(...), got "
                f"{type(scene).__name__}{' encoded in-process' if isinstance(scene, Scene) else ''}; encode the clip "
                f"with the client"
            )

    def query(
        self,
        scene: Scene,
        uv: np.ndarray,
        t_src: np.ndarray | int,
        t_tgt: np.ndarray | int,
        t_cam: np.ndarray | int,
        batch_size: int = DEFAULT_BATCH,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """Answer N queries on the server, ``batch_size`` per request: the same dict as ``Runtime.query``.

        uv [N, 2] float in [0, 1]; t_src, t_tgt, t_cam [N] or scalars, integer frame indices in [0, T). Checked here
        by the runtime's own checks (d4rt.runtime.inputs: the same refusal, in the same words, as in-process) before
        anything is sent; the server checks again. An evicted scene is an UnknownSceneError.
        """
        self._check_scene(scene)
        uv, t = check_queries(uv, t_src, t_tgt, t_cam, scene.num_frames)
        batch_size = check_batch_size(batch_size)
        N = len(uv)
        if N == 0:
            return {name: np.empty((0, *OUTPUT_TAILS[name]), np.float32) for name in DECODER_OUTPUTS}
        return self._query_batches(scene, uv, t, batch_size)

    def _query_batches(self, scene: Scene, uv: np.ndarray, t: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
        """uv [N, 2] float32, t [N, 3] int32 -> the outputs, ``batch_size`` queries per request, on the scene's
        route; a scene the answering server does not hold is encoded there again once (``failover``)."""
        state: RemoteScene = scene.state
        parts, reencoded = [], False
        for s in range(0, len(uv), batch_size):
            while True:
                scene_id = np.array([[state.scene_id.encode()]], dtype=object)  # [1, 1]: Triton's batch dim first
                try:
                    parts.append(self._infer("query", {"scene_id": scene_id, "uv": uv[None, s:s + batch_size],
                                                       "t": t[None, s:s + batch_size]}, DECODER_OUTPUTS, state.route))
                    break
                except UnknownSceneError:
                    if not self.failover or reencoded:
                        raise
                    self._reencode(scene)
                    reencoded = True
        return {name: np.concatenate([p[name][0] for p in parts]) for name in DECODER_OUTPUTS}

    def _reencode(self, scene: Scene) -> None:
        """Encode the scene's clip again on the server its routing key now leads to (same key, new scene id)."""
        state: RemoteScene = scene.state
        old = state.scene_id
        LOG.warning("scene %s (route %s) is not on the server that answered (its replica restarted or left, or the "
                    "scene was evicted); encoding the clip again there", old, state.route)
        state.scene_id = self.backend.encode(scene.video, np.array([scene.aspect_ratio], np.float32),
                                             route=state.route).scene_id
        self.reencodes += 1
        LOG.warning("scene %s is now %s (route %s); %d re-encodes by this client", old, state.scene_id, state.route,
                    self.reencodes)
