"""d4rt serve --replicas 2: two real servers behind Debian's nginx on loopback, scene affinity and failover.

One `d4rt serve --replicas 2` for the module (a child process, as a user starts it; ~1 min to start on 2 cores),
one replica SIGKILLed under load and restarted by the supervisor, then Ctrl-C (SIGINT) and a check that nothing
is left running. Every wait is bounded; the module stops everything it started even when a test fails.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from d4rt.runtime import load
from d4rt.serve import Client
from d4rt.serve.process import _children, free_port_block
from d4rt.serve.replicas import NGINX
from tests.exported import exported

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(NGINX).exists(), reason=f"needs Debian's nginx ({NGINX})")]

CLIENTS = 8
START_TIMEOUT_S = 300.0


def _main_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from d4rt.cli import main; sys.exit(main())", *args]


def _wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.3):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


class Cluster:
    """The `d4rt serve --replicas 2` child: its ports, log folder and supervisor log."""

    def __init__(self, export_dir: Path, log_dir: Path):
        base = free_port_block(8)
        self.port, self.replica_port, self.log_dir = base, base + 2, log_dir
        self.log = log_dir / "supervisor.log"
        cmd = _main_cmd("serve", str(export_dir), "--replicas", "2", "--port", str(self.port), "--replica-port",
                        str(self.replica_port), "--gpus", "", "--threads", "1", "--fail-timeout-s", "2",
                        "--log-dir", str(log_dir))
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_started(self) -> None:
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"d4rt serve --replicas exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            return "nginx (pid" in self.text()

        _wait_for(up, START_TIMEOUT_S, "two replicas and nginx")

    def replica_pid(self, index: int) -> int:
        return int(re.findall(rf"replica {index} started: pid (\d+)", self.text())[-1])

    def metrics_port(self, index: int) -> int:
        return self.replica_port + 3 * index + 2

    def encodes(self, index: int) -> int:
        """Successful encode requests of replica ``index`` (its Prometheus metrics; since its last start)."""
        url = f"http://127.0.0.1:{self.metrics_port(index)}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        m = re.search(r'nv_inference_request_success\{model="encode",version="1"\} (\d+)', text)
        return int(m.group(1)) if m else 0

    def holder(self, scene_id: str) -> int:
        """Which replica logged encoding this scene id."""
        for i in (0, 1):
            if f"encoded scene {scene_id}" in (self.log_dir / f"replica-{i}.log").read_text(errors="replace"):
                return i
        raise AssertionError(f"no replica logged scene {scene_id}")

    def client(self, **kwargs) -> Client:
        return Client(f"127.0.0.1:{self.port}", timeout_s=120.0, ready_timeout_s=30.0, **kwargs)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                pass
        for pid in [self.proc.pid, *_children(self.proc.pid)] if self.proc.poll() is None else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def export_dir():
    return exported("tiny", 4)[1]


@pytest.fixture(scope="module")
def local(export_dir):
    return load(export_dir, backend="onnxruntime-cpu", threads=1)


@pytest.fixture(scope="module")
def cluster(export_dir, tmp_path_factory):
    c = Cluster(export_dir, tmp_path_factory.mktemp("replicas"))
    try:
        c.wait_started()
        yield c
    finally:
        c.terminate()


@pytest.fixture(scope="module")
def users(cluster, local):
    """8 clients, each with its own random clip encoded through nginx, its queries and the in-process answer."""
    rng = np.random.default_rng(np.random.randint(2**31))
    out = []
    for _ in range(CLIENTS):
        frames = rng.integers(0, 256, (4, 48, 64, 3), dtype=np.uint8)
        client = cluster.client()
        scene = client.encode(frames)
        uv, t = rng.random((300, 2)), rng.integers(0, 4, (3, 300))
        ref = local.query(local.encode(frames), uv, *t)
        out.append({"client": client, "scene": scene, "q": (uv, *t), "ref": ref, "frames": frames})
    yield out
    for u in out:
        u["client"].close()


def assert_same(served: dict, ref: dict) -> None:
    for k in ref:
        np.testing.assert_allclose(served[k], ref[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_print_config_is_valid_nginx(export_dir, tmp_path):
    out = subprocess.run(_main_cmd("serve", str(export_dir), "--replicas", "3", "--port", "18000", "--gpus", "",
                                   "--print-config"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    conf = out.stdout
    assert "hash $http_x_d4rt_route consistent;" in conf
    for port in (18010, 18013, 18016):  # replicas' HTTP ports, then their gRPC ports
        assert f"server 127.0.0.1:{port} max_fails=1 fail_timeout=10s;" in conf
        assert f"server 127.0.0.1:{port + 1} max_fails=1" in conf
    assert "proxy_read_timeout 300s;" in conf  # the Client's default timeout_s
    (tmp_path / "nginx.conf").write_text(conf)
    (tmp_path / "tmp").mkdir()
    check = subprocess.run([NGINX, "-t", "-p", f"{tmp_path}/", "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0 and "syntax is ok" in check.stderr, check.stderr


def test_clients_get_in_process_answers_and_both_replicas_hold_scenes(cluster, users, local):
    for u in users:  # one after the other, then all at once below
        assert_same(u["client"].query(u["scene"], *u["q"], batch_size=128), u["ref"])
    errors = []

    def work(u):
        try:
            with cluster.client() as c:  # another connection, the same scene: its route travels with it
                assert_same(c.query(u["scene"], *u["q"], batch_size=100), u["ref"])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors and not any(th.is_alive() for th in threads), errors
    assert all(u["client"].reencodes == 0 for u in users)
    # affinity: every request of a scene went to the replica that encoded it (nginx's access log: route, upstream)
    access = (cluster.log_dir / "access.log").read_text().splitlines()
    for u in users:
        ports = {re.search(r"upstream=127\.0\.0\.1:(\d+)", line).group(1) for line in access
                 if f"route={u['scene'].state.route}" in line}
        assert ports == {str(cluster.replica_port + 3 * cluster.holder(u["scene"].state.scene_id))}, ports
    # both replicas hold scenes; 8 random keys all on one replica (p ~ 1 %): encode more until both do
    extra = cluster.client()
    for _ in range(30):
        if min(cluster.encodes(0), cluster.encodes(1)) > 0:
            break
        extra.encode(users[0]["frames"])
    assert min(cluster.encodes(0), cluster.encodes(1)) > 0
    assert cluster.encodes(0) + cluster.encodes(1) >= CLIENTS
    for u in users:  # the in-process answers again: nothing above moved a scene
        assert_same(u["client"].query(u["scene"], *u["q"]), u["ref"])
    # gRPC through nginx (grpc_pass, the same hash over the replicas' gRPC ports): a scene encoded over gRPC stays
    # on its replica; one encoded over HTTP may hash elsewhere (another ring): a re-encode, never a wrong answer
    with Client(f"127.0.0.1:{cluster.port + 1}", protocol="grpc", timeout_s=120.0) as g:
        u = users[1]
        scene = g.encode(u["frames"])
        for _ in range(3):
            assert_same(g.query(scene, *u["q"], batch_size=128), u["ref"])
        assert g.reencodes == 0
        http_scene = dataclasses.replace(users[0]["scene"], state=copy.copy(users[0]["scene"].state))  # kept apart
        assert_same(g.query(http_scene, *users[0]["q"]), users[0]["ref"])
        assert g.reencodes <= 1


def test_killed_replica_fails_over_with_one_reencode_and_rejoins(cluster, users, caplog):
    caplog.set_level(logging.WARNING, logger="d4rt.serve.client")
    on = [cluster.holder(u["scene"].state.scene_id) for u in users]
    victim = on[0]
    pid = cluster.replica_pid(victim)
    errors, rounds, reencodes = [], [0] * len(users), [None] * len(users)
    stop = threading.Event()

    def work(k):  # a client per thread (tritonclient's HTTP client is bound to the thread that made it)
        u = users[k]
        try:
            with cluster.client() as c:
                while not stop.is_set() and rounds[k] < 200:  # bounded
                    assert_same(c.query(u["scene"], *u["q"], batch_size=150), u["ref"])
                    rounds[k] += 1
                reencodes[k] = c.reencodes
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append((k, exc))

    grpc = {"rounds": 0}  # and one gRPC client with its own scene (nginx's grpc_pass, a ring of its own)

    def grpc_work():
        u = users[1]
        try:
            with Client(f"127.0.0.1:{cluster.port + 1}", protocol="grpc", timeout_s=120.0) as g:
                scene = g.encode(u["frames"])
                grpc["holder"] = cluster.holder(scene.state.scene_id)
                while not stop.is_set() and grpc["rounds"] < 200:
                    assert_same(g.query(scene, *u["q"], batch_size=150), u["ref"])
                    grpc["rounds"] += 1
                grpc["reencodes"], grpc["scene_id"] = g.reencodes, scene.state.scene_id
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(("grpc", exc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(users))]
    threads.append(threading.Thread(target=grpc_work))
    for th in threads:
        th.start()
    _wait_for(lambda: (min(rounds) >= 1 and grpc["rounds"] >= 1) or errors, 120, "every client's first answers")
    assert not errors, errors
    os.killpg(pid, signal.SIGKILL)  # the replica and its tritonserver: a crash, mid-load
    at_kill, grpc_at_kill = list(rounds), grpc["rounds"]
    _wait_for(lambda: (all(r >= a + 3 for r, a in zip(rounds, at_kill)) and grpc["rounds"] >= grpc_at_kill + 3)
              or errors, 180, "answers after the kill")
    stop.set()
    for th in threads:
        th.join(120)
    assert not errors, errors
    back_early = f"replica {victim} ready again" in cluster.text()  # restarted before the load stopped (slow box)
    moved = [k for k in range(len(users)) if on[k] == victim]
    assert moved
    for k in range(len(users)):
        if k not in moved:
            assert reencodes[k] == 0  # the survivor's clients: no error, nothing encoded again
        elif not back_early:
            assert reencodes[k] == 1  # once, on the survivor
            assert cluster.holder(users[k]["scene"].state.scene_id) == 1 - victim
        else:
            assert reencodes[k] in (1, 2)  # once on the survivor, maybe once more on the restarted replica
    # gRPC fails over the same way: its scene's replica killed, one re-encode on the survivor (maybe one more on
    # the restarted replica); otherwise nothing
    if grpc["holder"] != victim:
        assert grpc["reencodes"] == 0
    else:
        assert grpc["reencodes"] in ((1,) if not back_early else (1, 2))
    assert sum("encoding the clip again there" in r.getMessage() for r in caplog.records) == (sum(reencodes)
                                                                                             + grpc["reencodes"])

    # the supervisor restarts the replica; once ready it is back in nginx and its keys come back to it
    _wait_for(lambda: f"replica {victim} ready again" in cluster.text(), 240, "the killed replica's restart")
    assert cluster.replica_pid(victim) != pid
    time.sleep(1.0)  # nginx's reload (SIGHUP) takes its new workers up
    for k, u in enumerate(users):  # the module's clients (made on this thread), which saw no re-encode yet
        assert_same(u["client"].query(u["scene"], *u["q"]), u["ref"])
        # moved back: encoded there again, once in all (here, or above if the replica was back early)
        assert u["client"].reencodes + reencodes[k] == (2 if k in moved else 0)
    for k in moved:
        assert cluster.holder(users[k]["scene"].state.scene_id) == victim
    # the new process holds their scenes (and the gRPC scene if that was encoded again there, after the restart)
    grpc_there = grpc["reencodes"] > 0 and cluster.holder(grpc["scene_id"]) == victim
    assert cluster.encodes(victim) == len(moved) + grpc_there


def test_ctrl_c_stops_every_process(cluster, users):
    for u in users:
        u["client"].close()
    pids = [cluster.proc.pid, *_children(cluster.proc.pid)]
    assert len(pids) >= 4  # supervisor, nginx master + worker, 2 replicas (and their tritonservers)
    cluster.proc.send_signal(signal.SIGINT)
    assert cluster.proc.wait(90) == 0
    assert "stopped nginx and 2 replicas" in cluster.text()

    def gone(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
        except OSError:
            return True

    _wait_for(lambda: all(gone(p) for p in pids), 30, "every child to exit")
    for port in (cluster.port, cluster.port + 1, cluster.replica_port, cluster.replica_port + 3):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), 1).close()
