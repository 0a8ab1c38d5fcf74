"""HTTP CONNECT tunnels through a forward proxy, for the `https` check (RFC 9110 §9.3.6).

The exchange is written by hand, as the rest of the HTTP check is, so that each step is a phase
of its own and says which hop failed:

    resolve  the proxy's name (skipped for an address)
    connect  TCP to the proxy
    proxy    `CONNECT host:port HTTP/1.1` and the proxy's answer (RFC 9110 §9.3.6)
    tls      the destination's TLS handshake, inside the tunnel (as without a proxy)

`proxy` is a phase of its own because `handshake` already times the HTTP request of the check,
and a CONNECT timed there would be added to it: a slow proxy and a slow server would read the
same. aiohttp's `proxy=` cannot time these steps apart (its trace hooks report TCP, CONNECT and
TLS as one connection step), so it is not used.

How the proxy's answers are classified:

    2xx                         the tunnel is open
    407                         auth_failed  "proxy authentication required" / credentials rejected
    403                         refused      "proxy policy"
    502, 503, 504               what the proxy says about the upstream: squid's `X-Squid-Error`
                                (ERR_CONNECT_FAIL errno, ERR_DNS_FAIL, ERR_*_TIMEOUT; squid's
                                `errorpage.cc` and `errors/templates`) → unreachable, dns_error,
                                timeout; without it 504 → timeout, 502/503 → unreachable
    other statuses              service_error naming the status
    not HTTP                    protocol_mismatch: the port is no HTTP proxy
    proxy down or unreachable   unreachable (timeout when silent), the detail naming the proxy
                                and saying that the destination was not tried

A result's `address` is then the proxy's address (the only one the exporter connected to) and
its RTT the proxy's; the destination's address is known to the proxy alone.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import ipaddress
import os
import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from exporter.checks.base import CheckContext, Target, quote_peer
from exporter.checks.net import (
    STREAM_LIMIT,
    ResolvedAddress,
    connect_tcp,
    dns_name_problem,
    resolve,
)
from exporter.errors import CheckFailure, ExporterFault
from exporter.result import Phase, Result
from exporter.secrets import redact_url

ENVIRONMENT = "env"
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: ([^\r\n]*))?\r?\n$")
_SQUID_ERROR = re.compile(r"^(ERR_[A-Z_]+)(?: (\d+))?")
# curl reads the lower-case variables first (lib/url.c, detect_proxy): some tools set only one.
_PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY")
_NO_PROXY_VARIABLES = ("no_proxy", "NO_PROXY")
# squid's error page names (errors/templates/ERR_*) for an upstream it could not reach.
_SQUID_TIMEOUTS = frozenset({"ERR_CONNECT_TIMEOUT", "ERR_READ_TIMEOUT", "ERR_LIFETIME_EXP"})
_SQUID_DNS = frozenset({"ERR_DNS_FAIL"})

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True, slots=True)
class ProxyCredentials:
    """Basic credentials for the proxy (RFC 7617); the password is already revealed."""

    username: str
    password: str

    def header(self) -> str:
        """The `Proxy-Authorization` value (RFC 9110 §11.7.1)."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"

    def __repr__(self) -> str:
        return "ProxyCredentials(<redacted>)"


