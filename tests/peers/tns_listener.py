"""A fake Oracle Net (TNS) listener and server process on loopback, written from the protocol.

Oracle cannot be installed here, so this fake answers the connection phase the way a real
listener does and the first round trips of a server process up to a refused login, and
independent clients prove it: python-oracledb (thin, sync and asyncio) and nmap's
`oracle-tns-version` script (tests/checks/test_oracle_tns.py).

Sources: Wireshark's TNS dissector (`epan/dissectors/packet-tns.c`, `packet-tns.h`) for the
packet header (length 2, packet checksum 2, type 1, flags 1, header checksum 2; big endian) and
the CONNECT / ACCEPT / REFUSE bodies; python-oracledb `impl/thin/messages/connect.pyx` (connect
data longer than 230 bytes follows in a DATA packet; a REFUSE's text is searched for `(ERR=`;
the ACCEPT fields it reads: version, options, 10 skipped bytes, the NSI flags, 9 skipped bytes,
the 32-bit SDU) and `impl/thin/protocol.pyx` (REFUSE body: two reason bytes, a 2-byte length,
the text; after the ACCEPT: protocol message, data-types message, authentication phase one);
`impl/thin/buffer.pyx` (from version 315 on the header's first four bytes are the length; a DATA
packet starts with two data-flag bytes; `ub2`/`ub4` integers are a length byte and big-endian
digits); `impl/thin/messages/protocol.pyx`, `messages/data_types.pyx` and `messages/base.pyx`
(`_process_protocol_info`, `DataTypesMessage._process_message`, `_process_error_info`: the
fields of the three answers); `impl/thin/capabilities.pyx` (the server's compile capabilities
set the TTC field version, which decides the error layout; without the end-of-response flag in
the ACCEPT, an ERROR message ends the response); constants.pxi (message types 1, 2, 3, 4;
function 118 is authentication phase one); nmap's `oracle-tns-version.nse` and
`nmap-service-probes` for the listener's REFUSE text `(DESCRIPTION=(TMP=)(VSNNUM=n)(ERR=e)…)`
and the reason byte 0x22.

It answers: `(COMMAND=ping)` and `(COMMAND=version)` with a REFUSE carrying `ERR=0`, the
version number and the alias, then closes; an unknown service with `ERR=12514`; connect data
naming no service with `ERR=12504`. A CONNECT for a registered service gets a RESEND (once per
connection, when asked to) and then an ACCEPT at protocol version 315; on that connection it
answers the protocol negotiation (AL32UTF8, TTC field version 0), the data-type negotiation
(an empty list) and then the first authentication message, whoever logs in, with an ERROR
message carrying ORA-01017: the fake knows no user. (A real server first answers phase one
with its challenge and refuses phase two; the driver reads an ERROR message the same way in
either answer, `Message._process_error_info`, so the fake stops one round trip earlier.) With `accept_version` below 315 (an Oracle
11g listener) it closes after the ACCEPT, where thin mode stops with DPY-3010.
"""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.peers.threaded import serving

HOST = "127.0.0.1"
HEADER = struct.Struct(">HHBBH")
LARGE_HEADER = struct.Struct(">IBBH")  # after an ACCEPT at 315 or later
CONNECT, ACCEPT, REFUSE, REDIRECT, DATA, RESEND, MARKER = 1, 2, 4, 5, 6, 11, 12
VSNNUM_19C = 318767104  # 19.0.0.0.0 (nmap's test table)
REFUSE_USER_REASON = 0x22  # what listeners send (nmap-service-probes matches "\x04\0\0\0\"\0")
ACCEPT_VERSION = 315  # 12.1: the oldest python-oracledb thin mode logs in to
SDU = 8192
MAX_PACKET_BYTES = SDU
MAX_TTC_MESSAGES = 4  # protocol, data types, authentication: then the fake has answered
TTC_PROTOCOL, TTC_DATA_TYPES, TTC_FUNCTION, TTC_ERROR = 1, 2, 3, 4
CHARSET_AL32UTF8, NCHARSET_AL16UTF16 = 873, 2000
ORA_INVALID_LOGON = 1017
INVALID_LOGON_TEXT = "ORA-01017: invalid username/password; logon denied\n"
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
    accept_version: int
    requests: list[str] = field(default_factory=list)
    ttc: list[tuple[int, int]] = field(default_factory=list)
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
        return [accept(self.accept_version)]


def packet(packet_type: int, body: bytes, flags: int = 0) -> bytes:
    """A TNS packet: the 8-byte header (checksums 0, as every Oracle Net sender sets) and body."""
    return HEADER.pack(HEADER.size + len(body), 0, packet_type, flags, 0) + body


def refuse(text: str) -> bytes:
    """A REFUSE: user reason, system reason, text length, text."""
    data = text.encode("ascii")
    return packet(REFUSE, struct.pack(">BBH", REFUSE_USER_REASON, 0, len(data)) + data)


