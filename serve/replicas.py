"""``d4rt serve EXPORT --replicas N``: N server processes behind nginx, with scene affinity by routing key.

    d4rt serve exported/ --replicas 2 --port 8000     # nginx: HTTP 8000, gRPC 8001; replicas on 8010.. (3 ports each)

Each replica is a plain ``d4rt serve`` child on 127.0.0.1 (one per GPU when there are GPUs, pinned with
CUDA_VISIBLE_DEVICES, round robin when there are more replicas than GPUs; N on the CPU). nginx (Debian's
``/usr/sbin/nginx``) runs as a non-daemon child with its prefix, config, pid and temp paths in a folder of its own
and hashes the Client's routing key (header ``x-d4rt-route``) onto the replicas (``serve/nginx.conf.template``).

The supervisor (:class:`ReplicaSet`) keeps them running: a replica that exits is taken out of nginx (``down``, a
reload), its process group killed (no orphaned tritonserver holds its ports), started again and put back once both
models are ready. Stopping (Ctrl-C / SIGTERM) stops nginx and every replica and kills what is left of their
process groups: nothing outlives it. Children also get SIGTERM if the supervisor itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import http.client
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

LOG = logging.getLogger("d4rt.serve.replicas")
NGINX = "/usr/sbin/nginx"
PORTS_PER_REPLICA = 3  # HTTP, gRPC, metrics
QUICK_EXIT_S = 60.0  # a replica that exits sooner after starting counts as crash-looping: restarts back off


@dataclass
class Replica:
    """One ``d4rt serve`` child: its index, loopback ports, GPU (None on the CPU) and process."""

    index: int
    http: int
    grpc: int
    metrics: int
    gpu: str | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    starts: int = 0
    started_at: float = 0.0  # time.monotonic() of the last start
    quick_failures: int = 0  # exits within QUICK_EXIT_S of starting, in a row
    restart_at: float | None = None  # exited: when to start it again (None: running or starting)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def replica_ports(count: int, base_port: int) -> list[tuple[int, int, int]]:
    """(http, grpc, metrics) of each replica: base_port + 3 i, + 1, + 2."""
    return [(base_port + PORTS_PER_REPLICA * i, base_port + PORTS_PER_REPLICA * i + 1,
             base_port + PORTS_PER_REPLICA * i + 2) for i in range(count)]


def visible_gpus() -> list[str]:
    """GPU ids to pin replicas to: CUDA_VISIBLE_DEVICES when set, else `nvidia-smi -L`'s count; [] without GPUs."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def nginx_config(replicas: list[Replica], *, host: str, http_port: int, grpc_port: int, timeout_s: float,
                 fail_timeout_s: float, connect_timeout_s: float = 5.0, max_body: str = "256m",
                 down: set[int] = frozenset(), access_log: str = "access.log") -> str:
    """The nginx config for these replicas, from the template shipped in d4rt.serve (replicas in ``down`` are
    marked ``down``: out of the ring until the supervisor puts them back)."""
    template = resources.files("d4rt.serve").joinpath("nginx.conf.template").read_text()

    def servers(port_of) -> str:
        return "\n".join(f"        server 127.0.0.1:{port_of(r)} max_fails=1 fail_timeout={fail_timeout_s:g}s"
                         f"{' down' if r.index in down else ''};  # replica {r.index}" for r in replicas)

    values = {"@HTTP_SERVERS@": servers(lambda r: r.http), "@GRPC_SERVERS@": servers(lambda r: r.grpc),
              "@LISTEN@": host, "@HTTP_PORT@": str(http_port), "@GRPC_PORT@": str(grpc_port),
              "@TIMEOUT@": f"{timeout_s:g}", "@CONNECT_TIMEOUT@": f"{connect_timeout_s:g}",
              "@REPLICAS@": str(len(replicas)), "@MAX_BODY@": max_body,
              "@ACCESS_LOG@": access_log}
    for key, value in values.items():
        template = template.replace(key, value)
    return template


