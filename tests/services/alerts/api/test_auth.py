"""The token as a security dependency: which credentials open which routes, the 401
answers, and the dashboard's sign-in (form, ``/?token=`` -> cookie)."""

from __future__ import annotations

import httpx
import pytest

from services.alerts.api.auth import COOKIE, TokenAuth
from tests.services.alerts.api.conftest import TOKEN, Api

GUARDED = [
    "/api/cameras",
    "/api/alerts",
    "/api/alerts?limit=0",  # the token is checked before the parameters
    f"/api/alerts/{'0' * 32}",
    "/api/config",
    "/api/cameras/lobby/zones",
    "/api/events?last_event_id=-1",
    "/metrics",
    "/openapi.json",
    "/static/app.js",
]
PUBLIC = ["/healthz", "/readyz"]

# name: (headers, cookie, query token) -> detail of the 401, or None when let in
CREDENTIALS: dict[str, tuple[dict[str, str], str | None, str | None, str | None]] = {
    "nothing": ({}, None, None, "missing bearer token"),
    "bearer": ({"Authorization": f"Bearer {TOKEN}"}, None, None, None),
    "bearer, any case": ({"Authorization": f"bEaReR   {TOKEN}"}, None, None, None),
    "cookie": ({}, TOKEN, None, None),
    "query": ({}, None, TOKEN, None),
    "wrong bearer": ({"Authorization": "Bearer nope"}, None, None, "invalid bearer token"),
    "wrong cookie": ({}, "nope", None, "invalid bearer token"),
    "wrong query": ({}, None, "nope", "invalid bearer token"),
    "other scheme": ({"Authorization": f"Basic {TOKEN}"}, None, None, "missing bearer token"),
    "wrong bearer, right cookie": ({"Authorization": "Bearer nope"}, TOKEN, None, None),
    "token prefix": ({"Authorization": f"Bearer {TOKEN[:-1]}"}, None, None, "invalid bearer token"),
}


def request(
    api: Api, path: str, headers: dict[str, str], cookie: str | None, query: str | None
) -> httpx.Response:
    api.client.cookies.clear()
    if cookie is not None:
        api.client.cookies.set(COOKIE, cookie)
    if query is not None:
        path += ("&" if "?" in path else "?") + f"token={query}"
    return api.client.get(path, headers=headers)


@pytest.mark.parametrize("path", GUARDED)
@pytest.mark.parametrize("name", CREDENTIALS)
def test_guarded_routes(secured: Api, path: str, name: str) -> None:
    headers, cookie, query, refused = CREDENTIALS[name]
    response = request(secured, path, headers, cookie, query)
    if refused is None:
        assert response.status_code != 401, response.text
        return
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="facemask"'
    assert response.json() == {"detail": refused, "message": f"401 Unauthorized: {refused}"}


@pytest.mark.parametrize("path", PUBLIC)
@pytest.mark.parametrize("name", ["nothing", "wrong bearer"])
def test_health_checks_need_no_token(secured: Api, path: str, name: str) -> None:
    headers, cookie, query, _ = CREDENTIALS[name]
    assert request(secured, path, headers, cookie, query).status_code == 200


def test_without_a_token_everything_is_open(api: Api) -> None:
    for path in [*GUARDED, *PUBLIC]:
        assert api.client.get(path).status_code != 401, path
    assert api.client.get("/").status_code == 200
    assert api.client.get(f"/?token={TOKEN}", follow_redirects=False).status_code == 200


@pytest.mark.parametrize(
    ("url", "cookie", "status", "message"),
    [
        ("/", None, 401, ""),
        ("/", "nope", 401, "wrong token"),
        ("/", TOKEN, 200, None),
        ("/?token=nope", None, 401, "wrong token"),
        ("/?token=nope", TOKEN, 401, "wrong token"),  # the form's answer wins
    ],
)
def test_dashboard_page(
    secured: Api, url: str, cookie: str | None, status: int, message: str | None
) -> None:
    if cookie:
        secured.client.cookies.set(COOKIE, cookie)
    page = secured.client.get(url, follow_redirects=False)
    assert page.status_code == status
    assert page.headers["content-type"].startswith("text/html")
    if message is None:
        assert 'id="alerts"' in page.text  # the dashboard itself
        assert page.headers["cache-control"] == "no-cache"
        return
    assert "<form" in page.text and page.headers["cache-control"] == "no-store"
    assert page.headers["www-authenticate"] == 'Bearer realm="facemask"'
    assert (f"<p>{message}</p>" in page.text) == bool(message)


@pytest.mark.parametrize(
    ("url", "location"),
    [
        (f"/?token={TOKEN}", "/"),
        (f"/?camera=lobby&token={TOKEN}", "/?camera=lobby"),
        (f"/?token={TOKEN}&a=1&a=2&empty=", "/?a=1&a=2"),
    ],
)
def test_signing_in_sets_the_cookie_and_drops_the_token_from_the_address(
    secured: Api, url: str, location: str
) -> None:
    signed = secured.client.get(url, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == location
    assert signed.headers["set-cookie"] == (
        f"{COOKIE}={TOKEN}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000"
    )
    assert signed.headers["cache-control"] == "no-store"
    assert secured.client.get("/api/cameras").status_code == 200  # the cookie now opens it


def test_openapi_documents_the_schemes_only_with_a_token(secured: Api, api: Api) -> None:
    schema = secured.client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    doc = schema.json()
    schemes = doc["components"]["securitySchemes"]
    assert all(s["description"] for s in schemes.values())
    assert {
        name: {k: v for k, v in s.items() if k != "description"} for name, s in schemes.items()
    } == {
        "bearer": {"type": "http", "scheme": "bearer"},
        "query": {"type": "apiKey", "in": "query", "name": "token"},
        "cookie": {"type": "apiKey", "in": "cookie", "name": COOKIE},
    }
    either = [{"bearer": []}, {"query": []}, {"cookie": []}]
    for path, ops in doc["paths"].items():
        expected = None if path in PUBLIC else either
        for method, op in ops.items():
            assert op.get("security") == expected, (method, path)
            assert ("401" in op["responses"]) == (path not in PUBLIC), (method, path)
    open_doc = api.client.get("/openapi.json").json()
    assert "securitySchemes" not in open_doc.get("components", {})
    assert all("security" not in op for ops in open_doc["paths"].values() for op in ops.values())


def test_token_auth_compares_whole_tokens() -> None:
    auth = TokenAuth(TOKEN)
    assert auth.accepts_token(TOKEN)
    for wrong in (None, "", TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
        assert not auth.accepts_token(wrong)
    with pytest.raises(ValueError):
        TokenAuth("")
