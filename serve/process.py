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


def _below_ephemeral_ports(n: int) -> range:
    """Candidate first ports for n listeners: under the kernel's ephemeral range (ip_local_port_range), where no
    outgoing connection is given a port, so a port found free stays free until the server binds it. Ports the OS
    hands out (bind to 0) lie inside that range and may be taken by a client's connection in between."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    return range(10000, low - n) if low - n > 11000 else range(low, 65536 - n)


def free_port_block(n: int, host: str = "127.0.0.1", tries: int = 50) -> int:
    """The first of n consecutive ports nobody listens on now (for --replicas' port layout), below the ephemeral
    port range (see :func:`_below_ephemeral_ports`)."""
    import random

    candidates = _below_ephemeral_ports(n)
    rng = random.Random()  # not the global generator: tests seed that one, and one seed must not pick one block
    for _ in range(tries):
        base = rng.choice(candidates)
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


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n ports nobody listens on now (consecutive), below the ephemeral port range."""
    base = free_port_block(n, host)
    return list(range(base, base + n))


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
