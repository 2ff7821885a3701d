"""Secure by default: no open bind without a token, read-only kiosks, Secure cookies over TLS.

The application is the real one (``create_app`` over the collaborators of
:mod:`tests.services.alerts.api.conftest`); settings go through their validators.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, Security
from fastapi.testclient import TestClient

from facemask.infra.netaddr import is_loopback
from facemask.infra.settings import ConfigError
from services.alerts.__main__ import main as alerts_main
from services.alerts.api import create_app
from services.alerts.config import AlertSettings
from tests.services.alerts.api.conftest import TOKEN, Api
from tests.services.alerts.api.test_auth import GUARDED, PUBLIC

Clients = list[TestClient]


@pytest.fixture()
def clients() -> Iterator[Clients]:
    made: Clients = []
    yield made
    for client in made:
        client.close()


def rebuild(
    api: Api,
    clients: Clients,
    *,
    base_url: str = "http://testserver",
    peer: tuple[str, int] = ("testclient", 50000),
    **changes: Any,
) -> TestClient:
    """The same collaborators under changed (validated) settings, plus a guarded POST
    route mounted exactly as ``create_app`` guards its routers (none of today's routes
    changes anything, every future one must be refused without the token)."""
    settings = AlertSettings.model_validate({**api.settings.model_dump(), **changes})
    old = api.client.app.state.collaborators  # type: ignore[attr-defined]
    app = create_app(
        settings,
        store=old.store,
        snapshots=old.snapshots,
        cameras=old.cameras,
        hub=old.hub,
        registry=old.registry,
        readiness=lambda: dict(api.checks),
    )
    auth = app.state.collaborators.auth
    if auth is not None:
        mutating = APIRouter()

        @mutating.post("/api/test-change")
        @mutating.delete("/api/test-change")
        def change() -> dict[str, bool]:
            return {"changed": True}

        app.include_router(mutating, dependencies=[Security(auth)])
    client = TestClient(app, base_url=base_url, client=peer)
    clients.append(client)
    return client


# -- binding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("alerts.example", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "API_TOKEN", "ALLOW_ANONYMOUS_READ"):
        monkeypatch.delenv(f"FACEMASK_ALERTS_{name}", raising=False)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "alerts.example"])
def test_an_open_bind_without_a_token_is_a_config_error(host: str) -> None:
    with pytest.raises(ConfigError) as err:
        AlertSettings.load(host=host)
    message = str(err.value)
    for name in ("FACEMASK_ALERTS_API_TOKEN", "FACEMASK_ALERTS_ALLOW_ANONYMOUS_READ", host):
        assert name in message
    assert AlertSettings.load(host=host, api_token=TOKEN).host == host
    assert AlertSettings.load(host=host, allow_anonymous_read=True).allow_anonymous_read


@pytest.mark.usefixtures("clean_env")
def test_the_default_binds_loopback_only() -> None:
    settings = AlertSettings.load()
    assert is_loopback(settings.host) and not settings.api_token


@pytest.mark.usefixtures("clean_env")
def test_check_config_and_start_refuse_an_open_bind(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as exited:
        alerts_main(["--check-config", "--host", "0.0.0.0"])
    assert exited.value.code == 2
    assert "FACEMASK_ALERTS_API_TOKEN" in capsys.readouterr().err
    # starting fails the same way, before anything is opened
    assert alerts_main(["--host", "0.0.0.0", "--redis-url", "redis://127.0.0.1:1/0"]) == 2
    assert "FACEMASK_ALERTS_API_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("FACEMASK_ALERTS_API_TOKEN", TOKEN)
    with pytest.raises(SystemExit) as exited:
        alerts_main(["--check-config", "--host", "0.0.0.0"])
    assert exited.value.code == 0
    assert "configuration OK" in capsys.readouterr().out


def test_trusted_proxies_must_be_addresses(api: Api) -> None:
    with pytest.raises(ConfigError, match="trusted_proxies"):
        AlertSettings.load(state_dir=api.settings.state_dir, trusted_proxies="10.0.0.1,proxy")
    settings = AlertSettings.load(
        state_dir=api.settings.state_dir, trusted_proxies=" 10.0.0.1, 172.16.0.0/12 "
    )
    assert [str(n) for n in settings.proxy_networks] == ["10.0.0.1/32", "172.16.0.0/12"]


# -- anonymous read-only access --------------------------------------------------------------


@pytest.mark.parametrize("token", [TOKEN, ""], ids=["with token", "no token"])
def test_anonymous_read_lets_reads_in_and_nothing_else(
    api: Api, clients: Clients, token: str
) -> None:
    client = rebuild(api, clients, api_token=token, allow_anonymous_read=True, host="0.0.0.0")
    for path in [*GUARDED, *PUBLIC]:
        assert client.get(path).status_code != 401, path
        assert client.head(path).status_code != 401, path
    page = client.get("/")
    assert page.status_code == 200 and 'id="alerts"' in page.text  # the dashboard itself
    for method in ("POST", "DELETE"):
        refused = client.request(method, "/api/test-change")
        assert refused.status_code == 401, method
        assert refused.headers["www-authenticate"] == 'Bearer realm="facemask"'
        with_token = client.request(
            method, "/api/test-change", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert with_token.status_code == (200 if token else 401), method
    if not token:
        assert "read-only" in client.post("/api/test-change").json()["detail"]


def test_without_anonymous_read_the_token_guards_reads_and_changes(
    api: Api, clients: Clients
) -> None:
    client = rebuild(api, clients, api_token=TOKEN)
    assert client.get("/api/alerts").status_code == 401
    assert client.post("/api/test-change").status_code == 401
    assert client.get("/").status_code == 401  # the sign-in form
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/api/test-change", headers=bearer).json() == {"changed": True}


# -- the session cookie ----------------------------------------------------------------------


def cookie_of(client: TestClient, headers: dict[str, str] | None = None) -> str:
    signed = client.get(f"/?token={TOKEN}", headers=headers or {}, follow_redirects=False)
    assert signed.status_code == 303
    cookie = signed.headers["set-cookie"]
    attributes = [a.strip() for a in cookie.split(";")]
    assert "HttpOnly" in attributes and "SameSite=Strict" in attributes
    return cookie


def is_secure(cookie: str) -> bool:
    return "Secure" in [a.strip() for a in cookie.split(";")]


def test_cookie_is_secure_when_the_request_came_over_https(api: Api, clients: Clients) -> None:
    assert is_secure(cookie_of(rebuild(api, clients, api_token=TOKEN, base_url="https://x")))
    assert not is_secure(cookie_of(rebuild(api, clients, api_token=TOKEN)))


def test_cookie_is_secure_behind_an_https_public_address(api: Api, clients: Clients) -> None:
    client = rebuild(api, clients, api_token=TOKEN, public_base_url="https://facemask.example")
    assert is_secure(cookie_of(client))
    plain = rebuild(api, clients, api_token=TOKEN, public_base_url="http://facemask.example")
    assert not is_secure(cookie_of(plain))


@pytest.mark.parametrize(
    ("peer", "proto", "secure"),
    [
        ("10.0.0.7", "https", True),  # a trusted proxy terminated TLS
        ("10.0.0.7", "https, http", True),  # the first hop is the user's
        ("10.0.0.7", "http", False),
        ("10.0.0.7", None, False),
        ("192.168.9.9", "https", False),  # anyone else may not claim it
    ],
)
def test_forwarded_proto_counts_only_from_trusted_proxies(
    api: Api, clients: Clients, peer: str, proto: str | None, secure: bool
) -> None:
    client = rebuild(
        api, clients, api_token=TOKEN, trusted_proxies="10.0.0.0/24", peer=(peer, 40000)
    )
    headers = {"X-Forwarded-Proto": proto} if proto else {}
    assert is_secure(cookie_of(client, headers)) is secure


def test_forwarded_proto_ignored_without_trusted_proxies(api: Api, clients: Clients) -> None:
    client = rebuild(api, clients, api_token=TOKEN, peer=("10.0.0.7", 40000))
    assert not is_secure(cookie_of(client, {"X-Forwarded-Proto": "https"}))