def _die_with_parent() -> None:  # runs in the child between fork and exec
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a supervisor started in the background has SIGINT ignored
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def replica_ready(port: int, timeout_s: float = 2.0) -> bool:
    """Both models of the replica on ``port`` answer ready (Triton's per-model readiness)."""
    try:
        for model in ("encode", "query"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
            try:
                conn.request("GET", f"/v2/models/{model}/ready")
                if conn.getresponse().status != 200:
                    return False
            finally:
                conn.close()
        return True
    except OSError:
        return False


class ReplicaSet:
    """N ``d4rt serve`` replicas and nginx in front of them; :meth:`run` supervises until stopped.

    Args:
        export_dir: the export folder every replica serves.
        replicas: how many server processes.
        port: nginx's HTTP port (gRPC: ``grpc_port``, default port + 1).
        serve_args: more ``d4rt serve`` flags for every replica (backend, threads, store size, ...).
        base_port: the first replica's HTTP port (default port + 10); replica i uses base_port + 3 i .. + 2.
        gpus: GPU ids to pin replicas to (default: :func:`visible_gpus`); [] runs every replica on the CPU.
        log_dir: where replica-<i>.log, nginx.log and access.log go (default: a new temporary folder, kept).
        timeout_s: nginx's proxy time-outs (the Client's ``timeout_s``).
        fail_timeout_s: how long a replica that failed a request is left out before nginx tries it again.
    """

    def __init__(self, export_dir: str | Path, replicas: int, port: int, *, host: str = "127.0.0.1",
                 grpc_port: int | None = None, serve_args: list[str] | tuple[str, ...] = (),
                 base_port: int | None = None, gpus: list[str] | None = None, log_dir: str | Path | None = None,
                 timeout_s: float = 300.0, fail_timeout_s: float = 10.0, ready_timeout_s: float = 600.0):
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        self.export_dir, self.host, self.port = Path(export_dir), host, int(port)
        self.grpc_port = int(grpc_port or port + 1)
        self.serve_args = list(serve_args)
        self.timeout_s, self.fail_timeout_s, self.ready_timeout_s = timeout_s, fail_timeout_s, ready_timeout_s
        gpus = visible_gpus() if gpus is None else list(gpus)
        ports = replica_ports(replicas, base_port or self.port + 10)
        self.replicas = [Replica(i, *p, gpu=gpus[i % len(gpus)] if gpus else None) for i, p in enumerate(ports)]
        self.prefix: Path | None = None
        self._log_dir = Path(log_dir) if log_dir else None
        self.nginx: subprocess.Popen | None = None
        self._down: set[int] = set()
        self._stopping = False

    # ----- config -----------------------------------------------------------------------------------------------
    def config(self) -> str:
        return nginx_config(self.replicas, host=self.host, http_port=self.port, grpc_port=self.grpc_port,
                            timeout_s=self.timeout_s, fail_timeout_s=self.fail_timeout_s, down=self._down,
                            access_log=str(self._log_dir / "access.log") if self._log_dir else "access.log")

    @property
    def log_dir(self) -> Path:
        assert self._log_dir is not None, "start() first"
        return self._log_dir

    def _write_config(self) -> Path:
        path = self.prefix / "nginx.conf"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.config())
        tmp.replace(path)
        return path

    # ----- processes --------------------------------------------------------------------------------------------
    def _start_replica(self, r: Replica) -> None:
        cmd = [sys.executable, "-c", "import sys; from d4rt.cli import main; sys.exit(main())", "serve",
               str(self.export_dir), "--host", "127.0.0.1", "--port", str(r.http), "--grpc-port", str(r.grpc),
               "--metrics-port", str(r.metrics), *self.serve_args]
        env = dict(os.environ)
        if r.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = r.gpu
        with (self.log_dir / f"replica-{r.index}.log").open("a") as log:
            r.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                      preexec_fn=_die_with_parent)
        r.starts += 1
        r.started_at, r.restart_at = time.monotonic(), None
        LOG.info("replica %d started: pid %d, http 127.0.0.1:%d, grpc 127.0.0.1:%d, metrics 127.0.0.1:%d%s",
                 r.index, r.proc.pid, r.http, r.grpc, r.metrics, f", GPU {r.gpu}" if r.gpu is not None else "")

    def _kill_group(self, r: Replica) -> None:
        """SIGKILL what is left of the replica's process group (tritonserver, Python stubs)."""
        if r.proc is None:
            return
        try:
            os.killpg(r.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            r.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def _wait_ready(self, replicas: list[Replica]) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        todo = list(replicas)
        while todo:
            for r in list(todo):
                if not r.alive:
                    tail = (self.log_dir / f"replica-{r.index}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"replica {r.index} exited with status {r.proc.returncode} while starting; "
                                       f"its log ({self.log_dir / f'replica-{r.index}.log'}) ends:\n{tail}")
                if replica_ready(r.http):
                    LOG.info("replica %d ready (pid %d)", r.index, r.proc.pid)
                    todo.remove(r)
            if todo and time.monotonic() > deadline:
                raise RuntimeError(f"replicas {[r.index for r in todo]} not ready after {self.ready_timeout_s:.0f} s; "
                                   f"see their logs in {self.log_dir}")
            if todo:
                time.sleep(0.5)

    def _reload_nginx(self) -> None:
        self._write_config()
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGHUP)  # the master re-reads the config; old workers finish their requests

    def start(self) -> "ReplicaSet":
        """Start the replicas and nginx; returns when every replica is ready and nginx listens."""
        if not Path(NGINX).exists():
            raise RuntimeError(f"{NGINX} not found: install Debian's nginx (`apt-get install nginx`)")
        self.prefix = Path(tempfile.mkdtemp(prefix="d4rt-nginx-"))  # config, pid, temp paths; removed at stop
        self.prefix.chmod(0o755)  # nginx's workers (user nobody when started as root) reach its temp paths
        (self.prefix / "tmp").mkdir()
        if self._log_dir is None:  # logs outlive the run
            self._log_dir = Path(tempfile.mkdtemp(prefix="d4rt-serve-logs-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        main = threading.current_thread() is threading.main_thread()
        old = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        try:
            for r in self.replicas:
                self._start_replica(r)
            self._wait_ready(self.replicas)
            conf = self._write_config()
            with (self.log_dir / "nginx.log").open("a") as log:
                self.nginx = subprocess.Popen(
                    [NGINX, "-p", f"{self.prefix}/", "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
            self._wait_nginx()
        except BaseException:  # SIGINT / SIGTERM while starting included: nothing is left running
            self.stop()
            raise
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        LOG.info("nginx (pid %d) on http://%s:%d, grpc %s:%d -> %d replicas; config %s; logs in %s",
                 self.nginx.pid, self.host, self.port, self.host, self.grpc_port, len(self.replicas), conf,
                 self.log_dir)
        return self

    def _wait_nginx(self, timeout_s: float = 20.0) -> None:
        import socket

        deadline = time.monotonic() + timeout_s
        while True:
            if self.nginx.poll() is not None:
                tail = (self.log_dir / "nginx.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"nginx exited with status {self.nginx.returncode}:\n{tail}")
            try:
                socket.create_connection((self.host if self.host != "0.0.0.0" else "127.0.0.1", self.port), 1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx does not listen on {self.host}:{self.port} after {timeout_s:.0f} s")
                time.sleep(0.2)

    # ----- supervision ------------------------------------------------------------------------------------------
    def check(self) -> None:
        """One supervision step: a replica that exited is taken out of nginx and started again (at once the first
        time, then backing off up to 60 s while it keeps exiting within a minute); back in nginx once ready."""
        if self.nginx is not None and self.nginx.poll() is not None:
            raise RuntimeError(f"nginx exited with status {self.nginx.returncode}; see {self.log_dir / 'nginx.log'}")
        now = time.monotonic()
        dead = [r for r in self.replicas if r.restart_at is None and r.proc is not None and r.proc.poll() is not None]
        for r in dead:
            self._kill_group(r)
            r.quick_failures = r.quick_failures + 1 if now - r.started_at < QUICK_EXIT_S else 0
            delay = 0.0 if r.quick_failures <= 1 else min(60.0, 5.0 * 2 ** (r.quick_failures - 2))
            r.restart_at = now + delay
            LOG.warning("replica %d (pid %d) exited with status %s; out of nginx, restarting it%s", r.index,
                        r.proc.pid, r.proc.returncode, f" in {delay:.0f} s" if delay else "")
            self._down.add(r.index)
        if dead:
            self._reload_nginx()
        for r in self.replicas:
            if r.restart_at is not None and now >= r.restart_at:
                self._start_replica(r)
        for r in self.replicas:
            if r.index in self._down and r.alive and replica_ready(r.http):
                LOG.info("replica %d ready again (pid %d, start %d); back in nginx", r.index, r.proc.pid, r.starts)
                self._down.discard(r.index)
                self._reload_nginx()

    def run(self, poll_s: float = 0.5) -> None:
        """Supervise until SIGINT / SIGTERM, then stop everything."""
        def request_stop(signum, frame):
            self._stopping = True

        old = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not self._stopping:
                self.check()
                time.sleep(poll_s)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            self.stop()

    def stop(self, timeout_s: float = 40.0) -> None:
        """nginx first (no new requests), then every replica (SIGTERM: Triton shuts down); SIGKILL what is left."""
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGTERM)  # fast shutdown
            try:
                self.nginx.wait(10)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
        if self.nginx is not None:
            try:
                os.killpg(self.nginx.pid, signal.SIGKILL)  # workers left behind by a killed master
            except (ProcessLookupError, PermissionError):
                pass
        for r in self.replicas:
            if r.alive:
                r.proc.send_signal(signal.SIGTERM)  # `d4rt serve` shuts Triton down on SIGTERM as on SIGINT
        deadline = time.monotonic() + timeout_s
        for r in self.replicas:
            if r.proc is not None:
                try:
                    r.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            self._kill_group(r)
        if self.prefix is not None:
            shutil.rmtree(self.prefix, ignore_errors=True)
        LOG.info("stopped nginx and %d replicas", len(self.replicas))
