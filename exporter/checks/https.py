"""`https` and `http`: a web server answers a request with the expected status (and body).

The HTTP/1.1 exchange is written by hand on top of the shared connect/TLS steps so that each
phase is timed on its own and a hostile server is bounded: headers at most 64 KiB, the body read
only when a body pattern is configured and then at most `max_body_bytes`.

`https` can go through a forward proxy (`proxy: http://host:port`, or `proxy: env` for the
environment's `HTTPS_PROXY` and `NO_PROXY`): each request then travels in a CONNECT tunnel
(`exporter.checks.http_proxy`, which also classifies the proxy's refusals), a redirect's hop
included, unless `no_proxy` names its host.

A flow's own request settings (`headers`, `query`, `server_name`) go to the flow's own origin
only: a redirect to another origin is followed with none of them (see `_origin`). Every path or
URL shown in a detail or a debug line passes through `redact_url`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import quote, urljoin, urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from exporter import __version__
from exporter.checks import http_proxy
from exporter.checks.base import CheckContext, CheckSpec, Target
from exporter.checks.http_proxy import Proxy, ProxyCredentials
from exporter.checks.net import STREAM_LIMIT, TlsSettings, close_stream, open_stream, start_tls
from exporter.checks.tls import expiry_note
from exporter.errors import CheckFailure, CredentialError
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.secrets import Secret, SecretRef, redact_url, reveal

USER_AGENT = f"certero-flow-exporter/{__version__}"
_STATUS_LINE = re.compile(rb"^HTTP/(\d)\.(\d) (\d{3})(?: ([^\r\n]*))?\r\n")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
HTTP_UNAUTHORIZED = 401
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")  # field-vchar, SP, HTAB, obs-text


class HttpSettings(TlsSettings):
    """Options of the HTTP(S) check; the TLS options apply to `https` only."""

    path: str = Field(default="/", description="Request path (with query, shown redacted).")
    query: dict[str, Secret] = Field(
        default_factory=dict,
        description="Query parameters added to `path`; values inline, {file: …} or {env: …}.",
    )
    method: Literal["GET", "HEAD"] = "GET"
    headers: dict[str, Secret] = Field(
        default_factory=dict,
        description="Extra request headers; values inline, {file: …} or {env: …}.",
    )
    expected_status: list[int] = Field(
        default_factory=list, description="Accepted status codes; empty means any 2xx."
    )
    body_regex: str | None = Field(default=None, description="Pattern the body must contain.")
    follow_redirects: bool = False
    max_redirects: int = Field(default=5, ge=0, le=20)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0, le=64 * 1024 * 1024)

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError("must start with '/'")
        return path

    @field_validator("query")
    @classmethod
    def _not_in_path(cls, query: dict[str, Secret], info: ValidationInfo) -> dict[str, Secret]:
        written = _query_names(info.data.get("path", ""))
        twice = sorted(name for name in query if quote(name, safe="") in written)
        if twice:
            raise ValueError(f"parameter(s) {', '.join(twice)} also written in path")
        return query

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, headers: dict[str, Secret]) -> dict[str, Secret]:
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if isinstance(value, str) and not _HEADER_VALUE.fullmatch(value):
                raise ValueError(f"header {name}: {_BAD_HEADER_VALUE}")
        return headers

    @field_validator("body_regex")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern.encode())
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return pattern


_BAD_HEADER_VALUE = "the value has a line break, a NUL or a character outside Latin-1"
_NO_PROXY_ENTRY = re.compile(r"\*|[0-9A-Za-z_.:-]+(?:/\d{1,3})?")


class HttpsSettings(HttpSettings):
    """Options of the HTTPS check: the HTTP and TLS options, and a forward proxy."""

    proxy: str | None = Field(
        default=None,
        description=(
            "`http://host:port` of a forward proxy to tunnel through (CONNECT), or `env` for "
            "the environment's HTTPS_PROXY (and NO_PROXY); default: no proxy."
        ),
    )
    proxy_username: str | None = Field(default=None, description="Basic auth user at the proxy.")
    proxy_password: Secret | None = Field(
        default=None, description="Basic auth password at the proxy; inline, {file: …}, {env: …}."
    )
    no_proxy: list[str] = Field(
        default_factory=list,
        description="Hosts reached directly: names (with their subdomains), addresses, CIDRs, *.",
    )

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, proxy: str | None) -> str | None:
        if proxy is None or proxy == http_proxy.ENVIRONMENT:
            return proxy
        _, _, username, password = http_proxy.parse_proxy_url(proxy)
        if username is not None or password is not None:
            raise ValueError(
                "credentials in the proxy URL would be shown wherever the URL is: use "
                "proxy_username and proxy_password"
            )
        return proxy

    @field_validator("no_proxy")
    @classmethod
    def _no_proxy_entries(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            if not _NO_PROXY_ENTRY.fullmatch(entry):
                raise ValueError(f"{entry!r} is not a host, domain, address, CIDR or *")
        return [entry.lower() for entry in entries]

    @model_validator(mode="after")
    def _proxy_credentials(self) -> HttpsSettings:
        if (self.proxy_username is None) != (self.proxy_password is None):
            raise ValueError("proxy_username and proxy_password go together")
        if self.proxy_username is not None and ":" in self.proxy_username:
            raise ValueError("proxy_username cannot hold ':' (RFC 7617 basic authentication)")
        if self.proxy is None and (self.proxy_username is not None or self.no_proxy):
            raise ValueError("proxy_username, proxy_password and no_proxy need a proxy")
        return self


def _proxy(settings: HttpSettings) -> Proxy | None:
    """The proxy of this run (None: direct), the environment and the password read now."""
    if not isinstance(settings, HttpsSettings) or settings.proxy is None:
        return None
    credentials = None
    if settings.proxy_username is not None and settings.proxy_password is not None:
        credentials = ProxyCredentials(settings.proxy_username, reveal(settings.proxy_password))
    no_proxy = tuple(settings.no_proxy)
    if settings.proxy == http_proxy.ENVIRONMENT:
        return http_proxy.proxy_from_environment(http_proxy.environment(), no_proxy, credentials)
    host, port, _, _ = http_proxy.parse_proxy_url(settings.proxy)
    return Proxy(host, port, credentials, no_proxy, "proxy")


class _Response:
    """The parts of an HTTP response the check looks at."""

    def __init__(self, status: int, reason: str, headers: dict[str, str]) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers


async def run_https(target: Target, settings: HttpsSettings, context: CheckContext) -> CheckResult:
    """Request over TLS, through a proxy when one is configured."""
    return await _run(target, settings, context, use_tls=True)


async def run_http(target: Target, settings: HttpSettings, context: CheckContext) -> CheckResult:
    """Request over plain HTTP."""
    return await _run(target, settings, context, use_tls=False)


async def _run(
    target: Target, settings: HttpSettings, context: CheckContext, *, use_tls: bool
) -> CheckResult:
    headers = _revealed_headers(settings)  # references are read before any connection
    query = {name: reveal(value) for name, value in settings.query.items()}
    proxy = _proxy(settings)
    if proxy is not None:
        context.debug("proxy", proxy=proxy.name, source=proxy.source)
    origin = _origin(target, use_tls)
    path = _add_query(settings.path, query)
    hop_settings = settings
    via = ""
    for hop in range(settings.max_redirects + 1):
        hop_proxy = proxy if proxy is not None and not proxy.bypassed_for(target.host) else None
        if proxy is not None:
            context.debug("route", target=target, proxy=hop_proxy.name if hop_proxy else "bypassed")
        via = f" through proxy {hop_proxy.name}" if hop_proxy is not None else ""
        response, body = await _exchange(
            target, path, hop_settings, headers, context, use_tls=use_tls, proxy=hop_proxy
        )
        location = response.headers.get("location")
        if not (settings.follow_redirects and response.status in _REDIRECTS and location):
            break
        target, path, use_tls = _redirect(target, path, location, use_tls)
        own_origin = _origin(target, use_tls) == origin
        if own_origin:
            path = _add_query(path, query)
            hop_settings = settings
        else:
            hop_settings = settings.model_copy(update={"server_name": None})
            headers = {}
        context.debug(
            "following redirect",
            hop=hop + 1,
            location=redact_url(location),
            flow_settings="sent" if own_origin else "dropped (another origin)",
        )
    _require_status(response, settings)
    if settings.body_regex is not None and re.search(settings.body_regex.encode(), body) is None:
        raise CheckFailure(
            Result.SERVICE_ERROR,
            f"HTTP {response.status}: body does not match {settings.body_regex!r}",
        )
    server = response.headers.get("server", "")
    return context.ok(
        f"HTTP {response.status} {response.reason} for {settings.method} {redact_url(path)}"
        + (f" from {server}" if server else "")
        + via
        + expiry_note(context)
    )


def _origin(target: Target, use_tls: bool) -> tuple[bool, str, int | None]:
    """Scheme, host and port: where a flow's headers and query parameters may be sent.

    curl's rule (`Curl_auth_allowed_to_host` in lib/http.c, tightened after CVE-2018-1000007
    and CVE-2022-27776): credentials and custom `Authorization`/`Cookie` headers follow a
    redirect only when host (case-insensitive), port and protocol all equal the first
    request's; browsers' Fetch standard likewise drops `Authorization` on a cross-origin
    redirect. Here every configured header and query parameter counts as a credential, since
    any of them may carry one (an `X-Api-Key`, a `?token=`).
    """
    return (use_tls, target.host.lower(), target.port)


def _revealed_headers(settings: HttpSettings) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, secret in settings.headers.items():
        value = reveal(secret)
        if not _HEADER_VALUE.fullmatch(value):
            where = secret if isinstance(secret, SecretRef) else "inline"
            raise CredentialError(f"header {name} ({where}): {_BAD_HEADER_VALUE}")
        headers[name] = value
    return headers


def _query_names(path: str) -> set[str]:
    return {part.partition("=")[0] for part in path.partition("?")[2].split("&") if part}


def _add_query(path: str, query: Mapping[str, str]) -> str:
    """`path` with the configured parameters that it does not already carry appended."""
    written = _query_names(path)
    extra = [
        f"{quote(name, safe='')}={quote(value, safe='')}"
        for name, value in query.items()
        if quote(name, safe="") not in written
    ]
    if not extra:
        return path
    base, _, existing = path.partition("?")
    return f"{base}?{'&'.join([existing, *extra] if existing else extra)}"


async def _exchange(
    target: Target,
    path: str,
    settings: HttpSettings,
    headers: Mapping[str, str],
    context: CheckContext,
    *,
    use_tls: bool,
    proxy: Proxy | None,
) -> tuple[_Response, bytes]:
    if proxy is None:
        reader, writer = await open_stream(context, target)
    else:
        reader, writer = await http_proxy.open_tunnel(context, proxy, target)
    try:
        if use_tls:
            reopen = None
            if proxy is not None:
                reopen = http_proxy.reopener(proxy, target, context.address)
            await start_tls(context, target, reader, writer, settings, reopen=reopen)
        with context.phase(Phase.HANDSHAKE):
            writer.write(_request(target, path, settings, headers))
            response = await _read_head(reader)
            context.peer = _server_identity(response.headers.get("server", ""))
            context.debug("response", status=response.status, reason=response.reason)
            body = b""
            if settings.body_regex is not None and settings.method != "HEAD":
                body = await _read_body(reader, response.headers, settings.max_body_bytes)
    finally:
        await close_stream(writer)
    return response, body


def _request(
    target: Target, path: str, settings: HttpSettings, extra_headers: Mapping[str, str]
) -> bytes:
    host = settings.server_name or target.host
    host = f"[{host}]" if ":" in host else host
    headers = {
        "Host": f"{host}:{target.port}" if target.port not in (80, 443) else host,
        "User-Agent": USER_AGENT,
        "Accept": "*/*",
        "Connection": "close",
        **extra_headers,
    }
    lines = [f"{settings.method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_head(reader: asyncio.StreamReader) -> _Response:
    """Read the status line first, so a non-HTTP peer is named even if it then resets."""
    status_line = await _read_until(reader, b"\n", "status line")
    match = _STATUS_LINE.match(status_line)
    if match is None:
        excerpt = status_line[:40].decode("ascii", errors="replace").strip()
        if reader.at_eof() and status_line.startswith(b"HTTP/"):
            # an HTTP server that closed half-way through its status line (RFC 9112 4)
            raise CheckFailure(
                Result.SERVICE_ERROR, f"connection closed in the response status line {excerpt!r}"
            )
        raise CheckFailure(Result.PROTOCOL_MISMATCH, f"not an HTTP response: {excerpt!r}")
    head = b""
    if not status_line.endswith(b"\r\n\r\n"):
        head = await _read_until(reader, b"\r\n\r\n", "headers", allow_bare_end=True)
    headers: dict[str, str] = {}
    for raw in head.split(b"\r\n"):
        name, sep, value = raw.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    reason = (match.group(4) or b"").decode("latin-1")
    return _Response(int(match.group(3)), reason, headers)


async def _read_until(
    reader: asyncio.StreamReader, separator: bytes, what: str, *, allow_bare_end: bool = False
) -> bytes:
    """Bounded read up to a separator; what a closing peer sent so far is returned."""
    try:
        return await reader.readuntil(separator)
    except asyncio.LimitOverrunError as exc:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"response {what} exceed {STREAM_LIMIT // 1024} KiB"
        ) from exc
    except asyncio.IncompleteReadError as exc:
        if exc.partial or allow_bare_end:  # the caller validates what came before the close
            return exc.partial + b"\r\n"
        raise CheckFailure(
            Result.SERVICE_ERROR, "connection closed before an HTTP response"
        ) from exc


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], limit: int) -> bytes:
    """Read at most `limit` bytes of the body, de-chunked."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader, limit)
    length = headers.get("content-length", "")
    if length.isdigit():
        want = min(int(length), limit)
        try:
            return await reader.readexactly(want)
        except asyncio.IncompleteReadError as exc:
            raise CheckFailure(
                Result.SERVICE_ERROR, "connection closed in the middle of the body"
            ) from exc
    return await _read_to_close(reader, limit)


