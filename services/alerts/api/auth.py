"""The API token as a FastAPI security dependency (bearer header, ``?token=``, cookie).

:func:`credentials` collects what a request presents through the three security schemes
(so the OpenAPI schema lists them); :class:`TokenAuth` is the dependency of every guarded
router: a missing or wrong token raises :class:`Unauthorized` (401, JSON, with a
``WWW-Authenticate`` challenge). The dashboard page itself answers with a sign-in form
instead, and turns ``/?token=...`` into the ``facemask_token`` cookie
(:func:`sign_in_page`, :func:`signed_in_redirect`).

With ``allow_anonymous_read`` (kiosks) reads (GET, HEAD) need no token; every other method
still does (with no token configured at all, nothing but reads is possible).
:class:`SecureCookies` adds ``Secure`` to the cookies of a response whenever the request
reached the user over TLS (:func:`over_tls`: https itself, ``X-Forwarded-Proto: https``
from a trusted proxy, or an https ``public_base_url``).
"""

from __future__ import annotations

import hmac
import html
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.responses import HTMLResponse, Response
from fastapi.security import APIKeyCookie, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

COOKIE = "facemask_token"
CHALLENGE = 'Bearer realm="facemask"'
COOKIE_MAX_AGE = 30 * 86400
READ_METHODS = frozenset({"GET", "HEAD"})

bearer_scheme = HTTPBearer(
    scheme_name="bearer",
    description="FACEMASK_ALERTS_API_TOKEN as Authorization: Bearer <token>",
    auto_error=False,
)
query_scheme = APIKeyQuery(
    name="token",
    scheme_name="query",
    description="the token as ?token= (EventSource and images cannot send headers)",
    auto_error=False,
)
cookie_scheme = APIKeyCookie(
    name=COOKIE,
    scheme_name="cookie",
    description="set by opening the dashboard with /?token=<token>",
    auto_error=False,
)

SIGN_IN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>facemask alerts - sign in</title>
<style>body{{font:16px system-ui,sans-serif;background:#0f172a;color:#e2e8f0;display:grid;
place-items:center;min-height:100vh;margin:0}}form{{background:#1e293b;padding:2rem;
border-radius:12px;display:grid;gap:.8rem;width:min(22rem,90vw)}}input,button{{font:inherit;
padding:.6rem;border-radius:8px;border:1px solid #334155}}button{{background:#2563eb;color:#fff;
border:0}}p{{margin:0;color:#fca5a5}}</style></head><body>
<form method="get" action="/"><strong>facemask alerts</strong>{message}
<input name="token" type="password" placeholder="API token" autofocus required>
<button type="submit">Sign in</button></form></body></html>"""


@dataclass(frozen=True, slots=True)
class Credentials:
    """The tokens a request presents (None: not presented that way)."""

    bearer: str | None = None
    query: str | None = None
    cookie: str | None = None

    def presented(self) -> bool:
        """Whether any token was presented."""
        return any(v is not None for v in (self.bearer, self.query, self.cookie))


async def credentials(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    query: Annotated[str | None, Security(query_scheme)],
    cookie: Annotated[str | None, Security(cookie_scheme)],
) -> Credentials:
    """Dependency: the request's tokens, from the three security schemes."""
    return Credentials(bearer.credentials if bearer else None, query, cookie)


class Unauthorized(HTTPException):
    """401 with the bearer challenge; answered as JSON by the API's error handler."""

    def __init__(self, detail: str) -> None:
        super().__init__(401, detail, headers={"WWW-Authenticate": CHALLENGE})


class TokenAuth:
    """Security dependency: the request must present the API token (any of the schemes).

    ``anonymous_read``: GET and HEAD need no token; other methods still do. ``token`` may
    be empty only then (a read-only API: nothing else is ever let in).
    """

    def __init__(self, token: str, *, anonymous_read: bool = False) -> None:
        if not token and not anonymous_read:
            raise ValueError("an empty token would let everyone in")
        self._token = token.encode()
        self.anonymous_read = anonymous_read

    def accepts_token(self, candidate: str | None) -> bool:
        """Whether ``candidate`` is the token (constant time; never with no token)."""
        if not self._token:
            return False
        return bool(candidate) and hmac.compare_digest((candidate or "").encode(), self._token)

    def accepts(self, creds: Credentials, method: str = "GET") -> bool:
        """Whether a ``method`` request with ``creds`` is let in (the dashboard page asks
        for its GET): any presented token is the token, or an anonymous read."""
        if self.anonymous_read and method.upper() in READ_METHODS and not creds.presented():
            return True
        return any(self.accepts_token(c) for c in (creds.bearer, creds.query, creds.cookie))

    async def __call__(
        self, request: Request, creds: Annotated[Credentials, Depends(credentials)]
    ) -> None:
        if self.accepts(creds, request.method):
            return
        if self.anonymous_read and request.method.upper() in READ_METHODS:
            return  # a wrong token on a read the kiosk could do without one
        if not self._token:
            raise Unauthorized("read-only API: no token is configured for changes")
        raise Unauthorized("invalid bearer token" if creds.presented() else "missing bearer token")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def over_tls(scope: dict[str, Any], trusted_proxies: Sequence[Network], public_https: bool) -> bool:
    """Whether the user reached this request over TLS: https itself, an https public
    address, or ``X-Forwarded-Proto: https`` (first hop) set by a trusted proxy."""
    if public_https or scope.get("scheme") in ("https", "wss"):
        return True
    client = scope.get("client")
    if not trusted_proxies or not client:
        return False
    try:
        peer = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    if not any(peer in net for net in trusted_proxies):
        return False
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-proto":
            return bool(value.split(b",")[0].strip().lower() == b"https")
    return False


def _secure(cookie: bytes) -> bool:
    return any(a.strip().lower() == b"secure" for a in cookie.split(b";")[1:])


class SecureCookies:
    """ASGI middleware: every ``Set-Cookie`` of a response to a request that came over TLS
    (:func:`over_tls`) gets the ``Secure`` attribute (so the token never travels in clear
    text afterwards); plain-HTTP answers are left alone (the cookie would not come back)."""

    def __init__(
        self, app: Any, *, trusted_proxies: Sequence[Network] = (), public_https: bool = False
    ) -> None:
        self.app = app
        self.trusted_proxies = tuple(trusted_proxies)
        self.public_https = public_https

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not over_tls(scope, self.trusted_proxies, self.public_https):
            await self.app(scope, receive, send)
            return

        async def secure_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (k, v + b"; Secure") if k == b"set-cookie" and not _secure(v) else (k, v)
                    for k, v in message.get("headers", [])
                ]
            await send(message)

        await self.app(scope, receive, secure_send)


def sign_in_page(message: str = "") -> HTMLResponse:
    """The dashboard's sign-in form (401), with an error ``message`` if any."""
    text = f"<p>{html.escape(message)}</p>" if message else ""
    return HTMLResponse(
        SIGN_IN_PAGE.format(message=text),
        status_code=401,
        headers={"WWW-Authenticate": CHALLENGE, "Cache-Control": "no-store"},
    )


def signed_in_redirect(location: str, token: str) -> Response:
    """303 to ``location`` setting the token cookie (HttpOnly, SameSite=Strict)."""
    cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE}"
    return Response(
        status_code=303,
        headers={"Location": location, "Set-Cookie": cookie, "Cache-Control": "no-store"},
    )
