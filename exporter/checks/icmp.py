"""`icmp`: the host answers an ICMP echo request.

All runs on one event loop share one ICMP socket per address family and socket kind. A socket
per run would not scale: a raw socket receives a copy of every ICMP packet the host gets, so N
concurrent runs each reading N replies cost N² packet reads. The shared socket is read once per
packet by a reader registered with the loop (`loop.add_reader`); it parses the packet and wakes
the one run waiting for it, found in a table of outstanding requests keyed by the ICMP echo
sequence number (RFC 792 "Echo or Echo Reply Message", RFC 4443 4.1 and 4.2).

Timing. The send time is taken just before `sendto`; on Linux the receive time is the kernel's
stamp on the packet (SO_TIMESTAMPNS), so a reply that waited in the socket while the loop ran
other checks is not reported as a slower network.

Socket kinds. An unprivileged "ping socket" (SOCK_DGRAM with IPPROTO_ICMP/ICMPV6, allowed by
`net.ipv4.ping_group_range`) is tried first and a raw socket (root or CAP_NET_RAW) second; the
kind that worked is remembered per family and named in the detail. The kernel sets a ping
socket's identifier to its own port, so requests are told apart by sequence number alone, and
sequence numbers are allocated uniquely per socket. A raw socket sends a random identifier of
its own, and a reply must carry it. A raw socket also sees ICMP errors: "destination
unreachable" and "time exceeded" are matched to the request through the original header they
quote (RFC 792; RFC 4443 3.1, 3.3), so a firewall's reject is told apart from silence. A ping
socket is never handed those errors, so there a reject looks like silence. Windows has raw
sockets only, and its default (proactor) event loop watches no sockets: there a task awaits
each packet (`loop.sock_recvfrom`) instead of the loop reader, and every mode uses a raw socket.

Matching. A reply counts only if its sequence number is outstanding, it comes from the address
the request went to and it carries the request's data unchanged; anything else (another
process's ping, a short or corrupt packet, a wrong checksum) is ignored. IPv4 raw sockets
deliver the IP header, which is stripped, and the ICMP checksum (RFC 1071) is verified here; the
kernel has verified it already for ping sockets and for ICMPv6, whose raw sockets deliver no IP
header.

Lifetime. A socket is opened by the first run that needs it and closed when no request has been
outstanding for `IDLE_CLOSE_SECONDS`, or when its event loop shuts down (`asyncio.run`, the
server's own runner and pytest all call `loop.shutdown_asyncgens()` first, which is the hook
used). A run that ends early, cancelled or timed out, removes its table entry on the way out.
At most `MAX_OUTSTANDING` requests (every 16-bit sequence number) wait on one socket; one more
run is `exporter_error`, as the exporter, not the host, ran out of room.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import random
import socket
import struct
import sys
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from exporter.checks.base import CheckContext, CheckSettings, CheckSpec, Target
from exporter.checks.net import ResolvedAddress, resolve
from exporter.errors import CheckFailure, ExporterFault
from exporter.result import CheckResult, Phase, Result

logger = logging.getLogger(__name__)

MAX_OUTSTANDING = 65_536  # every 16-bit sequence number of one socket
IDLE_CLOSE_SECONDS = 10.0  # an idle raw socket would still be handed every ICMP packet
RECEIVE_BYTES = 2048  # more than any answer to a request: IP header 60 + ICMP 8 + data 1400
PACKETS_PER_WAKEUP = 256  # then the loop runs other work; the reader is called again
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024  # a burst of thousands of replies fits
MAX_READ_ERRORS = 100  # in a row, on a loop without add_reader: then the socket is replaced
_SOL_RAW = 255  # Linux linux/socket.h; Python's socket module does not name it
_ICMP_FILTER = 1  # linux/icmp.h: a bit set per ICMPv4 type to drop
_ICMP6_FILTER = 1  # linux/icmpv6.h: a 256-bit map of ICMPv6 types to drop
_ECHO_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_IDENTIFIER_SEQUENCE = struct.Struct("!HH")
_CLOSED = "the shared ICMP socket was closed while the check waited"
# Winsock reports a missing privilege as WSAEACCES (10013) in errno.
_PERMISSION_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT, 10013})
# Windows has no ping sockets; as with icmplib there, every mode uses a raw socket.
_PING_SOCKETS = sys.platform != "win32"
# Linux: the kernel stamps each packet's arrival (SO_TIMESTAMPNS, asm-generic/socket.h; its
# control message carries a struct timespec of two C longs).
_KERNEL_TIMESTAMPS = sys.platform == "linux"
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@ll")
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size) if _KERNEL_TIMESTAMPS else 0
_MAX_TIMESTAMP_AGE_SECONDS = 5.0
_working_mode: dict[socket.AddressFamily, bool] = {}  # family → raw socket?


class IcmpSettings(CheckSettings):
    """Options of the ICMP echo check."""

    count: int = Field(default=1, ge=1, le=10, description="Echo requests per run.")
    payload_size: int = Field(default=56, ge=0, le=1400)
    privileged: Literal["auto", "raw", "unprivileged"] = Field(
        default="auto", description="Socket kind; auto tries a ping socket, then a raw one."
    )


async def run(target: Target, settings: IcmpSettings, context: CheckContext) -> CheckResult:
    """Send echo requests one after another; ok when at least one reply arrives."""
    address = await resolve(context, Target(target.host), socket.SOCK_DGRAM)
    endpoint = await shared_endpoint(address.family, settings.privileged)
    payload = echo_payload(settings.payload_size)
    rtts: list[float] = []
    last_error: CheckFailure | None = None
    for sent in range(settings.count):
        # Each echo gets an equal share of the time left, so one loss does not starve the rest.
        wait = context.remaining() / (settings.count - sent)
        context.debug("echo request", address=address.ip, socket=endpoint.mode, echo=sent + 1)
        try:
            with context.phase(Phase.HANDSHAKE):
                rtt = await endpoint.echo(address, payload, max(wait, 0.001))
        except CheckFailure as failure:
            last_error = failure
            if failure.result is not Result.TIMEOUT:
                break
            continue
        context.debug("echo reply", address=address.ip, rtt_ms=f"{rtt * 1000:.3f}")
        rtts.append(rtt)
    if not rtts:
        assert last_error is not None
        raise last_error
    lost = settings.count - len(rtts)
    return context.ok(
        f"echo reply from {address.ip} in {min(rtts) * 1000:.2f} ms"
        + (f", {lost}/{settings.count} lost" if lost else "")
        + f" ({endpoint.mode} socket)"
    )


@functools.lru_cache(maxsize=16)
def echo_payload(size: int) -> bytes:
    """The data an echo request carries and its reply must return unchanged (RFC 792)."""
    return bytes(index & 0xFF for index in range(size))


def icmp_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's complement sum."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@dataclass(frozen=True, slots=True)
class IcmpVersion:
    """The numbers that differ between ICMPv4 (RFC 792) and ICMPv6 (RFC 4443)."""

    name: str
    family: socket.AddressFamily
    protocol: int
    echo_request: int
    echo_reply: int
    unreachable: int
    time_exceeded: int
    unreachable_reasons: Mapping[int, str]


ICMPV4 = IcmpVersion(
    name="IPv4",
    family=socket.AF_INET,
    protocol=socket.IPPROTO_ICMP,
    echo_request=8,
    echo_reply=0,
    unreachable=3,
    time_exceeded=11,
    unreachable_reasons={  # RFC 792, RFC 1122 3.2.2.1, RFC 1812 5.2.7.1
        0: "network unreachable",
        1: "host unreachable",
        2: "protocol unreachable",
        3: "port unreachable",
        4: "fragmentation needed and DF set",
        5: "source route failed",
        6: "destination network unknown",
        7: "destination host unknown",
        8: "source host isolated",
        9: "network administratively prohibited",
        10: "host administratively prohibited",
        11: "network unreachable for the type of service",
        12: "host unreachable for the type of service",
        13: "communication administratively prohibited",
        14: "host precedence violation",
        15: "precedence cutoff in effect",
    },
)
ICMPV6 = IcmpVersion(
    name="IPv6",
    family=socket.AF_INET6,
    protocol=socket.IPPROTO_ICMPV6,
    echo_request=128,
    echo_reply=129,
    unreachable=1,
    time_exceeded=3,
    unreachable_reasons={  # RFC 4443 3.1
        0: "no route to destination",
        1: "communication administratively prohibited",
        2: "beyond scope of source address",
        3: "address unreachable",
        4: "port unreachable",
        5: "source address failed ingress/egress policy",
        6: "reject route to destination",
        7: "error in source routing header",
    },
)


_Answer = float | CheckFailure | ExporterFault  # a round-trip time, or why there is none


@dataclass(slots=True)
class _Request:
    """One echo request waiting for its answer: a round-trip time or an ICMP error."""

    destination: bytes  # packed address, to check where the answer came from
    payload: bytes
    waiter: asyncio.Future[_Answer]
    sent_at: float = 0.0


def _packed(family: socket.AddressFamily, ip: str) -> bytes:
    """The address as bytes, without an IPv6 scope (`fe80::1%eth0`), for comparisons."""
    return socket.inet_pton(family, ip.partition("%")[0])


@dataclass(eq=False)
class IcmpEndpoint:
    """One ICMP socket shared by every run on one event loop, with its outstanding requests."""

    loop: asyncio.AbstractEventLoop
    version: IcmpVersion
    sock: socket.socket
    raw: bool
    # A raw socket's identifier: not a secret, only unlikely to be another process's.
    identifier: int = field(default_factory=lambda: random.randrange(0x10000))  # noqa: S311
    outstanding: dict[int, _Request] = field(default_factory=dict)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _next_sequence: int = field(default_factory=lambda: random.randrange(0x10000))  # noqa: S311
    reads_by_task: bool = False  # the loop watches no sockets: a task awaits each packet
    _reader_task: asyncio.Task[None] | None = None
    _idle_handle: asyncio.TimerHandle | None = None
    _send_waiters: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def mode(self) -> str:
        """The socket kind as the detail names it."""
        return "raw" if self.raw else "ping"

    def start(self) -> None:
        """Register the reader with the loop; the socket is ready for requests afterwards.

        A loop that watches no sockets (Windows' proactor loop has no `add_reader`) gets a
        reader task instead, started by the first send: Windows refuses to receive on a raw
        socket that is not bound yet, and a send binds it.
        """
        if _KERNEL_TIMESTAMPS:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        try:
            self.loop.add_reader(self.sock.fileno(), self._read_packets)
        except NotImplementedError:
            self.reads_by_task = True

    async def echo(self, address: ResolvedAddress, payload: bytes, wait_seconds: float) -> float:
        """Send one echo request and return its round-trip time in seconds.

        Raises CheckFailure: `timeout` when no answer comes within `wait_seconds`,
        `unreachable` when a router or firewall sends an ICMP error back (raw sockets only).
        """
        if self.sock.fileno() < 0:
            raise ExporterFault(_CLOSED)
        sequence = self._allocate_sequence()
        request = _Request(
            destination=_packed(self.version.family, address.ip),
            payload=payload,
            waiter=self.loop.create_future(),
        )
        self.outstanding[sequence] = request
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        try:
            async with asyncio.timeout(wait_seconds):
                await self._send(self._echo_request(sequence, payload), address.sockaddr, request)
                if self.reads_by_task and self._reader_task is None:
                    self._reader_task = self.loop.create_task(self._read_by_task())
                answer = await request.waiter
        except TimeoutError as exc:
            raise CheckFailure(Result.TIMEOUT, f"no echo reply from {address.ip}") from exc
        finally:
            if self.outstanding.get(sequence) is request:
                del self.outstanding[sequence]
            if not self.outstanding and self.sock.fileno() >= 0:
                self._idle_handle = self.loop.call_later(IDLE_CLOSE_SECONDS, self._close_if_idle)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _allocate_sequence(self) -> int:
        """The next sequence number no outstanding request uses; the table is bounded."""
        if len(self.outstanding) >= MAX_OUTSTANDING:
            raise ExporterFault(
                f"{len(self.outstanding)} ICMP echo requests already wait on the shared "
                f"{self.version.name} socket, the most it can tell apart"
            )
        for _ in range(0x10000):  # ends early: fewer than 65,536 numbers are taken
            sequence = self._next_sequence
            self._next_sequence = (sequence + 1) & 0xFFFF
            if sequence not in self.outstanding:
                return sequence
        raise ExporterFault("no free ICMP sequence number")  # unreachable with the bound above

    def _echo_request(self, sequence: int, payload: bytes) -> bytes:
        """An echo request (RFC 792 / RFC 4443 4.1).

        The kernel fills in a ping socket's identifier and, for ICMPv6, the checksum (which
        covers an IPv6 pseudo-header only the kernel knows).
        """
        header = _ECHO_HEADER.pack(self.version.echo_request, 0, 0, self.identifier, sequence)
        if self.version.family == socket.AF_INET6:
            return header + payload
        checksum = icmp_checksum(header + payload)
        return header[:2] + checksum.to_bytes(2, "big") + header[4:] + payload

    async def _send(self, packet: bytes, sockaddr: tuple[str, int], request: _Request) -> None:
        """Send without blocking the loop, recording the send time in `request`.

        The time is taken just before the call: over loopback the reply arrives, and is
        stamped by the kernel, before `sendto` returns. A full send buffer waits until it
        drains; waiters are queued here because the loop keeps one writer callback per
        descriptor.
        """
        for _ in range(1000):  # each round waits for the buffer to drain; the timeout ends it
            if self.sock.fileno() < 0:
                raise ExporterFault(_CLOSED)
            request.sent_at = time.perf_counter()
            try:
                self.sock.sendto(packet, sockaddr)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                if exc.errno in (errno.ENOBUFS, errno.ENOMEM):
                    raise  # the host's shortage: classified exporter_error
                raise CheckFailure(
                    Result.UNREACHABLE, f"cannot send echo request: {exc.strerror or exc}"
                ) from exc
            else:
                return
            if self.reads_by_task:  # the loop watches no sockets, but sends asynchronously
                request.sent_at = time.perf_counter()
                await self.loop.sock_sendto(self.sock, packet, sockaddr)
                return
            writable = self.loop.create_future()
            if not self._send_waiters:
                self.loop.add_writer(self.sock.fileno(), self._wake_senders)
            self._send_waiters.append(writable)
            await writable
        raise CheckFailure(Result.UNREACHABLE, "cannot send echo request: send buffer stays full")

    def _wake_senders(self) -> None:
        self.loop.remove_writer(self.sock.fileno())
        waiters, self._send_waiters = self._send_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _read_packets(self) -> None:
        """Drain what the socket holds, a bounded number of packets per wake-up.

        On Linux each packet carries the kernel's receive time (SO_TIMESTAMPNS), so the time it
        waited in the socket while the loop ran other work does not count as round-trip time.
        """
        for _ in range(PACKETS_PER_WAKEUP):
            try:
                if _KERNEL_TIMESTAMPS:
                    data, ancillary, _, source = self.sock.recvmsg(RECEIVE_BYTES, _ANCILLARY_BYTES)
                else:
                    data, source = self.sock.recvfrom(RECEIVE_BYTES)
                    ancillary = []
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # a pending socket error; reported once, the next read goes on
                logger.debug("ICMP socket error family=%s error=%s", self.version.name, exc)
                return
            self.handle_packet(data, str(source[0]), _received_at(ancillary))

    async def _read_by_task(self) -> None:
        """Await packets one by one, for loops without `add_reader`; ends with the socket.

        After `MAX_READ_ERRORS` errors in a row the socket is closed, so that the next run
        opens a fresh one rather than waiting on a socket that no longer reads.
        """
        errors = 0
        while self.sock.fileno() >= 0 and errors < MAX_READ_ERRORS:
            try:
                data, source = await self.loop.sock_recvfrom(self.sock, RECEIVE_BYTES)
            except OSError as exc:
                errors += 1
                logger.debug("ICMP socket error family=%s error=%s", self.version.name, exc)
                continue
            errors = 0
            self.handle_packet(data, str(source[0]), time.perf_counter())
        self._reader_task = None
        self.close()

    def handle_packet(self, data: bytes, source: str, received_at: float) -> None:
        """Resolve the request this packet answers; ignore it if it answers none of ours."""
        message = self._icmp_message(data)
        if message is None or len(message) < 8:
            return
        kind, code, _, identifier, sequence = _ECHO_HEADER.unpack_from(message)
        if kind == self.version.echo_reply:
            self._echo_reply(message, identifier, sequence, source, received_at)
        elif kind in (self.version.unreachable, self.version.time_exceeded):
            self._error(message, kind, code, source)

    def _icmp_message(self, data: bytes) -> bytes | None:
        """The ICMP message of a received packet, or None when it is not a valid one.

        IPv4 raw sockets deliver the IP header (RFC 791 3.1: IHL in 32-bit words); a ping socket
        on some systems (macOS) does too. ICMPv4 types 64 to 79 are unassigned, so a first byte
        of 0x45 to 0x4F is an IP header.
        """
        if self.version.family != socket.AF_INET:
            return data  # ICMPv6: no IP header, the kernel checked the checksum
        if data and data[0] >> 4 == 4:
            header_length = (data[0] & 0x0F) * 4
            if header_length < 20 or len(data) < header_length or data[9] != socket.IPPROTO_ICMP:
                return None
            data = data[header_length:]
        if self.raw and icmp_checksum(data) != 0:
            return None
        return data

    def _echo_reply(
        self, message: bytes, identifier: int, sequence: int, source: str, received_at: float
    ) -> None:
        # a ping socket's identifier is the kernel's; it only hands this socket its own replies
        if self.raw and identifier != self.identifier:
            return
        request = self.outstanding.get(sequence)
        if request is None or request.waiter.done() or request.sent_at == 0.0:
            return
        if message[8:] != request.payload or self._packed_source(source) != request.destination:
            return
        # the two clocks behind `received_at` may disagree by a few microseconds
        request.waiter.set_result(max(received_at - request.sent_at, 0.0))

    def _error(self, message: bytes, kind: int, code: int, source: str) -> None:
        """Match an ICMP error by the echo request it quotes (RFC 792; RFC 4443 3.1, 3.3)."""
        quoted = _quoted_echo(self.version, message[8:])
        if quoted is None:
            return
        destination, identifier, sequence = quoted
        request = self.outstanding.get(sequence)
        if (
            identifier != self.identifier
            or request is None
            or request.waiter.done()
            or destination != request.destination
        ):
            return
        if kind == self.version.unreachable:
            reason = self.version.unreachable_reasons.get(code, f"destination unreachable {code}")
            detail = f"ICMP {reason}, sent by {source} (from a router or firewall)"
        else:
            detail = (
                f"ICMP time exceeded in transit, sent by {source} "
                "(from a router: the hop limit ran out, as in a routing loop)"
            )
        request.waiter.set_result(CheckFailure(Result.UNREACHABLE, detail))

    def _packed_source(self, source: str) -> bytes | None:
        try:
            return _packed(self.version.family, source)
        except OSError:
            return None

    def _close_if_idle(self) -> None:
        self._idle_handle = None
        if not self.outstanding:
            self.close()

    def close(self) -> None:
        """Unregister and close the socket.

        Requests still waiting end `exporter_error`: the idle close waits for an empty table,
        so that happens only when the loop shuts down or the socket stopped reading.
        """
        if self.sock.fileno() < 0:
            return
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        if not self.loop.is_closed():
            if self.reads_by_task:
                if self._reader_task is not None:
                    self._reader_task.cancel()
            else:
                self.loop.remove_reader(self.sock.fileno())
                if self._send_waiters:
                    self.loop.remove_writer(self.sock.fileno())
        self._reader_task = None
        waiters, self._send_waiters = self._send_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)  # the sender sees the closed socket and says so
        for request in self.outstanding.values():
            if not request.waiter.done():
                request.waiter.set_result(ExporterFault(_CLOSED))
        _forget(self)
        self.sock.close()
        self.closed.set()
        logger.debug("ICMP socket closed family=%s mode=%s", self.version.name, self.mode)


def _received_at(ancillary: list[tuple[int, int, bytes]]) -> float:
    """When the packet arrived, on the `time.perf_counter` clock.

    The kernel's timestamp is wall-clock time; only its age now is used, so a clock step
    matters only if it falls within that age, and an age outside 0 to 5 s is not trusted.
    """
    now = time.perf_counter()
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            age: float = time.time() - (seconds + nanoseconds / 1e9)
            if 0.0 <= age <= _MAX_TIMESTAMP_AGE_SECONDS:
                return now - age
    return now


def _quoted_echo(version: IcmpVersion, quoted: bytes) -> tuple[bytes, int, int] | None:
    """(destination, identifier, sequence) of the echo request an ICMP error quotes, if it is one.

    ICMPv4 errors quote the IP header and at least 8 bytes of the datagram (RFC 792); ICMPv6
    errors as much of the packet as fits (RFC 4443 3.1): the 40-byte IPv6 header (RFC 8200 3)
    and, with no extension header, the ICMPv6 echo header.
    """
    if version.family == socket.AF_INET:
        if len(quoted) < 20 or quoted[0] >> 4 != 4:
            return None
        header_length = (quoted[0] & 0x0F) * 4
        if header_length < 20 or quoted[9] != socket.IPPROTO_ICMP:
            return None
        destination = quoted[16:20]
    else:
        if len(quoted) < 40 or quoted[0] >> 4 != 6 or quoted[6] != socket.IPPROTO_ICMPV6:
            return None
        header_length = 40
        destination = quoted[24:40]
    if len(quoted) < header_length + 8 or quoted[header_length] != version.echo_request:
        return None
    identifier, sequence = _IDENTIFIER_SEQUENCE.unpack_from(quoted, header_length + 4)
    return destination, identifier, sequence


@dataclass(eq=False)
class _LoopEndpoints:
    """The shared sockets of one event loop, closed together when the loop shuts down."""

    endpoints: dict[tuple[socket.AddressFamily, bool], IcmpEndpoint] = field(default_factory=dict)
    shutdown_watch: AsyncGenerator[None, None] | None = None

    def close_all(self) -> None:
        for endpoint in list(self.endpoints.values()):
            endpoint.close()


_by_loop: dict[asyncio.AbstractEventLoop, _LoopEndpoints] = {}


async def shared_endpoint(family: socket.AddressFamily, wanted: str) -> IcmpEndpoint:
    """This loop's ICMP endpoint for `family`, opened on first use in the kind `wanted` allows."""
    loop = asyncio.get_running_loop()
    entry = _by_loop.get(loop)
    if entry is None:
        entry = await _watch_loop(loop)
    version = ICMPV6 if family == socket.AF_INET6 else ICMPV4
    if not _PING_SOCKETS:
        order = [True]
    elif wanted == "auto":
        order = [_working_mode[family]] if family in _working_mode else [False, True]
    else:
        order = [wanted == "raw"]
    for raw in order:
        endpoint = entry.endpoints.get((family, raw))
        if endpoint is not None:
            return endpoint
        sock = _open_socket(version, raw=raw)
        if sock is None:
            continue
        _working_mode[family] = raw
        endpoint = IcmpEndpoint(loop=loop, version=version, sock=sock, raw=raw)
        try:
            endpoint.start()
        except BaseException:
            sock.close()
            raise
        entry.endpoints[(family, raw)] = endpoint
        logger.debug("ICMP socket opened family=%s mode=%s", version.name, endpoint.mode)
        return endpoint
    raise CheckFailure(
        Result.SERVICE_ERROR,
        "no ICMP socket allowed here: run as root/CAP_NET_RAW or widen net.ipv4.ping_group_range",
    )


