"""A Db2-like DRDA server written from the DDM specification, for what Derby cannot show.

Apache Derby accepts any database name before a login, so the answer Db2 gives to ACCSEC for a
database it does not have (RDBNFNRM) needs this peer. It answers EXCSAT with EXCSATRD as Db2 LUW
11.5.5 on Linux does (EBCDIC strings) and ACCSEC with ACCSECRD for its one database or RDBNFNRM
for any other; requests chained in one flow are answered in one flow, as DRDA requires. Derby's
own network client (`ij`) is its independent client in tests/checks/test_db2.py.
"""

from __future__ import annotations

import asyncio
import struct

from exporter.checks.db2 import (
    ACCSEC,
    ACCSECRD,
    EXCSAT,
    EXCSATRD,
    EXTNAM,
    MGRLVLLS,
    RDBNAM,
    RDBNFNRM,
    SECMEC,
    SRVCLSNM,
    SRVNAM,
    SRVRLSLV,
)
from tests.checks.fakes import Handler

SERVER_CLASS = "QDB2/LINUXX8664"
RELEASE_LEVEL = "SQL11055"
SERVER_NAME = "db2inst1"
EXTERNAL_NAME = "db2sysc 0"
SVRCOD = 0x1149
SVRCOD_ERROR = 8
MAX_REQUESTS = 16  # DSSs served per connection; more is a runaway client
_HEADER = struct.Struct(">HBBH")
_DDM = struct.Struct(">HH")


def _parameter(codepoint: int, data: bytes) -> bytes:
    return _DDM.pack(_DDM.size + len(data), codepoint) + data


def _reply(codepoint: int, parameters: bytes, correlation_id: int, *, chained: bool) -> bytes:
    ddm = _DDM.pack(_DDM.size + len(parameters), codepoint) + parameters
    fmt = 0x02 | (0x40 if chained else 0)
    return _HEADER.pack(_HEADER.size + len(ddm), 0xD0, fmt, correlation_id) + ddm


def _parameters(body: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = _DDM.size
    while offset + _DDM.size <= len(body):
        size, codepoint = _DDM.unpack_from(body, offset)
        if size < _DDM.size:
            break
        found.setdefault(codepoint, body[offset + _DDM.size : offset + size])
        offset += size
    return found


def _answer(codepoint: int, parameters: dict[int, bytes], database: str) -> tuple[int, bytes]:
    if codepoint == EXCSAT:
        return EXCSATRD, b"".join(
            [
                _parameter(EXTNAM, EXTERNAL_NAME.encode("cp500")),
                _parameter(MGRLVLLS, parameters.get(MGRLVLLS, b"")),
                _parameter(SRVCLSNM, SERVER_CLASS.encode("cp500")),
                _parameter(SRVNAM, SERVER_NAME.encode("cp500")),
                _parameter(SRVRLSLV, RELEASE_LEVEL.encode("cp500")),
            ]
        )
    name = parameters.get(RDBNAM, b"").decode("cp500").strip()
    if codepoint == ACCSEC and name.upper() == database.upper():
        return ACCSECRD, _parameter(SECMEC, parameters.get(SECMEC, b"\x00\x03"))
    return RDBNFNRM, _parameter(SVRCOD, SVRCOD_ERROR.to_bytes(2, "big")) + _parameter(
        RDBNAM, parameters.get(RDBNAM, b"")
    )


def db2_like(database: str) -> Handler:
    """A handler serving EXCSAT and ACCSEC as Db2 does, knowing only `database`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending: list[bytes] = []
        for _ in range(MAX_REQUESTS):
            header = await reader.readexactly(_HEADER.size)
            length, _, fmt, correlation_id = _HEADER.unpack(header)
            body = await reader.readexactly(length - _HEADER.size)
            _, codepoint = _DDM.unpack_from(body)
            if codepoint not in (EXCSAT, ACCSEC):
                return  # anything past ACCSEC needs a real server: hang up as Db2 would
            answer, parameters = _answer(codepoint, _parameters(body), database)
            pending.append(_reply(answer, parameters, correlation_id, chained=True))
            if not fmt & 0x40:  # the last request of the chain: send the chained replies
                last = pending[-1]
                pending[-1] = last[:3] + bytes([last[3] & ~0x40]) + last[4:]
                writer.write(b"".join(pending))
                await writer.drain()
                pending.clear()

    return handler