async def _read_to_close(reader: asyncio.StreamReader, limit: int) -> bytes:
    """A body delimited by the connection's close: read until EOF or `limit` bytes."""
    body = bytearray()
    while len(body) < limit:
        chunk = await reader.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    body = bytearray()
    while len(body) < limit:
        try:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                break
            body += await reader.readexactly(min(size, limit - len(body)))
            if len(body) >= limit:
                break
            await reader.readexactly(2)
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise CheckFailure(Result.PROTOCOL_MISMATCH, "malformed chunked body") from exc
    return bytes(body)


def _require_status(response: _Response, settings: HttpSettings) -> None:
    accepted = settings.expected_status
    if (response.status in accepted) if accepted else (200 <= response.status < 300):
        return
    expected = ", ".join(map(str, accepted)) if accepted else "2xx"
    detail = f"HTTP {response.status} {response.reason} (expected {expected})"
    if response.status == HTTP_UNAUTHORIZED:
        # RFC 9110 15.5.2: the request's credentials (an Authorization header) were refused,
        # or it carried none where the resource needs them: an account problem, not a down service
        raise CheckFailure(
            Result.AUTH_FAILED, f"{detail}: the server refused the credentials or wants some"
        )
    raise CheckFailure(Result.SERVICE_ERROR, detail)


def _redirect(target: Target, path: str, location: str, use_tls: bool) -> tuple[Target, str, bool]:
    base = f"{'https' if use_tls else 'http'}://{target}{path}"
    url = urlsplit(urljoin(base, location))
    if url.scheme not in ("http", "https") or not url.hostname:
        raise CheckFailure(
            Result.SERVICE_ERROR, f"redirect to unsupported location {redact_url(location)!r}"
        )
    secure = url.scheme == "https"
    port = url.port or (443 if secure else 80)
    new_path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    return Target(url.hostname, port), new_path, secure


def _server_identity(server: str) -> PeerInfo | None:
    """`nginx/1.22.1 (Debian)` → product nginx, version 1.22.1."""
    if not server:
        return None
    first = server.split(maxsplit=1)[0]
    product, _, version = first.partition("/")
    return PeerInfo(product=product[:64], version=version[:64])


HTTPS_SPEC = CheckSpec("https", HttpsSettings, run_https, "HTTPS request: TLS, status, body")
HTTP_SPEC = CheckSpec("http", HttpSettings, run_http, "Plain HTTP request: status, body")
