"""Socket steps shared by the checks: resolve, TCP connect, TLS, and one UDP request/reply.

Each step is timed as its own phase. Resolution picks one address and the check reports which
one, so a result always says which path it tested (no hidden happy-eyeballs). Platform-specific
code is confined to `_kernel_rtt_seconds` and `_connected_udp_socket`.

UDP has no connection to time: a UDP check records `resolve` (names only) and `handshake`, the
time from its first request to the reply. `handshake` already names a protocol's first
request/response exchange (an SSH banner, an HTTP request, an ICMP echo), so the bounded set of
phase labels stays as it is. The socket is connected, which sends nothing but fixes the peer:
the kernel then accepts replies from that peer only and reports the ICMP errors it sends back
(port unreachable as ECONNREFUSED), which is how "nothing listens" is told apart from silence.
"""

from __future__ import annotations

import _ssl
import asyncio
import functools
import socket
import ssl
import struct
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography import x509
from pydantic import Field

from exporter.checks.base import CheckContext, CheckSettings, Target
from exporter.errors import CheckFailure
from exporter.result import Phase, Result

Reopen = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
"""Opens another plain stream to the same destination (through the same proxy tunnel)."""
STREAM_LIMIT = 64 * 1024  # longest line/header block a peer may send before we call it hostile
# Reading a rejected certificate on a second connection may use at most this share of the time
# left, and never more than the cap: the verification failure itself must still be returned.
CERT_READ_SHARE = 0.5
CERT_READ_CAP_SECONDS = 1.0
_MIN_CERT_READ_SECONDS = 0.01  # below this a second handshake cannot finish; do not start one
_HOST_NAME_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
)  # letters, digits and hyphen (RFC 1123); underscore as in SRV-style and Windows host names


def dns_name_problem(name: str) -> str | None:
    """Why `name` cannot be sent to a DNS resolver (None: it can).

    Labels of 1 to 63 octets, at most 253 in all (RFC 1035), one optional trailing dot. The
    resolver's own encoder fails on these with a bare UnicodeError; this says which rule broke.
    """
    bare = name[:-1] if name.endswith(".") else name
    if not bare:
        return "the host name is empty"
    if len(bare) > 253:
        return f"the host name is {len(bare)} characters long (DNS allows at most 253)"
    for number, label in enumerate(bare.split("."), start=1):
        if not label:
            return "the host name has an empty label (a leading dot or two dots in a row)"
        if len(label) > 63:
            return f"label {number} is {len(label)} characters long (DNS allows at most 63)"
        bad = next((char for char in label if char not in _HOST_NAME_CHARACTERS), None)
        if bad is not None:
            return f"character {bad!r} is not allowed in a host name"
    return None


@dataclass(frozen=True, slots=True)
class ResolvedAddress:
    """The one address a check connects to."""

    family: socket.AddressFamily
    sockaddr: tuple[str, int]

    @property
    def ip(self) -> str:
        """The numeric address, for results and logs."""
        return str(self.sockaddr[0])


async def resolve(
    context: CheckContext, target: Target, kind: socket.SocketKind = socket.SOCK_STREAM
) -> ResolvedAddress:
    """Resolve the target to its first address (phase `resolve`; skipped for IP literals)."""
    port = target.port or 0
    family = target.literal_family
    if family is not None:  # an IP literal: no resolver round trip (and no thread-pool hop)
        address = ResolvedAddress(family=family, sockaddr=(target.host, port))
        context.address = target.host
        return address
    with context.phase(Phase.RESOLVE):
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(target.host, port, type=kind)
        except UnicodeError as exc:  # the resolver cannot encode the name (e.g. a redirect's)
            problem = dns_name_problem(target.host) or "the name cannot be encoded for DNS"
            name = target.host if len(target.host) <= 64 else f"{target.host[:60]}…"
            raise CheckFailure(
                Result.DNS_ERROR, f"name resolution failed for {name!r}: {problem}"
            ) from exc
    family, _, _, _, sockaddr = infos[0]
    address = ResolvedAddress(family=family, sockaddr=(str(sockaddr[0]), int(sockaddr[1])))
    context.address = address.ip
    context.debug("resolved", host=target.host, address=address.ip, candidates=len(infos))
    return address