def accept(version: int = ACCEPT_VERSION) -> bytes:
    """An ACCEPT at a protocol version (315 unless told) with no accept data.

    Body: version, service options (no out-of-band breaks), 16-bit SDU and TDU, hardware byte
    order, accept data length and offset, two NSI flag bytes (no Native Network Encryption
    required), then from offset 24 the 32-bit SDU that versions 315 and later read.
    """
    head = struct.pack(">HHHHHHHBB", version, 0x0800, SDU, 0xFFFF, 0x0100, 0, 36, 0x41, 0x41)
    return packet(ACCEPT, head.ljust(24, b"\0") + struct.pack(">I", SDU))


def data(message: bytes) -> bytes:
    """A DATA packet after an ACCEPT at 315 or later: a 4-byte length, and two data-flag bytes."""
    body = b"\0\0" + message
    return LARGE_HEADER.pack(LARGE_HEADER.size + len(body), DATA, 0, 0) + body


def ub(value: int) -> bytes:
    """A TTC variable-length unsigned integer: a length byte, then the big-endian bytes."""
    digits = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes([len(digits)]) + digits


def protocol_reply() -> bytes:
    """The answer to the protocol negotiation: version 6, a banner, AL32UTF8, no elements, an
    11-byte FDO naming AL16UTF16 as national character set, and capability arrays of zeros
    (TTC field version 0: the oldest error layout, no end-of-response marker)."""
    # the driver reads the national character set at 6 + fdo[5] + fdo[6] + 3: bytes 9 and 10
    fdo = bytes(9) + NCHARSET_AL16UTF16.to_bytes(2, "big")
    compile_caps, runtime_caps = bytes(64), bytes(16)
    return (
        bytes([TTC_PROTOCOL, 6, 0])
        + b"Linux x86_64\0"
        + struct.pack("<HBH", CHARSET_AL32UTF8, 0, 0)
        + struct.pack(">H", len(fdo))
        + fdo
        + bytes([len(compile_caps)])
        + compile_caps
        + bytes([len(runtime_caps)])
        + runtime_caps
    )


def data_types_reply() -> bytes:
    """The answer to the data-type negotiation: an empty list (its 0 terminator)."""
    return bytes([TTC_DATA_TYPES]) + b"\0\0"


def error_reply(code: int, text: str) -> bytes:
    """An ERROR message (TTC field version 0): end-of-call status, the row and cursor fields all
    zero, the error number, no batch errors, the extended error number, the message text."""
    encoded = text.encode()
    return (
        bytes([TTC_ERROR])
        + b"\0" * 3  # call status, end-to-end sequence number, current row
        + ub(code)
        + b"\0" * 16  # array errors (2), cursor, position, 6 flags, rowid (5), OS error
        + b"\0" * 5  # statement and call numbers, padding, success iterations, oerrdd
        + b"\0" * 3  # batch error codes, offsets, messages: none
        + ub(code)
        + b"\0"  # row count
        + bytes([len(encoded)])
        + encoded
    )


def _read_packet(sock: socket.socket, *, large: bool = False) -> tuple[int, bytes]:
    header = _read_exactly(sock, HEADER.size)
    if large:
        length, packet_type, _, _ = LARGE_HEADER.unpack(header)
    else:
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
                if answer[0][4] == ACCEPT and listener.accept_version >= ACCEPT_VERSION:
                    _session(sock, listener)
                return


def _session(sock: socket.socket, listener: TnsListener) -> None:
    """What a server process answers after the ACCEPT: the protocol and data-type negotiations,
    then ORA-01017 to the first authentication message (this fake knows no user)."""
    for _ in range(MAX_TTC_MESSAGES):
        packet_type, body = _read_packet(sock, large=True)
        if packet_type != DATA or len(body) < 4:
            return
        message_type, code = body[2], body[3]  # after the two data-flag bytes
        listener.ttc.append((message_type, code))
        if message_type == TTC_PROTOCOL:
            sock.sendall(data(protocol_reply()))
        elif message_type == TTC_DATA_TYPES:
            sock.sendall(data(data_types_reply()))
        else:
            sock.sendall(data(error_reply(ORA_INVALID_LOGON, INVALID_LOGON_TEXT)))
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
    accept_version: int = ACCEPT_VERSION,
) -> Iterator[TnsListener]:
    """Serve a fake listener on a free loopback port in a thread; stop it on exit."""
    listener = TnsListener(
        port=0,
        alias=alias,
        vsnnum=vsnnum,
        services=frozenset(name.lower() for name in services),
        resend_first=resend_first,
        accept_version=accept_version,
    )
    server = _Server(listener)
    listener.port = server.server_address[1]
    with serving(server, "tns-listener"):
        yield listener
