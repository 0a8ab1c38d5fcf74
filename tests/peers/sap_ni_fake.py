"""A spec-written SAP NI peer on loopback: what a dispatcher's NI layer answers to a keep-alive.

No SAP server can be installed here, so this peer is written from public descriptions of the
wire format, each answer from a named source:

* Framing: every message is a 4-byte big-endian length (the header excluded) and the payload
  (SAP Library "Communication Modes", NI_MSG_IO; Wireshark `epan/dissectors/packet-sapni.c`,
  `get_sap_protocol_pdu_len` and `dissect_sap_protocol_message`).
* Keep-alive: a frame of 8 bytes "NI_PING\\0" is answered with a frame of 8 bytes "NI_PONG\\0"
  (SAP Library "NI Keepalive"; Wireshark, the same function; pysap `pysap/SAPNI.py`,
  `SAPNIStreamSocket.recv`).
* Error message (mode `error`): "NI_RTERR\\0", NI version 40, opcode 0, a padding byte, the
  return code as a signed 32-bit big-endian integer, the error text's length (32-bit), the text
  as NUL-terminated fields `*ERR*`, counter, error, return code, component, release, version,
  module, … ending with `*ERR*`, then a 32-bit zero (pysap `pysap/SAPRouter.py`, `SAPRouter`
  fields for `NI_RTERR` with opcode 0 and `SAPRouterError`; SAP Library "NI Error Information").

Independent proof: pysap 0.2.1 (OWASP), an implementation written apart from this one, reads
both answers (`tests/checks/test_sap.py`): its `SAPNIStreamSocket` gets NI_PONG for its NI_PING,
and its `SAPRouter` packet class parses the error message field by field. (nmap has no SAP NI
script; pysap is the only independent client found.)
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from tests.peers.threaded import serving

HOST = "127.0.0.1"
NI_PING = b"NI_PING\x00"
NI_PONG = b"NI_PONG\x00"
MAX_REQUEST_BYTES = 64 * 1024  # a client announcing more is not an NI client: hang up
ERROR_RETURN_CODE = -94  # NIEROUT_PERM_DENIED (pysap `router_return_codes`)
ERROR_TEXT = "route permission denied (127.0.0.1 to cfe-test, 3200)"

Mode = Literal["pong", "error"]


def ni_frame(payload: bytes) -> bytes:
    """A payload with its 4-byte big-endian length in front."""
    return struct.pack("!I", len(payload)) + payload


def error_message(text: str = ERROR_TEXT, return_code: int = ERROR_RETURN_CODE) -> bytes:
    """The NI_RTERR error message payload, laid out as pysap's `SAPRouter` reads it."""
    fields = [
        "*ERR*",
        "1",
        text,
        str(return_code),
        "NI (network interface)",
        "753",
        "40",
        "nixxi.cpp",
        "3456",
        "",
        "Wed Dec  2 06:00:00 2026",
        "",
        "",
        "",
        "1",
        "",
        "",
        "",
        "",
        "",
        "*ERR*",
    ]
    block = b"".join(field.encode("ascii") + b"\x00" for field in fields)
    return (
        b"NI_RTERR\x00"
        + bytes([40, 0, 0])  # NI version 40, opcode 0 (error information), padding
        + struct.pack("!iI", return_code, len(block))
        + block
        + struct.pack("!I", 0)
    )


@dataclass
class SapNiFake:
    """Where the fake listens, and how many keep-alives it has answered."""

    port: int
    pings: int = 0
    host: str = HOST


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


@contextlib.contextmanager
def run_sap_ni_fake(mode: Mode = "pong") -> Iterator[SapNiFake]:
    """Serve NI on a free loopback port from a thread: NI_PONG (or the error) to each NI_PING."""
    lock = threading.Lock()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            sock.settimeout(10.0)  # a client that stalls cannot hold the thread for long
            with contextlib.suppress(OSError):
                while (header := _read_exactly(sock, 4)) is not None:
                    (length,) = struct.unpack("!I", header)
                    if length > MAX_REQUEST_BYTES:
                        return
                    payload = _read_exactly(sock, length)
                    if payload != NI_PING:
                        return  # a dispatcher would hand it to DIAG; this fake has no DIAG
                    with lock:
                        fake.pings += 1
                    sock.sendall(ni_frame(NI_PONG if mode == "pong" else error_message()))

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server((HOST, 0), Handler)
    fake = SapNiFake(port=server.server_address[1])
    with serving(server, "sap-ni-fake"):
        yield fake
