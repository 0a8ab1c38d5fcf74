"""A NetBIOS node written from RFC 1002, for the answers Samba never gives.

Samba's session service accepts every called name (source3/smbd/reply.c `reply_special`
answers POSITIVE whatever the name, and NEGATIVE only for a malformed request or a calling
name of type 'R'), and its name service always answers with an all-zero MAC. Windows does
neither: it answers a session request for a name it does not hold with NEGATIVE SESSION
RESPONSE error 0x82 "called name not present", and its node status carries the adapter's MAC.
This fake does what Windows does:

- `session_service(own_name)`: reads one SESSION REQUEST (RFC 1002 4.3.2), decodes the called
  name (first-level encoding, 4.1) and answers POSITIVE (4.3.3) for its own name and for
  `*SMBSERVER`, NEGATIVE (4.3.4) with 0x82 for any other, or NEGATIVE with a forced error code.
- `node_status_response(...)`: a NODE STATUS RESPONSE (4.2.18) with a name table and the
  statistics whose UNIT_ID is the MAC; `name_service(...)` answers each NODE STATUS REQUEST
  (4.2.17) with it, echoing the request's transaction id.

impacket's NetBIOS clients (`nmb.NetBIOSTCPSession`, `nmb.NetBIOS.getnodestatus`) prove both
in tests/checks/test_netbios.py.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence

from tests.checks.fakes import Handler, wait_for_client_to_leave
from tests.peers.udp import Answer

OWN_NAME = "PC042"
WORKGROUP = "CORP"
MAC = bytes.fromhex("00155d0102a3")
MAX_REQUEST_BYTES = 1024  # a session request is 72 bytes; a longer one ends the connection
STATISTICS_BYTES = 46
GROUP = 0x8000
ACTIVE = 0x0400
WINDOWS_NAME_TABLE: tuple[tuple[str, int, int], ...] = (
    (OWN_NAME, 0x00, ACTIVE),
    (WORKGROUP, 0x00, GROUP | ACTIVE),
    (OWN_NAME, 0x20, ACTIVE),
)


def encode(name: str, suffix: int, padding: bytes = b" ") -> bytes:
    """First-level encoding of a 16-byte NetBIOS name, length byte and root label included."""
    raw = name.encode("ascii").ljust(15, padding) + bytes([suffix])
    return (
        b"\x20"
        + bytes(letter for byte in raw for letter in (0x41 + (byte >> 4), 0x41 + (byte & 0xF)))
        + b"\x00"
    )


def decode(encoded: bytes) -> tuple[str, int]:
    """The name (padding removed) and suffix of a 32-letter first-level encoded name."""
    raw = bytes(
        ((high - 0x41) << 4) | (low - 0x41)
        for high, low in zip(encoded[0::2], encoded[1::2], strict=True)
    )
    return raw[:15].decode("latin-1").rstrip(" \x00"), raw[15]


def session_service(own_name: str = OWN_NAME, *, negative_code: int | None = None) -> Handler:
    """A session service answering as Windows does; `negative_code` refuses every request."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        kind, _, length = struct.unpack(">BBH", await reader.readexactly(4))
        if kind != 0x81 or not 68 <= length <= MAX_REQUEST_BYTES:  # two 34-byte names
            return
        trailer = await reader.readexactly(length)
        called, _ = decode(trailer[1:33])
        if negative_code is not None:
            writer.write(bytes([0x83, 0, 0, 1, negative_code]))
        elif called.upper() in (own_name.upper(), "*SMBSERVER"):
            writer.write(bytes([0x82, 0, 0, 0]))
        else:
            writer.write(bytes([0x83, 0, 0, 1, 0x82]))
        await wait_for_client_to_leave(reader)

    return handler


def node_status_response(
    transaction_id: int,
    names: Sequence[tuple[str, int, int]] = WINDOWS_NAME_TABLE,
    mac: bytes = MAC,
) -> bytes:
    """A NODE STATUS RESPONSE (RFC 1002 4.2.18) for the wildcard question."""
    table = b"".join(
        name.encode("latin-1").ljust(15) + struct.pack(">BH", suffix, flags)
        for name, suffix, flags in names
    )
    statistics = mac + bytes(STATISTICS_BYTES - len(mac))
    rdata = bytes([len(names)]) + table + statistics
    header = struct.pack(">HHHHHH", transaction_id, 0x8400, 0, 1, 0, 0)
    record = encode("*", 0x00, padding=b"\x00") + struct.pack(">HHIH", 0x21, 1, 0, len(rdata))
    return header + record + rdata


def name_service(
    names: Sequence[tuple[str, int, int]] = WINDOWS_NAME_TABLE, mac: bytes = MAC
) -> Answer:
    """Answer each node status request with the name table, under the request's own id."""

    def answer(request: bytes) -> bytes | None:
        if len(request) < 12:
            return None
        (transaction_id,) = struct.unpack_from(">H", request)
        return node_status_response(transaction_id, names, mac)

    return answer