def endpoint_of(
    loop: asyncio.AbstractEventLoop, family: socket.AddressFamily, raw: bool
) -> IcmpEndpoint | None:
    """The open endpoint of that loop, family and kind, if any (for tests and benchmarks)."""
    entry = _by_loop.get(loop)
    return None if entry is None else entry.endpoints.get((family, raw))


async def _watch_loop(loop: asyncio.AbstractEventLoop) -> _LoopEndpoints:
    """Register `loop` and arrange for its sockets to close when the loop shuts down.

    An async generator started on the loop is closed by `loop.shutdown_asyncgens()`, which
    every runner calls before it closes the loop; its `finally` closes the sockets. Loops
    closed without that call are swept here, the next time a loop registers.
    """
    for stale in [other for other in _by_loop if other.is_closed()]:
        _by_loop.pop(stale).close_all()
    entry = _LoopEndpoints()
    _by_loop[loop] = entry

    async def close_at_shutdown() -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            entry.close_all()
            if _by_loop.get(loop) is entry:
                del _by_loop[loop]

    watch = close_at_shutdown()
    await anext(watch)
    entry.shutdown_watch = watch
    return entry


def _forget(endpoint: IcmpEndpoint) -> None:
    """Drop a closed endpoint from its loop's table, so the next run opens a new socket."""
    entry = _by_loop.get(endpoint.loop)
    key = (endpoint.version.family, endpoint.raw)
    if entry is not None and entry.endpoints.get(key) is endpoint:
        del entry.endpoints[key]


