"""A fake Oracle Net (TNS) listener on loopback, written from the protocol description.

Oracle cannot be installed here, so this listener answers the connection phase the way a real
one does, and independent clients prove it: python-oracledb (thin) and nmap's
`oracle-tns-version` script (tests/checks/test_oracle_tns.py).

Sources: Wireshark's TNS dissector (`epan/dissectors/packet-tns.c`, `packet-tns.h`) for the
packet header (length 2, packet checksum 2, type 1, flags 1, header checksum 2; big endian) and
the CONNECT / ACCEPT / REFUSE bodies; python-oracledb `impl/thin/messages/connect.pyx` (connect
data longer than 230 bytes follows in a DATA packet; a REFUSE's text is searched for `(ERR=`)
and `impl/thin/protocol.pyx` (REFUSE body: two reason bytes, a 2-byte length, the text); nmap's
`oracle-tns-version.nse` and `nmap-service-probes` for the listener's REFUSE text
`(DESCRIPTION=(TMP=)(VSNNUM=n)(ERR=e)…)` and the reason byte 0x22.

It answers: `(COMMAND=ping)` and `(COMMAND=version)` with a REFUSE carrying `ERR=0`, the
version number and the alias; a CONNECT for a registered service with a RESEND (once per
connection, when asked to) and then an ACCEPT at protocol version 310; an unknown service with
`ERR=12514`; connect data naming no service with `ERR=12504`. After its answer it closes the
connection (a listener hands accepted sockets to a server process, which this fake has not).
"""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

HOST = "127.0.0.1"
HEADER = struct.Struct(">HHBBH")
CONNECT, ACCEPT, REFUSE, REDIRECT, DATA, RESEND, MARKER = 1, 2, 4, 5, 6, 11, 12
VSNNUM_19C = 318767104  # 19.0.0.0.0 (nmap's test table)
REFUSE_USER_REASON = 0x22  # what listeners send (nmap-service-probes matches "\x04\0\0\0\"\0")
ACCEPT_VERSION = 310  # python-oracledb logs in only from 315 on: it stops at DPY-3010
MAX_PACKET_BYTES = 8192
READ_TIMEOUT_S = 5.0
_SERVICE = re.compile(r"\(SERVICE_NAME=([^()]*)\)", re.IGNORECASE)
_COMMAND = re.compile(r"\(COMMAND=([^()]*)\)", re.IGNORECASE)


@dataclass
class TnsListener:
    """Where the fake listens and what it has been sent (connect data, one string per request)."""

    port: int
    alias: str
    vsnnum: int
    services: frozenset[str]
    resend_first: bool
    requests: list[str] = field(default_factory=list)
    host: str = HOST

    def answer(self, connect_data: str) -> list[bytes]:
        """The packets a listener sends back for one CONNECT's connect data."""
        command = _COMMAND.search(connect_data)
        if command is not None:
            return [
                refuse(f"(DESCRIPTION=(TMP=)(VSNNUM={self.vsnnum})(ERR=0)(ALIAS={self.alias}))")
            ]
        service = _SERVICE.search(connect_data)
        if service is None:
            return [refuse("(DESCRIPTION=(ERR=12504))\0")]
        if service.group(1).lower() not in self.services:
            return [
                refuse(
                    f"(DESCRIPTION=(TMP=)(VSNNUM={self.vsnnum})(ERR=12514)"
                    "(ERROR_STACK=(ERROR=(CODE=12514)(EMFI=4))))"
                )
            ]
        return [accept()]


def packet(packet_type: int, body: bytes, flags: int = 0) -> bytes:
    """A TNS packet: the 8-byte header (checksums 0, as every Oracle Net sender sets) and body."""
    return HEADER.pack(HEADER.size + len(body), 0, packet_type, flags, 0) + body


def refuse(text: str) -> bytes:
    """A REFUSE: user reason, system reason, text length, text."""
    data = text.encode("ascii")
    return packet(REFUSE, struct.pack(">BBH", REFUSE_USER_REASON, 0, len(data)) + data)


def accept() -> bytes:
    """An ACCEPT at protocol version 310 with no accept data (32 bytes, as nmap's probes see)."""
    body = struct.pack(">HHHHHHHBB", ACCEPT_VERSION, 0, 0x0800, 0x7FFF, 0x0100, 0, 32, 0x41, 0x41)
    return packet(ACCEPT, body.ljust(32 - HEADER.size, b"\0"))


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    header = _read_exactly(sock, HEADER.size)
    length, _, packet_type, _, _ = HEADER.unpack(header)
    if not HEADER.size <= length <= MAX_PACKET_BYTES:
        raise ConnectionError(f"not a TNS packet: {header!r}")
    return packet_type, _read_exactly(sock, length - HEADER.size)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client closed the connection")
        data += chunk
    return data


def _connect_data(sock: socket.socket, body: bytes) -> str:
    """The connect data of a CONNECT body: inline at its offset, or in the next DATA packet."""
    length, offset = struct.unpack_from(">HH", body, 16)
    start = offset - HEADER.size
    if len(body) >= start + length and length:
        return body[start : start + length].decode("ascii", errors="replace")
    packet_type, data = _read_packet(sock)
    if packet_type != DATA:
        raise ConnectionError(f"expected a DATA packet with the connect data, got {packet_type}")
    return data[2 : 2 + length].decode("ascii", errors="replace")  # after two data-flag bytes


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        listener = self.server.listener
        sock: socket.socket = self.request
        sock.settimeout(READ_TIMEOUT_S)
        resent = False
        with contextlib.suppress(OSError):
            while True:
                packet_type, body = _read_packet(sock)
                if packet_type != CONNECT:
                    return
                connect_data = _connect_data(sock, body)
                listener.requests.append(connect_data)
                answer = listener.answer(connect_data)
                if listener.resend_first and not resent and answer[0][4] == ACCEPT:
                    resent = True
                    sock.sendall(packet(RESEND, b""))
                    continue
                sock.sendall(b"".join(answer))
                return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, listener: TnsListener) -> None:
        self.listener = listener
        super().__init__((HOST, listener.port), _Handler)


@contextlib.contextmanager
def run_tns_listener(
    *,
    alias: str = "LISTENER",
    vsnnum: int = VSNNUM_19C,
    services: tuple[str, ...] = ("orclpdb1",),
    resend_first: bool = False,
) -> Iterator[TnsListener]:
    """Serve a fake listener on a free loopback port in a thread; stop it on exit."""
    listener = TnsListener(
        port=0,
        alias=alias,
        vsnnum=vsnnum,
        services=frozenset(name.lower() for name in services),
        resend_first=resend_first,
    )
    server = _Server(listener)
    listener.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="tns-listener", daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
