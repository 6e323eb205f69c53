"""The dashboard's guards: an access token, CSRF tokens for forms, loopback-only Host names.

- **Access token** (``--token``): every request but the login page and the
  static assets must carry it, as ``Authorization: Bearer TOKEN`` or as the
  cookie the login form sets (an HMAC of the token under the process secret,
  never the token itself). Compared in constant time.
- **CSRF**: a random per-browser nonce in a cookie; each form carries
  ``HMAC(process secret, nonce)``. A POST whose form token does not match its
  cookie is refused (403): another site can make the browser send the cookie,
  but cannot read it to compute the token.
- The secret is made fresh when the process starts: restarting the dashboard
  signs everyone out and voids every open form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from starlette.requests import Request

CSRF_COOKIE = "durable_csrf"
AUTH_COOKIE = "durable_auth"
CSRF_FIELD = "csrf_token"
#: Paths reachable without the access token (the login form and its assets).
OPEN_PATHS = ("/login", "/static/")


def _mac(secret: bytes, purpose: str, value: str) -> str:
    return hmac.new(secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Guard:
    """The per-process secret and the access token (None: no token needed)."""

    token: str | None = None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    # ----------------------------------------------------------------- access token

    def is_open(self, path: str) -> bool:
        """Whether ``path`` is served without the access token."""
        return self.token is None or any(path == p or (p.endswith("/") and path.startswith(p)) for p in OPEN_PATHS)

    def auth_cookie(self) -> str:
        """The value of the cookie that stands for the token (useless elsewhere: the secret is per process)."""
        return _mac(self.secret, "auth", self.token or "")

    def token_matches(self, offered: str) -> bool:
        """Whether ``offered`` is the access token (constant time)."""
        return self.token is not None and hmac.compare_digest(offered.encode(), self.token.encode())

    def authorised(self, request: Request) -> bool:
        """Whether the request carries the token (bearer header or login cookie), or none is needed."""
        if self.token is None:
            return True
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return self.token_matches(header[7:].strip())
        cookie = request.cookies.get(AUTH_COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie, self.auth_cookie())

    # ----------------------------------------------------------------- CSRF

    @staticmethod
    def new_nonce() -> str:
        """A fresh CSRF nonce for a browser's cookie."""
        return secrets.token_urlsafe(24)

    def form_token(self, nonce: str) -> str:
        """The token forms carry for the browser whose CSRF cookie is ``nonce``."""
        return _mac(self.secret, "csrf", nonce)

    def csrf_ok(self, nonce: str | None, offered: str | None) -> bool:
        """Whether a form's ``offered`` token belongs with the cookie ``nonce`` (constant time)."""
        if not nonce or not offered:
            return False
        return hmac.compare_digest(offered, self.form_token(nonce))


def loopback_hosts(host: str) -> list[str] | None:
    """Host names to accept for a server bound to ``host``: loopback names when it is loopback, else any (None).

    A page of another site cannot then reach a localhost dashboard through a
    DNS name it rebinds to 127.0.0.1: its requests carry that name as Host.
    """
    if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        return ["127.0.0.1", "localhost", "::1", "[::1]", host]
    return None
