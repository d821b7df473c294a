"""d4rt.serve.replicas without servers: the nginx config from the template, the port layout, GPU pinning and the
supervisor's restart policy (with stand-in processes that exit at once)."""

from __future__ import annotations

import re
import subprocess

import pytest

from d4rt.serve.client import ROUTE_HEADER
from d4rt.serve.replicas import ReplicaSet, nginx_config, replica_ports, visible_gpus


def test_config_from_the_template_hashes_the_clients_header(tmp_path):
    rs = ReplicaSet(tmp_path, 3, 9000, gpus=[], timeout_s=123, fail_timeout_s=7)
    conf = rs.config()
    assert "@" not in re.sub(r"#.*", "", conf)  # every placeholder filled
    assert conf.count(f"hash $http_{ROUTE_HEADER.replace('-', '_')} consistent;") == 2  # HTTP and gRPC
    assert [int(p) for p in re.findall(r"server 127\.0\.0\.1:(\d+) max_fails=1 fail_timeout=7s;", conf)] == \
        [9010, 9013, 9016, 9011, 9014, 9017]
    assert "listen 127.0.0.1:9000;" in conf and "listen 127.0.0.1:9001 http2;" in conf
    assert "proxy_read_timeout 123s;" in conf and "grpc_read_timeout 123s;" in conf
    down = nginx_config(rs.replicas, host="0.0.0.0", http_port=1, grpc_port=2, timeout_s=1, fail_timeout_s=1,
                        down={1})
    assert re.findall(r"server 127\.0\.0\.1:(\d+) max_fails=1 fail_timeout=1s down;", down) == ["9013", "9014"]


def test_ports_and_gpu_pinning(tmp_path, monkeypatch):
    assert replica_ports(2, 100) == [(100, 101, 102), (103, 104, 105)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert visible_gpus() == ["2", "5"]
    rs = ReplicaSet(tmp_path, 3, 9000)
    assert [r.gpu for r in rs.replicas] == ["2", "5", "2"]  # round robin
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert [r.gpu for r in ReplicaSet(tmp_path, 2, 9000).replicas] == [None, None]  # the CPU


class CrashingReplicas(ReplicaSet):
    """Replicas that exit at once (a broken GPU, a bad export): only the restart policy runs."""

    def _start_replica(self, r):
        r.proc = subprocess.Popen(["false"], start_new_session=True)
        r.proc.wait()
        r.starts += 1
        r.started_at, r.restart_at = self.clock, None


def test_a_crash_looping_replica_is_restarted_with_backoff(tmp_path, monkeypatch):
    import d4rt.serve.replicas as replicas

    rs = CrashingReplicas(tmp_path, 1, 9000, gpus=[], log_dir=tmp_path)
    rs.prefix = rs._log_dir = tmp_path
    rs.clock = 1000.0
    monkeypatch.setattr(replicas.time, "monotonic", lambda: rs.clock)
    r = rs.replicas[0]
    rs._start_replica(r)
    waits = []
    for _ in range(6):
        rs.check()  # sees the exit: out of nginx, started again at once or scheduled
        assert "down;" in (tmp_path / "nginx.conf").read_text()
        waits.append(0.0 if r.restart_at is None else r.restart_at - rs.clock)
        if r.restart_at is not None:
            rs.clock += waits[-1] - 0.5
            rs.check()
            assert r.restart_at is not None  # not before its time
            rs.clock += 0.5
            rs.check()  # due: started again
        assert r.restart_at is None
    assert waits == [0, 5, 10, 20, 40, 60] and r.starts == 7
    rs.clock += 120  # ran long enough: the next exit is restarted at once again
    rs.check()
    assert r.restart_at is None and r.starts == 8 and r.quick_failures == 0


def _transport_only(triton_module):
    """A Client with only its transport set (no server needed), and a maker of calls that raise the given errors
    in order, then answer; ``calls`` counts the attempts."""
    from d4rt.serve.client import Client

    client = Client.__new__(Client)
    client.url, client._tc, client._transport_errors = "127.0.0.1:1", triton_module, (OSError, EOFError)
    calls = []

    def answers(errors):
        def fn():
            calls.append(1)
            if errors:
                raise errors.pop(0)
            return "answer"
        return fn

    return client, answers, calls


def test_a_closed_connection_is_tried_once_more_a_time_out_is_not():
    """Client._call: a keep-alive connection closed under a request (nginx reloading) is retried once; a second
    failure, or a time-out, is one ServerUnavailableError."""
    import tritonclient.http

    from d4rt.serve.client import ServerUnavailableError

    client, flaky, calls = _transport_only(tritonclient.http)
    assert client._call(flaky([ConnectionResetError("reset by peer")])) == "answer" and len(calls) == 2
    calls.clear()
    with pytest.raises(ServerUnavailableError, match="did not answer"):
        client._call(flaky([ConnectionResetError("reset"), ConnectionRefusedError("refused")]))
    assert len(calls) == 2
    calls.clear()
    with pytest.raises(ServerUnavailableError, match="TimeoutError"):
        client._call(flaky([TimeoutError("timed out")]))
    assert len(calls) == 1


def test_an_unavailable_answer_is_tried_once_more_a_refusal_is_not():
    """Client._call: gRPC UNAVAILABLE (nginx's 502 when a replica dies under a streamed gRPC request) is tried once
    more; twice is one ServerUnavailableError; a refusal (INVALID_ARGUMENT) is a ValueError at once."""
    import tritonclient.grpc
    from tritonclient.utils import InferenceServerException

    from d4rt.serve.client import ServerUnavailableError

    client, answers, calls = _transport_only(tritonclient.grpc)

    def unavailable():
        return InferenceServerException("Received http2 header with status: 502", status="StatusCode.UNAVAILABLE")

    assert client._call(answers([unavailable()])) == "answer" and len(calls) == 2
    calls.clear()
    with pytest.raises(ServerUnavailableError, match="UNAVAILABLE"):
        client._call(answers([unavailable(), unavailable()]))
    assert len(calls) == 2
    calls.clear()
    with pytest.raises(ValueError, match="refused the request"):
        client._call(answers([InferenceServerException("bad shape", status="StatusCode.INVALID_ARGUMENT")]))
    assert len(calls) == 1
