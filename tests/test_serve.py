"""d4rt serve: the real server (Triton through PyTriton) on free loopback ports, against the in-process runtime.

One server for the module (tiny engines from tests/exported.py, a scene store that holds two scenes, at most 5000
queries a request) and one restart. Every wait is bounded: clients time out, the server is stopped with SIGINT and
killed if it does not exit.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from d4rt.runtime import load
from d4rt.serve import Client, ServerUnavailableError, UnknownSceneError
from d4rt.serve.process import ServerProcess
from d4rt.serve.scene_store import scene_nbytes
from tests.exported import exported

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample_clip.mp4"
CLIP = dict(stride=4, max_frames=4)  # the sample clip's 16 frames -> the 4 the test engines take
MAX_QUERIES = 5000


@pytest.fixture(scope="module")
def engines():
    return exported("tiny", 4)[1]


@pytest.fixture(scope="module")
def local(engines):
    return load(engines, backend="onnxruntime-cpu", threads=1)


@pytest.fixture(scope="module")
def server(engines, local, tmp_path_factory):
    one_scene = scene_nbytes(local, local.encode(str(SAMPLE), **CLIP))
    args = ["--max-scene-bytes", str(int(2.5 * one_scene)), "--max-queries", str(MAX_QUERIES), "--threads", "1"]
    srv = ServerProcess(engines, tmp_path_factory.mktemp("serve") / "server.log", args)  # two scenes fit
    srv.start()
    yield srv
    srv.stop()


def random_queries(rng, n, T):
    return rng.random((n, 2), dtype=np.float32), *rng.integers(0, T, (3, n))


def assert_same(served: dict, local: dict) -> None:
    assert served.keys() == local.keys()
    for k in local:
        assert served[k].shape == local[k].shape and served[k].dtype == np.float32, k
        # the same ONNX Runtime session math on the same inputs; only float round-off may differ
        np.testing.assert_allclose(served[k], local[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_served_queries_equal_the_in_process_runtime(server, local):
    rng = np.random.default_rng(np.random.randint(2**31))
    with server.client("http") as http, server.client("grpc") as grpc:
        assert (http.num_frames, http.image_size) == (local.num_frames, local.image_size)
        scene, ref = http.encode(str(SAMPLE), **CLIP), local.encode(str(SAMPLE), **CLIP)
        assert scene.aspect_ratio == pytest.approx(ref.aspect_ratio) and np.array_equal(scene.frames, ref.frames)
        q = random_queries(rng, 3000, local.num_frames)
        expected = local.query(ref, *q)
        assert_same(http.query(scene, *q, batch_size=1024), expected)  # 3 requests, the last one ragged
        assert_same(grpc.query(scene, *q), expected)  # a scene encoded over HTTP, queried over gRPC
        np.testing.assert_allclose(http.depth(scene, 1, size=32), local.depth(ref, 1, size=32), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(http.camera_poses(scene, size=8), local.camera_poses(ref, size=8), atol=1e-4)
        uv = rng.random((5, 2))
        a, b = http.tracks(scene, uv, 2), local.tracks(ref, uv, 2)
        np.testing.assert_allclose(a["xyz"], b["xyz"], rtol=1e-5, atol=1e-5)


def test_concurrent_clients_get_their_own_answers(server, local):
    rng = np.random.default_rng(np.random.randint(2**31))
    frames = [rng.integers(0, 256, (4, 90, 120, 3), dtype=np.uint8) for _ in range(2)]
    with server.client() as c:
        scenes = [c.encode(f) for f in frames]
    refs = [local.encode(f) for f in frames]
    jobs = [(i % 2, random_queries(rng, 512, local.num_frames)) for i in range(12)]  # equal N: Triton may merge

    def work(job):
        k, q = job
        with server.client() as c:
            return c.query(scenes[k], *q)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(work, jobs, timeout=120))
    for (k, q), served in zip(jobs, answers):
        assert_same(served, local.query(refs[k], *q))


def _raw_query(client: Client, scene_id: str, uv: np.ndarray, t: np.ndarray):
    return client._infer("query", {"scene_id": np.array([[scene_id.encode()]], dtype=object), "uv": uv[None],
                                   "t": t[None]}, ("xyz",))


def test_bad_inputs_are_refused_and_the_server_keeps_serving(server, local):
    rng = np.random.default_rng(np.random.randint(2**31))
    with server.client() as c:
        scene = c.encode(rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
        uv, t = rng.random((100, 2), dtype=np.float32), rng.integers(0, 4, (100, 3)).astype(np.int32)
        bad_uv = uv.copy()
        bad_uv[3, 1] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            _raw_query(c, scene.state.scene_id, bad_uv, t)
        with pytest.raises(ValueError) as in_process:
            local.query(local.encode(str(SAMPLE), **CLIP), bad_uv, *t.T)
        sent = c._infer
        c._infer = lambda *a, **k: pytest.fail("a NaN uv reached the server: the client must refuse it first")
        with pytest.raises(ValueError) as client_side:
            c.query(scene, bad_uv, *t.T)
        c._infer = sent
        assert str(client_side.value) == str(in_process.value) == "uv contains 1 NaN or infinite values"
        with pytest.raises(ValueError, match=r"expected \[0, 1\]"):
            _raw_query(c, scene.state.scene_id, uv + 1.0, t)
        with pytest.raises(ValueError, match=r"t_tgt has frame indices .* expected \[0, 4\)"):
            _raw_query(c, scene.state.scene_id, uv, t + np.array([0, 4, 0], np.int32))
        with pytest.raises(ValueError, match=f"at most {MAX_QUERIES}"):
            c.query(scene, rng.random((MAX_QUERIES + 1, 2)), 0, 0, 0, batch_size=MAX_QUERIES + 1)
        with pytest.raises(ValueError, match="FP64"):  # Triton's own dtype check: a 400
            c._infer("query", {"scene_id": np.array([[scene.state.scene_id.encode()]], dtype=object),
                               "uv": uv[None].astype(np.float64), "t": t[None]}, ("xyz",))
        with pytest.raises(ValueError, match="frames"):  # a clip of the wrong length: Triton's shape check
            c._infer("encode", {"frames": np.zeros((5, 128, 128, 3), np.uint8),
                                "aspect_ratio": np.ones(1, np.float32)}, ("scene_id",))
        with pytest.raises(ValueError, match="aspect_ratio"):
            c._infer("encode", {"frames": np.zeros((4, 128, 128, 3), np.uint8),
                                "aspect_ratio": np.full(1, np.inf, np.float32)}, ("scene_id",))
        with pytest.raises(ValueError, match="frames"):  # checked before sending, as in-process
            c.encode(np.zeros((9, 32, 32, 3), np.uint8))
        assert np.isfinite(c.query(scene, uv, *t.T)["xyz"]).all()  # still serving
    log = server.log.read_text()
    assert "refused query request" in log and "NaN" in log and "refused encode request" in log


def test_evicted_scene_is_a_clear_error_and_reencoding_works(server, local):
    rng = np.random.default_rng(np.random.randint(2**31))
    uv = rng.random((50, 2))
    with server.client(failover=False) as c:
        first, second, third = (c.encode(rng.integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)) for _ in range(3))
        with pytest.raises(UnknownSceneError, match="encode the clip again"):
            c.query(first, uv, 0, 1, 2)
        for scene in (second, third):  # the two most recent fit
            assert np.isfinite(c.query(scene, uv, 0, 1, 2)["xyz"]).all()
        again = c.encode(first.frames)
        assert again.state.scene_id != first.state.scene_id
        ref = local.encode(first.frames)
        assert_same(c.query(again, uv, 0, 1, 2), local.query(ref, uv, 0, 1, 2))
        assert c.reencodes == 0
    with server.client() as c:  # failover (the default): the evicted scene is encoded again, once, transparently
        old_id = second.state.scene_id  # evicted by `again` above
        assert_same(c.query(second, uv, 0, 1, 2), local.query(local.encode(second.frames), uv, 0, 1, 2))
        assert c.reencodes == 1 and second.state.scene_id != old_id
        c.query(second, uv, 0, 1, 2)
        assert c.reencodes == 1  # the new id sticks to the scene


def test_restart_clients_get_a_clear_error_then_succeed_after_reencoding(server, local):
    rng = np.random.default_rng(np.random.randint(2**31))
    frames = rng.integers(0, 256, (4, 50, 70, 3), dtype=np.uint8)
    uv = rng.random((200, 2))
    c = server.client(timeout_s=10.0)
    scene = c.encode(frames)
    server.stop()
    with pytest.raises(ServerUnavailableError, match="did not answer"):
        c.query(scene, uv, 0, 0, 0)
    c.close()
    server.start()
    with server.client(failover=False) as c:
        with pytest.raises(UnknownSceneError, match="restarted"):
            c.query(scene, uv, 0, 0, 0)
        scene = c.encode(frames)
        assert_same(c.query(scene, uv, 0, 0, 0), local.query(local.encode(frames), uv, 0, 0, 0))