@dataclass(frozen=True, slots=True)
class Proxy:
    """The forward proxy a run uses: where it is, how to name it, and what bypasses it."""

    host: str
    port: int
    credentials: ProxyCredentials | None
    no_proxy: tuple[str, ...]
    source: str  # "proxy" or the environment variable it came from, for details

    @property
    def name(self) -> str:
        """`http://host:port`, the proxy as details name it (never with credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def bypassed_for(self, host: str) -> bool:
        """True when `host` matches a `no_proxy` entry, as curl matches them (lib/noproxy.c).

        `*` matches every host; a name matches itself and its subdomains (a leading dot is
        optional); an address matches an equal address or a network written as CIDR.
        """
        host = host.lower().rstrip(".")
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(
                host
            )
        except ValueError:
            address = None
        for entry in self.no_proxy:
            if entry == "*":
                return True
            if address is not None:
                try:
                    if address in ipaddress.ip_network(entry, strict=False):
                        return True
                except ValueError:
                    continue
            else:
                domain = entry.lstrip(".")
                if host == domain or host.endswith("." + domain):
                    return True
        return False


def parse_proxy_url(text: str) -> tuple[str, int, str | None, str | None]:
    """`http://host:port` → (host, port, username, password); ValueError says what is wrong.

    Only `http://` proxies: a TLS connection to the proxy itself (TLS inside TLS) is not
    supported. A scheme-less `host:port` is taken as http, as curl does.
    """
    if "://" not in text:
        text = f"http://{text}"
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise ValueError(f"{redact_url(text)!r} is not a proxy URL: {exc}") from None
    if url.scheme.lower() != "http":
        raise ValueError(
            f"{redact_url(text)!r}: only http:// proxies are supported (the tunnel to the "
            "destination is TLS; TLS to the proxy itself is not)"
        )
    if not url.hostname:
        raise ValueError(f"{redact_url(text)!r} names no proxy host")
    if port is None:
        raise ValueError(f"{redact_url(text)!r} names no port (http://host:port)")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise ValueError(f"{redact_url(text)!r}: a proxy URL has no path, query or fragment")
    host = url.hostname
    if ":" not in host and (problem := dns_name_problem(host)) is not None:
        raise ValueError(f"{redact_url(text)!r}: {problem}")
    username = unquote(url.username) if url.username is not None else None
    password = unquote(url.password) if url.password is not None else None
    return host, port, username, password


def parse_no_proxy(entries: str) -> tuple[str, ...]:
    """A `NO_PROXY` value (comma- or space-separated) as lower-case entries."""
    return tuple(entry.lower() for entry in re.split(r"[,\s]+", entries) if entry)


def proxy_from_environment(
    environ: Mapping[str, str],
    no_proxy: tuple[str, ...],
    credentials: ProxyCredentials | None,
) -> Proxy | None:
    """The proxy `HTTPS_PROXY` names (None when unset), with `NO_PROXY` added to `no_proxy`.

    Credentials in the variable's URL are used unless the settings give their own. A variable
    that cannot be used is the exporter's problem, not the flow's: `ExporterFault`.
    """
    variable = next((name for name in _PROXY_VARIABLES if environ.get(name)), None)
    extra = next((environ[name] for name in _NO_PROXY_VARIABLES if environ.get(name)), "")
    if variable is None:
        return None
    try:
        host, port, username, password = parse_proxy_url(environ[variable])
    except ValueError as exc:
        raise ExporterFault(f"environment variable {variable}: {exc}") from None
    if credentials is None and username is not None:
        credentials = ProxyCredentials(username, password or "")
    return Proxy(host, port, credentials, no_proxy + parse_no_proxy(extra), variable)


def environment() -> Mapping[str, str]:
    """The process environment, read at every run so that a changed variable applies."""
    return os.environ


async def open_tunnel(context: CheckContext, proxy: Proxy, target: Target) -> Stream:
    """Connect to the proxy (phases `resolve`, `connect`) and open a CONNECT tunnel (`proxy`).

    Returns the stream to the destination, ready for its TLS handshake.
    """
    what = f"proxy {proxy.name}"
    try:
        address = await _resolve_proxy(context, proxy)
        context.timeout_detail = (
            f"{what} did not accept a TCP connection in time; destination not tried"
        )
        stream = await _connect_proxy(context, proxy, address)
        context.timeout_detail = f"{what} did not answer CONNECT {_authority(target)} in time"
        try:
            with context.phase(Phase.PROXY):
                await _connect_exchange(context, proxy, target, stream)
        except BaseException:
            stream[1].transport.abort()
            raise
    except Exception:
        context.timeout_detail = None
        raise
    context.timeout_detail = None
    return stream


def reopener(proxy: Proxy, target: Target, address: str) -> Callable[[], Awaitable[Stream]]:
    """A second tunnel to the same destination, untimed (reading a rejected certificate)."""

    async def reopen() -> Stream:
        stream = await asyncio.open_connection(address, proxy.port, limit=STREAM_LIMIT)
        try:
            reader, writer = stream
            writer.write(_connect_request(proxy, target))
            try:
                status, _, _ = await _read_answer(reader, proxy)
            except CheckFailure as exc:
                raise ConnectionError(exc.detail) from exc
            if not 200 <= status < 300:
                raise ConnectionRefusedError(errno.ECONNREFUSED, f"CONNECT answered {status}")
        except BaseException:
            stream[1].transport.abort()
            raise
        return stream

    return reopen


async def _resolve_proxy(context: CheckContext, proxy: Proxy) -> ResolvedAddress:
    try:
        return await resolve(context, Target(proxy.host, proxy.port))
    except socket.gaierror as exc:
        reason = exc.strerror or str(exc)
        raise CheckFailure(
            Result.DNS_ERROR,
            f"proxy {proxy.name}: name resolution failed ({reason}); destination not tried",
        ) from exc
    except CheckFailure as exc:
        raise CheckFailure(exc.result, f"proxy {proxy.name}: {exc.detail}") from exc


async def _connect_proxy(context: CheckContext, proxy: Proxy, address: ResolvedAddress) -> Stream:
    """TCP to the proxy; a failure is `unreachable` naming the proxy, never the destination."""
    try:
        sock = await connect_tcp(context, Target(address.ip, proxy.port))
    except ConnectionRefusedError as exc:
        raise CheckFailure(
            Result.UNREACHABLE,
            f"proxy {proxy.name} refused the connection (proxy down or not listening there); "
            "destination not tried",
        ) from exc
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            raise  # the exporter's own shortage: classified as such
        reason = exc.strerror or str(exc)
        raise CheckFailure(
            Result.UNREACHABLE,
            f"proxy {proxy.name} unreachable ({reason}); destination not tried",
        ) from exc
    try:
        return await asyncio.open_connection(sock=sock, limit=STREAM_LIMIT)
    except BaseException:
        sock.close()
        raise


def _authority(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.port}"


def _connect_request(proxy: Proxy, target: Target) -> bytes:
    authority = _authority(target)
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.credentials is not None:
        lines.append(f"Proxy-Authorization: {proxy.credentials.header()}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _connect_exchange(
    context: CheckContext, proxy: Proxy, target: Target, stream: Stream
) -> None:
    reader, writer = stream
    writer.write(_connect_request(proxy, target))
    context.debug(
        "CONNECT sent",
        proxy=proxy.name,
        authority=_authority(target),
        credentials="sent" if proxy.credentials is not None else "none",
    )
    status, reason, headers = await _read_answer(reader, proxy)
    context.debug("proxy answered", status=status, reason=quote_peer(reason))
    if 200 <= status < 300:
        return
    raise CheckFailure(*_refusal(proxy, target, status, reason, headers))


async def _read_answer(
    reader: asyncio.StreamReader, proxy: Proxy
) -> tuple[int, str, dict[str, str]]:
    """The status and headers of the proxy's answer; its body (an error page) is not read."""
    try:
        line = await reader.readuntil(b"\n")
        match = _STATUS_LINE.match(line)
        if match is None:
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH,
                f"{proxy.name} is not an HTTP proxy: it answered CONNECT with {quote_peer(line)}",
            )
        head = await _read_header_lines(reader)
    except asyncio.LimitOverrunError as exc:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"proxy {proxy.name}: answer to CONNECT exceeds {STREAM_LIMIT // 1024} KiB",
        ) from exc
    except ConnectionError as exc:  # a reset: the proxy went away without an answer
        raise CheckFailure(
            Result.SERVICE_ERROR,
            f"proxy {proxy.name} closed the connection before answering CONNECT",
        ) from exc
    except asyncio.IncompleteReadError as exc:
        if exc.partial and not exc.partial.startswith(b"HTTP/"):
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH,
                f"{proxy.name} is not an HTTP proxy: it answered CONNECT with "
                f"{quote_peer(exc.partial)}",
            ) from exc
        raise CheckFailure(
            Result.SERVICE_ERROR,
            f"proxy {proxy.name} closed the connection before answering CONNECT",
        ) from exc
    headers: dict[str, str] = {}
    for raw in head:
        name, sep, value = raw.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return int(match.group(1)), (match.group(2) or b"").decode("latin-1").strip(), headers