def _open_socket(version: IcmpVersion, *, raw: bool) -> socket.socket | None:
    """A non-blocking ICMP socket of that kind, or None when this process may not open one.

    Raw sockets get a kernel filter passing only echo replies and the two errors matched here
    (Linux ICMP_FILTER / ICMP6_FILTER), so the host's other ICMP traffic is dropped before it
    is queued to the socket, and a larger receive buffer, so a burst of replies is not dropped.
    """
    try:
        sock = socket.socket(
            version.family, socket.SOCK_RAW if raw else socket.SOCK_DGRAM, version.protocol
        )
    except OSError as exc:
        if exc.errno in _PERMISSION_ERRNOS or isinstance(exc, PermissionError):
            return None
        raise
    try:
        sock.setblocking(False)
        if raw and sys.platform == "linux":
            _pass_only(
                sock, version, (version.echo_reply, version.unreachable, version.time_exceeded)
            )
        _enlarge_receive_buffer(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def _pass_only(sock: socket.socket, version: IcmpVersion, kinds: tuple[int, ...]) -> None:
    """Install the kernel's ICMP type filter: a set bit drops that type (linux/icmp.h, icmpv6.h)."""
    with contextlib.suppress(OSError):  # an optimisation: without it, the reader ignores them
        if version.family == socket.AF_INET:
            dropped = 0xFFFFFFFF
            for kind in kinds:
                dropped &= ~(1 << kind)
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("=I", dropped))
        else:
            words = [0xFFFFFFFF] * 8
            for kind in kinds:
                words[kind >> 5] &= ~(1 << (kind & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("=8I", *words))


def _enlarge_receive_buffer(sock: socket.socket) -> None:
    """Ask for `RECEIVE_BUFFER_BYTES`: beyond net.core.rmem_max where allowed (CAP_NET_ADMIN)."""
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, force, RECEIVE_BUFFER_BYTES)
            return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)


SPEC = CheckSpec(
    "icmp", IcmpSettings, run, "ICMP echo request/reply", uses_port=False, transport="icmp"
)
