"""One XML document POSTed over HTTP/1.1, the transport of `vsphere` (SOAP) and `xenapi` (XML-RPC).

Both APIs answer one POST with one XML document. The exchange is written on the shared
connect/TLS steps of `exporter.checks.net`, as the `https` check is, rather than with an HTTP
client library: each phase is timed on its own, the one address tested is the one reported, a
rejected certificate still has its expiry recorded, and every read is bounded. The status line
and headers may take at most `STREAM_LIMIT` bytes, the body at most `MAX_BODY_BYTES`; a slow
peer is bounded by the run's deadline.

Each request goes on a connection of its own (`Connection: close`): a login and its logout
are separate connections, and session state travels in the session cookie or the session
reference, never in the connection.

XML from the peer is parsed with entity declarations and document type declarations refused
(`defusedxml`): a "billion laughs" or an external entity is a hostile answer, never a parse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from xml.etree import ElementTree

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

from exporter.checks.base import CheckContext, Target, quote_peer
from exporter.checks.https import USER_AGENT
from exporter.checks.net import STREAM_LIMIT, TlsSettings, close_stream, open_stream, start_tls
from exporter.errors import CheckFailure
from exporter.result import Phase, Result

MAX_BODY_BYTES = 1024 * 1024  # a vCenter's service content is about 5 KiB, XAPI's answers less
_STATUS_PREFIX = b"HTTP/1."


@dataclass(frozen=True, slots=True)
class HttpReply:
    """Status, headers (names in lower case, in the order sent) and the whole body."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str:
        """The first value of a header, or "" when it is absent."""
        return next((value for key, value in self.headers if key == name), "")

    def header_values(self, name: str) -> list[str]:
        """Every value of a header that may be repeated (`Set-Cookie`)."""
        return [value for key, value in self.headers if key == name]

    def describe(self) -> str:
        """`HTTP 404 Not Found (Server: nginx/1.22.1)`: what answered, for a detail."""
        server = self.header("server")
        head = f"HTTP {self.status} {printable(self.reason, 40)}".rstrip()
        return head + (f" (Server: {printable(server, 40)})" if server else "")


async def post_xml(
    context: CheckContext,
    target: Target,
    path: str,
    document: bytes,
    *,
    tls: TlsSettings | None,
    phase: Phase,
    headers: Mapping[str, str] | None = None,
) -> HttpReply:
    """POST `document` to `path` and read the whole answer.

    Connect and TLS are timed as their phases; the request and its answer as `phase` (the
    handshake of an unauthenticated call, the auth of a login). `tls` None means plain HTTP.
    """
    reader, writer = await open_stream(context, target)
    try:
        if tls is not None:
            await start_tls(context, target, reader, writer, tls)
        with context.phase(phase):
            writer.write(_request(target, path, document, tls, headers or {}))
            reply = await _read_reply(reader)
    finally:
        await close_stream(writer)
    context.debug("http reply", path=path, status=reply.status, bytes=len(reply.body))
    return reply


def _request(
    target: Target,
    path: str,
    document: bytes,
    tls: TlsSettings | None,
    extra_headers: Mapping[str, str],
) -> bytes:
    host = (tls.server_name if tls is not None else None) or target.host
    host = f"[{host}]" if ":" in host else host
    default_port = 443 if tls is not None else 80
    headers = {
        "Host": host if target.port in (None, default_port) else f"{host}:{target.port}",
        "User-Agent": USER_AGENT,
        "Content-Type": "text/xml; charset=utf-8",
        "Accept": "text/xml",
        "Content-Length": str(len(document)),
        "Connection": "close",
        **extra_headers,
    }
    lines = [f"POST {path} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + document


async def _read_reply(reader: asyncio.StreamReader) -> HttpReply:
    """Status line, headers and body, each bounded; a non-HTTP answer is named by its bytes."""
    status_line = await _read_line(reader, "status line")
    parts = status_line.rstrip(b"\r\n").split(b" ", 2)
    if not status_line.startswith(_STATUS_PREFIX) or len(parts) < 2 or not parts[1].isdigit():
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"not an HTTP response: {quote_peer(status_line, 40)}"
        )
    status = int(parts[1])
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    headers: list[tuple[str, str]] = []
    while True:
        line = await _read_line(reader, "headers")
        if line in (b"\r\n", b"\n"):
            break
        name, sep, value = line.partition(b":")
        if sep:
            headers.append(
                (name.strip().lower().decode("latin-1"), value.strip().decode("latin-1"))
            )
    reply = HttpReply(status, reason, tuple(headers), b"")
    body = await _read_body(reader, reply)
    return HttpReply(status, reason, reply.headers, body)


