"""Servers under test as child processes: start, wait until they answer,
read their CPU time and memory from /proc, stop them."""
from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


#: Open files a server holding 20,000 parked polls needs, with room to spare.
WANTED_OPEN_FILES = 65536


def raise_open_files() -> int:
    """Lift the limit on open files as far as this process may: to
    ``WANTED_OPEN_FILES`` where it is allowed to raise the hard limit (root),
    else to the hard limit. A benchmark with 10,000 sockets per process
    needs it. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < WANTED_OPEN_FILES:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (WANTED_OPEN_FILES, WANTED_OPEN_FILES))
        except (ValueError, OSError):
            pass
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


class ServerProcess:
    """One server under test, listening on 127.0.0.1:``port``; its counters
    are on ``stats_port``, which is ``port`` unless the server shares that
    with others. It counts as started once ``stats_port`` answers."""

    def __init__(self, argv: list[str], port: int, name: str, *, stats_port: Optional[int] = None,
                 env: Optional[dict[str, str]] = None) -> None:
        self.name = name
        self.port = port
        self.stats_port = port if stats_port is None else stats_port
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        # The server's output goes to a file, shown only if it fails: a clean
        # stop interrupts parked requests, and gevent reports each of them.
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(argv, cwd=REPO, env=env, preexec_fn=raise_open_files,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_listening()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} at start-up:\n"
                                   + self.output()[-3000:])
            try:
                socket.create_connection(("127.0.0.1", self.stats_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on port {self.stats_port} within {timeout}s")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, which servers handle even when started with SIGINT
        ignored (as a background job is); SIGKILL after ``timeout``."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if exc[0] is not None:
            sys.stderr.write(f"--- {self.name} output ---\n{self.output()[-3000:]}\n")
        self.log.close()


def start_bus(db_url: str, mode: str = "default", *, port: Optional[int] = None,
              poll_timeout: float = 600.0, shared: bool = False) -> ServerProcess:
    """The library under gevent (bench/app_server.py) in one of its modes.

    ``shared``: one of several workers on ``port`` (SO_REUSEPORT), with its
    counters on a port of its own."""
    port = port or free_port()
    argv = [sys.executable, "-m", "bench.app_server", "--db-url", db_url, "--port", str(port),
            "--mode", mode, "--poll-timeout", str(poll_timeout)]
    stats_port = None
    if shared:
        stats_port = free_port()
        argv += ["--reuse-port", "--stats-port", str(stats_port)]
    return ServerProcess(argv, port, f"bus ({mode})", stats_port=stats_port)


def start_bare(port: Optional[int] = None) -> ServerProcess:
    """The bare gevent pywsgi baseline (bench/bare_server.py)."""
    port = port or free_port()
    return ServerProcess([sys.executable, "-m", "bench.bare_server", "--port", str(port)], port, "bare pywsgi")
