"""Basic auth and extra headers for every route, from a loaded web config.

bcrypt is slow on purpose (about 50-300 ms of CPU per check at the usual costs), so:
- it never runs on the event loop: a small thread pool does it (bcrypt releases the GIL), and
  at most `MAX_PENDING` checks wait for that pool — beyond that the answer is 503 at once, so a
  flood of wrong passwords cannot queue unbounded work;
- a successful check is cached, keyed by a keyed hash (HMAC with a per-process random key) of
  user, password and stored hash: Prometheus scraping every few seconds pays bcrypt once, a
  changed password or hash never matches an old entry, and the cache holds nothing from which
  a password could be guessed faster than through bcrypt;
- an unknown user costs the same bcrypt as a known one, and user names are compared in
  constant time, so response times do not reveal which users exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import bcrypt
from aiohttp import web

from exporter.webconfig import WebConfig, load_web_config, renew_tls

logger = logging.getLogger(__name__)

REALM = "certero-flow-exporter"
WORKERS = 1  # as exporter-toolkit: one bcrypt at a time, the other cores stay for checks
MAX_PENDING = 64
CACHE_SIZE = 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AuthBusy(Exception):
    """As many bcrypt checks wait as the exporter is willing to queue."""


class BasicAuth:
    """Verifies `Authorization: Basic` headers against bcrypt hashes, off the event loop."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        # Checked for unknown users, at the highest configured cost, so that they cost what a
        # known user costs.
        cost = max(int(hashed[4:6]) for hashed in self._users.values())
        self._decoy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))
        self._cache_key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="bcrypt")
        self._pending = 0

    async def verify(self, header: str | None) -> str | None:
        """The authenticated user, or None for a missing, malformed or wrong credential.

        Raises `AuthBusy` when the credential is not cached and the queue of checks is full.
        """
        credentials = _parse_basic(header)
        if credentials is None:
            return None
        user, password = credentials
        stored = self._lookup(user)
        key = self._key(user, password, stored or self._decoy)
        if key in self._verified:
            self._verified.move_to_end(key)
            return user
        if self._pending >= MAX_PENDING:
            raise AuthBusy
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            matches = await loop.run_in_executor(
                self._executor, _checkpw, password, stored or self._decoy
            )
        finally:
            self._pending -= 1
        if not matches or stored is None:
            return None
        self._verified[key] = None
        if len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)
        return user

    def close(self) -> None:
        """Stop the worker threads (waiting for a running check to finish)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _lookup(self, user: str) -> bytes | None:
        """The stored hash; every configured name is compared, in constant time."""
        found = None
        wanted = user.encode()
        for name, hashed in self._users.items():
            if hmac.compare_digest(name.encode(), wanted):
                found = hashed
        return found

    def _key(self, user: str, password: bytes, stored: bytes) -> bytes:
        message = b"\0".join(
            (str(len(user)).encode(), user.encode(), str(len(password)).encode(), password, stored)
        )
        return hmac.new(self._cache_key, message, hashlib.sha256).digest()


def _checkpw(password: bytes, stored: bytes) -> bool:
    """bcrypt refuses passwords over 72 bytes; such a password simply does not match."""
    try:
        return bcrypt.checkpw(password, stored)
    except ValueError:
        return False


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """`Basic base64(user:password)` → (user, password bytes); None when malformed."""
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user_bytes, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        user = user_bytes.decode()
    except UnicodeDecodeError:
        return None
    return user, password


class WebSecurity:
    """The web config in force: users and headers, swapped whole by a reload.

    A reload prepares the next state off the event loop (`prepare`: reading the file and
    building the bcrypt decoy both take tens of milliseconds) and applies it on the loop
    (`apply`), where the running TLS context is renewed in place; see `renew_tls`.
    """

    def __init__(self, config: WebConfig, auth: BasicAuth | None) -> None:
        self.config = config
        self.auth = auth

    @staticmethod
    def prepare(path: str) -> tuple[WebConfig, BasicAuth | None]:
        """Load the web config at `path` and the authenticator for its users (blocking)."""
        config = load_web_config(path)
        return config, BasicAuth(config.users) if config.users else None

    def apply(self, config: WebConfig, auth: BasicAuth | None) -> None:
        """Take over a prepared web config; `ConfigError` (all kept as it was) if it cannot be."""
        renew_tls(self.config, config)
        # The previous authenticator is dropped, not closed: a request may still be verifying
        # with it, and its worker thread ends once the last reference to it is gone.
        self.auth = auth
        self.config = dataclasses.replace(config, ssl_context=self.config.ssl_context)


SECURITY = web.AppKey("web_security", WebSecurity)


def secure_app(app: web.Application, web_config: WebConfig) -> WebSecurity:
    """Add the web config's headers to every response and guard every route with its users.

    Both are installed whatever the file holds now, so that a reload can add users or headers.
    """
    security = WebSecurity(web_config, BasicAuth(web_config.users) if web_config.users else None)
    app[SECURITY] = security

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(security.config.headers)

    app.on_response_prepare.append(add_headers)
    app.middlewares.append(_basic_auth_middleware)

    async def close_auth(app: web.Application) -> None:
        if security.auth is not None:
            await asyncio.get_running_loop().run_in_executor(None, security.auth.close)

    app.on_cleanup.append(close_auth)
    return security


@web.middleware
async def _basic_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 with a `WWW-Authenticate` challenge unless the request carries valid credentials."""
    auth = request.app[SECURITY].auth
    if auth is None:
        return await handler(request)
    try:
        user = await auth.verify(request.headers.get("Authorization"))
    except AuthBusy:
        return web.Response(
            status=503, text="too many authentications in progress\n", headers={"Retry-After": "1"}
        )
    if user is None:
        return web.Response(
            status=401,
            text="401 Unauthorized\n",
            headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
        )
    return await handler(request)


def exposure_warnings(host: str, web_config: WebConfig | None) -> list[str]:
    """What an operator must hear at start-up about who can reach this listener."""
    if _is_loopback(host):
        return []
    tls = web_config is not None and web_config.ssl_context is not None
    guarded = web_config is not None and (bool(web_config.users) or web_config.requires_client_cert)
    if not guarded:
        return [
            f"listening on {host} without authentication: /metrics and /probe are open to anyone "
            "who can reach the port; set basic_auth_users or client certificates in a file "
            "given with --web.config.file"
        ]
    if not tls:
        return [
            f"listening on {host} with basic auth but without TLS: passwords cross the network "
            "in clear text; set tls_server_config in the --web.config.file file"
        ]
    return []


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