async def _read_line(reader: asyncio.StreamReader, what: str) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"response {what} exceed {STREAM_LIMIT // 1024} KiB"
        ) from exc
    except asyncio.IncompleteReadError as exc:
        if what == "status line" and exc.partial:
            return exc.partial  # named as what it is by the caller
        raise CheckFailure(
            Result.SERVICE_ERROR, f"connection closed in the response {what}"
        ) from exc


def _too_large() -> CheckFailure:
    return CheckFailure(
        Result.PROTOCOL_MISMATCH,
        f"response body larger than {MAX_BODY_BYTES // 1024} KiB, more than any answer "
        "to this request",
    )


async def _read_body(reader: asyncio.StreamReader, reply: HttpReply) -> bytes:
    """The body by chunks, by Content-Length or up to the close (RFC 9112 6.3), bounded."""
    if "chunked" in reply.header("transfer-encoding").lower():
        return await _read_chunked(reader)
    length = reply.header("content-length")
    try:
        if length:
            if not length.isdigit():
                raise CheckFailure(
                    Result.PROTOCOL_MISMATCH, f"invalid Content-Length {quote_peer(length, 20)}"
                )
            if int(length) > MAX_BODY_BYTES:
                raise _too_large()
            return await reader.readexactly(int(length))
        body = await reader.read(MAX_BODY_BYTES + 1)
        while body and len(body) <= MAX_BODY_BYTES:
            more = await reader.read(MAX_BODY_BYTES + 1 - len(body))
            if not more:
                break
            body += more
    except asyncio.IncompleteReadError as exc:
        raise CheckFailure(
            Result.SERVICE_ERROR, "connection closed in the middle of the body"
        ) from exc
    if len(body) > MAX_BODY_BYTES:
        raise _too_large()
    return body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    try:
        while True:
            size_line = await reader.readuntil(b"\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                return bytes(body)
            if len(body) + size > MAX_BODY_BYTES:
                raise _too_large()
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    except asyncio.IncompleteReadError as exc:
        raise CheckFailure(
            Result.SERVICE_ERROR, "connection closed in the middle of the body"
        ) from exc
    except (ValueError, asyncio.LimitOverrunError) as exc:
        raise CheckFailure(Result.PROTOCOL_MISMATCH, "malformed chunked body") from exc


def parse_xml(body: bytes, what: str) -> ElementTree.Element:
    """Parse a peer's XML with DTDs, entity declarations and external references refused.

    `what` names the expected document in the detail ("a SOAP envelope").
    """
    try:
        return defused_fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"refused XML with {type(exc).__name__} (entity or DTD) instead of {what}",
        ) from exc
    except ElementTree.ParseError as exc:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"not XML ({exc}) where {what} was expected"
        ) from exc


def printable(text: str, limit: int) -> str:
    """A peer's text without control characters and cut to `limit` characters, unquoted.

    For names and versions the peer reports (labels and details); `quote_peer` is for excerpts.
    """
    return "".join(char if char.isprintable() else " " for char in text).strip()[:limit]


def local_name(tag: str) -> str:
    """`{urn:vim25}about` → `about`: the element name without its namespace."""
    return tag.rpartition("}")[2]