async def _read_header_lines(reader: asyncio.StreamReader) -> list[bytes]:
    """Header lines up to the empty line, at most STREAM_LIMIT bytes in all."""
    lines: list[bytes] = []
    total = 0
    while (line := await reader.readuntil(b"\n")) not in (b"\r\n", b"\n"):
        total += len(line)
        if total > STREAM_LIMIT:
            raise asyncio.LimitOverrunError("header block too long", total)
        lines.append(line.rstrip(b"\r\n"))
    return lines


def _refusal(  # noqa: PLR0911 - one branch per kind of answer, most specific first
    proxy: Proxy, target: Target, status: int, reason: str, headers: Mapping[str, str]
) -> tuple[Result, str]:
    """The class and detail of a CONNECT the proxy did not open."""
    authority = _authority(target)
    squid = _SQUID_ERROR.match(headers.get("x-squid-error", ""))
    said = f"{status} {quote_peer(reason, 40)[1:-1]}".strip()
    if squid is not None:
        said += f", {squid.group(1)}"
    answer = f"proxy {proxy.name} answered CONNECT {authority} with {said}"
    if status == 407:
        if proxy.credentials is None:
            return Result.AUTH_FAILED, f"proxy authentication required: {answer}"
        return Result.AUTH_FAILED, f"proxy authentication failed (credentials rejected): {answer}"
    if status == 403:
        return Result.REFUSED, f"proxy policy refuses this destination: {answer}"
    if status not in (502, 503, 504):
        return Result.SERVICE_ERROR, answer
    code = squid.group(1) if squid is not None else ""
    number = squid.group(2) if squid is not None else None
    if code in _SQUID_DNS:
        return Result.DNS_ERROR, f"the proxy could not resolve {target.host}: {answer}"
    if code in _SQUID_TIMEOUTS or (not code and status == 504):
        return Result.TIMEOUT, f"the proxy timed out reaching {authority}: {answer}"
    why = f" ({os.strerror(int(number))})" if number and int(number) > 0 else ""
    return Result.UNREACHABLE, f"the proxy could not reach {authority}{why}: {answer}"
