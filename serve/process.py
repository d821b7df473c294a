"""``d4rt serve`` as a child process, for tests, benchmarks and scripts: start (waits until ready), stop, kill.

    >>> with ServerProcess("engines/", log="server.log") as server:
    ...     rt = server.client()                   # a Client on its HTTP port
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from d4rt.serve.client import Client, ServerUnavailableError


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n ports nobody listens on now (the OS picks them)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port_block(n: int, host: str = "127.0.0.1", tries: int = 50) -> int:
    """The first of n consecutive ports nobody listens on now (for --replicas' port layout)."""
    import random

    for _ in range(tries):
        base = random.randrange(20000, 60000 - n)
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports on {host} after {tries} tries")


class ServerProcess:
    """One ``d4rt serve ENGINES`` child on loopback ports of its own; ``args``: more command-line flags."""

    def __init__(self, engines: str | Path, log: str | Path, args: list[str] | tuple[str, ...] = ()):
        self.engines, self.log, self.args = Path(engines), Path(log), list(args)
        self.http, self.grpc, self.metrics = free_ports(3)
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout_s: float = 120.0) -> "ServerProcess":
        """Start and wait until both models are ready; a server that exits or stays unready is an error."""
        cmd = [sys.executable, "-c", "import sys; from d4rt.cli import main; sys.exit(main())", "serve",
               str(self.engines), "--port", str(self.http), "--grpc-port", str(self.grpc),
               "--metrics-port", str(self.metrics), *self.args]
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"d4rt serve exited with status {self.proc.returncode}; its log ends:\n{tail}")
            try:
                self.client(ready_timeout_s=1.0).close()
                return self
            except ServerUnavailableError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise
            time.sleep(0.5)

    def client(self, protocol: str = "http", **kwargs) -> Client:
        """A Client on this server's HTTP or gRPC port (kwargs: Client's)."""
        port = self.http if protocol == "http" else self.grpc
        return Client(f"127.0.0.1:{port}", protocol=protocol, **kwargs)

    def stop(self, timeout_s: float = 40.0) -> None:
        """SIGINT (Triton shuts down, PyTriton cleans up); SIGKILL if it has not exited after timeout_s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the server and its descendants (tritonserver, the Python stubs), as a crash would leave them."""
        if self.proc is None or self.proc.poll() is not None:
            return
        children = _children(self.proc.pid)
        self.proc.kill()
        self.proc.wait(10)
        for pid in children:  # tritonserver and its stubs would otherwise outlive a killed parent
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _children(pid: int) -> list[int]:
    """Descendants of pid (from /proc), deepest last."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = []
        for task in Path(f"/proc/{p}/task").glob("*"):  # children of every thread (Triton spawns stubs off-main)
            try:
                kids += (task / "children").read_text().split()
            except OSError:
                pass
        out += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return out