async def connect_tcp(context: CheckContext, target: Target) -> socket.socket:
    """Resolve and open a TCP connection (phase `connect`), recording the kernel's RTT."""
    address = await resolve(context, target)
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    sock.setblocking(False)
    context.debug("connecting", address=address.ip, port=target.port)
    try:
        with context.phase(Phase.CONNECT):
            await asyncio.get_running_loop().sock_connect(sock, address.sockaddr)
    except BaseException:
        sock.close()
        raise
    context.tcp_rtt_seconds = _kernel_rtt_seconds(sock)
    context.debug("connected", address=address.ip, port=target.port)
    return sock


async def open_stream(
    context: CheckContext, target: Target
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect and wrap the socket in bounded asyncio streams."""
    sock = await connect_tcp(context, target)
    try:
        return await asyncio.open_connection(sock=sock, limit=STREAM_LIMIT)
    except BaseException:
        sock.close()
        raise


async def close_stream(writer: asyncio.StreamWriter) -> None:
    """Close without waiting on a peer that never acknowledges (abort, not graceful)."""
    transport = writer.transport
    transport.abort()


class TlsSettings(CheckSettings):
    """TLS options shared by every check that speaks TLS."""

    server_name: str | None = Field(
        default=None, description="SNI and name to verify; default: the target host."
    )
    ca_file: str | None = Field(default=None, description="PEM bundle of trusted CAs.")
    insecure_skip_verify: bool = Field(
        default=False, description="Accept any certificate (expiry is still reported)."
    )


@functools.lru_cache(maxsize=64)
def _ssl_context(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    """Build SSL contexts once: loading a CA store costs milliseconds per call."""
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def client_ssl_context(settings: TlsSettings) -> ssl.SSLContext:
    """The SSL context for a check's TLS settings (shared and cached)."""
    return _ssl_context(settings.ca_file, not settings.insecure_skip_verify)


async def start_tls(
    context: CheckContext,
    target: Target,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    settings: TlsSettings,
    *,
    reopen: Reopen | None = None,
) -> None:
    """Upgrade a connection to TLS (phase `tls`) and record the certificate expiry.

    When verification fails, the certificate is fetched once more on a second, unverified
    connection so that its expiry is still reported; the result stays a TLS failure. Python's
    ssl module (3.11) has no way to read the peer's chain after a failed handshake, hence the
    second connection. `reopen` opens that connection where a direct one would take another
    path (through a proxy's tunnel).
    """
    server_name = settings.server_name or target.host
    try:
        with context.phase(Phase.TLS):
            await writer.start_tls(client_ssl_context(settings), server_hostname=server_name)
    except ssl.SSLCertVerificationError:
        await record_unverified_certificate(context, target, server_name, reopen)
        raise
    ssl_object = writer.get_extra_info("ssl_object")
    if isinstance(ssl_object, ssl.SSLObject):
        record_certificates(context, presented_chain(ssl_object))
        context.debug("tls established", version=ssl_object.version(), cipher=ssl_object.cipher())


def presented_chain(tls: ssl.SSLObject | ssl.SSLSocket) -> list[bytes]:
    """The DER certificates the peer presented, leaf first (the leaf alone where the chain is
    not available).

    Python 3.13 offers `get_unverified_chain()`; 3.10 to 3.12 have the same method on the
    private `_sslobj`, returning certificate objects instead of bytes.
    """
    getter = getattr(tls, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(tls, "_sslobj", None), "get_unverified_chain", None)
    chain = getter() if getter is not None else None
    if chain:
        return [
            item if isinstance(item, bytes) else item.public_bytes(_ssl.ENCODING_DER)
            for item in chain
        ]
    leaf = tls.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def record_certificates(context: CheckContext, chain: list[bytes]) -> None:
    """Record the leaf's expiry and the earliest expiry of the presented chain.

    An intermediate that expires before the leaf breaks every client once it does, so the
    chain's earliest date is reported beside the leaf's (blackbox_exporter's
    `probe_ssl_earliest_cert_expiry` means the same).
    """
    expiries: list[float] = []
    for index, der in enumerate(chain):
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            context.debug("peer certificate could not be parsed", position=index)
            continue
        not_after = certificate.not_valid_after_utc
        if index == 0:
            context.tls_cert_expiry_seconds = not_after.timestamp()
        expiries.append(not_after.timestamp())
        context.debug(
            "certificate",
            position=index,
            subject=certificate.subject.rfc4514_string(),
            expires=not_after,
        )
    if expiries:
        context.tls_chain_expiry_seconds = min(expiries)


async def record_unverified_certificate(
    context: CheckContext, target: Target, server_name: str, reopen: Reopen | None = None
) -> None:
    """Read the certificate that failed verification; any error here is only logged.

    A peer may accept the second connection and then stall. The read is therefore bounded by
    a share of the time left, so it ends well before the check's own deadline and the
    verification failure, not a timeout, is what the check reports.
    """
    budget = min(context.remaining() * CERT_READ_SHARE, CERT_READ_CAP_SECONDS)
    if budget < _MIN_CERT_READ_SECONDS:
        context.debug("no time left to read the rejected certificate")
        return
    try:
        async with asyncio.timeout(budget):
            if reopen is None:
                _, writer = await asyncio.open_connection(
                    context.address or target.host,
                    target.port,
                    ssl=_ssl_context(None, verify=False),
                    server_hostname=server_name,
                    limit=STREAM_LIMIT,
                )
            else:
                _, writer = await reopen()
                try:
                    await writer.start_tls(
                        _ssl_context(None, verify=False), server_hostname=server_name
                    )
                except BaseException:
                    await close_stream(writer)
                    raise
            try:
                ssl_object = writer.get_extra_info("ssl_object")
                if isinstance(ssl_object, ssl.SSLObject):
                    record_certificates(context, presented_chain(ssl_object))
            finally:
                await close_stream(writer)
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        context.debug("could not read the rejected certificate", error=type(exc).__name__)


_TCP_INFO_RTT = struct.Struct("=I")
_TCP_INFO_RTT_OFFSET = 68  # struct tcp_info.tcpi_rtt, microseconds (linux/tcp.h)


def _kernel_rtt_seconds(sock: socket.socket) -> float | None:
    """The kernel's own RTT estimate of the connection (Linux TCP_INFO), free of loop queueing."""
    if sys.platform != "linux":
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return None
    if len(info) < _TCP_INFO_RTT_OFFSET + 4:
        return None
    (rtt_us,) = _TCP_INFO_RTT.unpack_from(info, _TCP_INFO_RTT_OFFSET)
    return float(rtt_us) / 1e6


# Linux socket options that Python 3.11's socket module does not name (linux/in.h, linux/in6.h).
_IP_RECVERR = 11
_IPV6_RECVERR = 25
MAX_RETRANSMISSIONS = 4
MAX_DATAGRAM_BYTES = 65_535  # the largest UDP payload a reply can carry


class UdpSettings(CheckSettings):
    """Options shared by every check that sends one UDP request and waits for its reply."""

    retransmissions: int = Field(
        default=0,
        ge=0,
        le=MAX_RETRANSMISSIONS,
        description=(
            "Requests sent again while no reply has come; the time left is split evenly between "
            "all requests and the detail of a timeout says how many were sent."
        ),
    )


@dataclass(frozen=True, slots=True)
class DatagramReply:
    """The first datagram the peer sent back, and how many requests it took."""

    data: bytes
    peer: tuple[str, int]
    requests_sent: int


async def exchange_datagram(
    context: CheckContext,
    target: Target,
    request: bytes,
    *,
    max_reply_bytes: int,
    retransmissions: int = 0,
) -> DatagramReply:
    """Send `request` to the target's UDP port and return the first reply (phase `handshake`).

    The wait ends at the check's deadline. With retransmissions the request is sent again each
    time an equal share of that time passes without a reply, and never more often than asked.
    ICMP port unreachable is `refused`; other ICMP errors (admin-prohibited, host or network
    unreachable) reach `classify` as `unreachable`; silence is `timeout`, and a reply longer
    than `max_reply_bytes` (the most the request can be answered with) is `protocol_mismatch`.
    """
    if not 0 <= retransmissions <= MAX_RETRANSMISSIONS:
        raise ValueError(f"retransmissions must be 0..{MAX_RETRANSMISSIONS}, not {retransmissions}")
    if not 0 < max_reply_bytes <= MAX_DATAGRAM_BYTES:
        raise ValueError(f"max_reply_bytes must be 1..{MAX_DATAGRAM_BYTES}, not {max_reply_bytes}")
    address = await resolve(context, target, socket.SOCK_DGRAM)
    sock = _connected_udp_socket(address)
    try:
        with context.phase(Phase.HANDSHAKE):
            reply = await _request_reply(
                context,
                sock,
                address,
                request,
                max_reply_bytes=max_reply_bytes,
                attempts=retransmissions + 1,
            )
    except Exception:
        context.timeout_detail = None  # the exchange is over; a later step's timeout is its own
        raise
    finally:
        sock.close()
    # A cancellation (the run's deadline) skips this line on purpose: the runner reports the
    # silence with the detail the exchange left behind.
    context.timeout_detail = None
    return reply


def _connected_udp_socket(address: ResolvedAddress) -> socket.socket:
    """A non-blocking UDP socket connected to `address`, reporting every ICMP error it gets.

    Connecting sends no packet. Without IP_RECVERR Linux reports only the "hard" ICMP errors
    (port unreachable, admin-prohibited) on a connected socket and drops host and network
    unreachable, which would then look like silence.
    """
    sock = socket.socket(address.family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if sys.platform == "linux":
            if address.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
        sock.connect(address.sockaddr)  # a route lookup only: returns at once, never blocks
    except BaseException:
        sock.close()
        raise
    return sock


async def _request_reply(
    context: CheckContext,
    sock: socket.socket,
    address: ResolvedAddress,
    request: bytes,
    *,
    max_reply_bytes: int,
    attempts: int,
) -> DatagramReply:
    """Send up to `attempts` requests, each followed by an equal share of the time left.

    `loop.sock_recv` on the connected socket is used rather than a datagram endpoint: one
    receive of at most `max_reply_bytes + 1` bytes per wait (the kernel drops the rest of a
    longer datagram, so its size is never held in memory), the ICMP error raised where the
    check awaits, and nothing read after the reply.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    budget = context.remaining()
    port = address.sockaddr[1]
    for sent in range(1, attempts + 1):
        context.timeout_detail = _silence_detail(budget, sent)
        try:
            await loop.sock_sendall(sock, request)
            context.debug("udp request sent", port=port, bytes=len(request), request=sent)
            async with asyncio.timeout_at(started + budget * sent / attempts):
                data = await loop.sock_recv(sock, max_reply_bytes + 1)
        except TimeoutError:
            continue
        except ConnectionRefusedError as exc:
            raise CheckFailure(
                Result.REFUSED,
                f"UDP port {port} unreachable: nothing listens there "
                "(ICMP port unreachable, or a firewall rejecting in its place)",
            ) from exc
        if len(data) > max_reply_bytes:
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH,
                f"UDP reply larger than {max_reply_bytes} bytes, "
                "more than any answer to this request",
            )
        context.debug("udp reply", port=port, bytes=len(data), requests=sent)
        return DatagramReply(data=data, peer=address.sockaddr, requests_sent=sent)
    raise CheckFailure(Result.TIMEOUT, _silence_detail(budget, attempts))


def _silence_detail(waited_seconds: float, sent: int) -> str:
    """The detail of a UDP request left unanswered: UDP cannot tell a filter from a mute service."""
    requests = "1 request" if sent == 1 else f"{sent} requests"
    return (
        f"no UDP reply within {round(waited_seconds, 2):g}s ({requests} sent): "
        "the port is filtered or the service does not answer this request"
    )
