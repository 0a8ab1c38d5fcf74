"""`db2`: a DRDA server (IBM Db2, Apache Derby, Informix) answers Exchange Server Attributes.

DRDA frames every message as a DSS (Data Stream Structure): a 6-byte header (length, the magic
byte 0xD0, a format byte, a correlation id) around one DDM object (length, code point, then
parameters that are themselves length / code point / data). EXCSAT (0x1041) asks the server for
its attributes without any credentials, and every DRDA server must answer it with EXCSATRD
(0x1443): the server class (`QDB2/LINUXX8664`, `Apache Derby`), the product release level
(`SQL11055` is Db2 LUW 11.5.5, `CSS10140/10.14.2.0` Derby 10.14.2.0), the server name and the
external name. Those become the peer info.

With a `database` setting the check goes one step further, still without credentials: ACCSEC
(access security, 0x106D) names the database, and Db2 answers RDBNFNRM ("RDB not found") when
it has no such database, before any user or password is asked for. Apache Derby creates and
opens databases only at login, so it accepts any name at this step; the detail says so rather
than claiming a database it cannot vouch for.

The parser is strict on purpose: every length is checked against what was read, every code
point against the ones DRDA allows at that step, so a peer speaking another protocol is a
`protocol_mismatch` and never makes the check read more than one bounded DSS per reply.
"""

from __future__ import annotations

import asyncio
import re
import struct
from dataclasses import dataclass

from pydantic import Field

from exporter.checks.base import CheckContext, CheckSettings, CheckSpec, Target, quote_peer
from exporter.checks.net import close_stream, open_stream
from exporter.errors import CheckFailure
from exporter.result import CheckResult, PeerInfo, Phase, Result

DSS_MAGIC = 0xD0
DSS_HEADER = struct.Struct(">HBBH")  # length, magic, format, correlation id
DDM_HEADER = struct.Struct(">HH")  # length, code point (objects and their parameters alike)
# DSS format byte: low nibble is the DSS type, 0x40 "chained" (another DSS follows), 0x10 "same
# correlator" (it belongs to the same request). 0x80 is reserved and never set.
FORMAT_TYPE_MASK = 0x0F
FORMAT_CHAINED = 0x40
FORMAT_RESERVED = 0x80
REQUEST_DSS = 0x01
REPLY_DSS = 0x02
OBJECT_DSS = 0x03
# A DSS length with the high bit set announces continuation DSSs (a message over 32 KiB); no
# answer to EXCSAT or ACCSEC is that long, so such a length means the peer is not DRDA.
DSS_CONTINUED = 0x8000
MAX_REPLY_DSS = 4  # DSSs read for one command: the reply and the few a server may chain to it

EXCSAT = 0x1041
EXCSATRD = 0x1443
ACCSEC = 0x106D
ACCSECRD = 0x14AC
EXTNAM = 0x115E
SRVNAM = 0x116D
SRVRLSLV = 0x115A
SRVCLSNM = 0x1147
MGRLVLLS = 0x1404
SECMEC = 0x11A2
RDBNAM = 0x2110
SECMEC_USRIDPWD = 3  # user id and password: the mechanism every DRDA server supports
RDBNAM_MIN_LENGTH = 18  # DRDA pads shorter database names with blanks to 18 characters
# The manager levels we claim, as nmap's drda-info does: AGENT 7, SQLAM 8, RDB 8, SECMGR 8,
# CMNTCPIP 8. A server answers with the levels it supports.
MANAGER_LEVELS = bytes.fromhex("1403 0007 2407 0008 240F 0008 1440 0008 1474 0008")
CLIENT_EXTERNAL_NAME = "certero-flow-exporter"

# Reply messages a DRDA server sends instead of the expected reply data: still DRDA, but the
# server refused the command. The names go into the detail.
REPLY_MESSAGES = {
    0x1232: "AGNPRMRM (permanent agent error)",
    0x1233: "RSCLMTRM (resource limits reached)",
    0x1245: "PRCCNVRM (conversational protocol error)",
    0x124C: "SYNTAXRM (data stream syntax error)",
    0x1250: "CMDNSPRM (command not supported)",
    0x1251: "PRMNSPRM (parameter not supported)",
    0x1252: "VALNSPRM (parameter value not supported)",
    0x1253: "OBJNSPRM (object not supported)",
    0x1254: "CMDCHKRM (command check)",
    0x1210: "MGRLVLRM (manager level conflict)",
    0x1218: "MGRDEPRM (manager dependency error)",
    0x2211: "RDBNFNRM (database not found)",
    0x221A: "RDBAFLRM (database access failed)",
    0x22CB: "RDBATHRM (not authorised to the database)",
}
RDBNFNRM = 0x2211
_DATABASE_NAME = re.compile(r"^[A-Za-z0-9_@#$.:/\\-]{1,255}$")
_RELEASE_DB2 = re.compile(r"^(SQL|DSN|QSQ)(\d{2})(\d{2})(\d)")  # LUW, z/OS, i: vvrrm


class Db2Settings(CheckSettings):
    """Options of the DRDA check."""

    database: str | None = Field(
        default=None,
        pattern=_DATABASE_NAME.pattern,
        description=(
            "Database (RDB) name the server must know, asked without credentials (ACCSEC). "
            "Db2 says when it has no such database; Apache Derby cannot tell before a login."
        ),
    )


@dataclass(frozen=True, slots=True)
class DdmObject:
    """One DDM object of a reply: its code point and its parameters in order."""

    codepoint: int
    parameters: tuple[tuple[int, bytes], ...]

    def get(self, codepoint: int) -> bytes | None:
        """The data of the first parameter with this code point (None: absent)."""
        return next((data for cp, data in self.parameters if cp == codepoint), None)


@dataclass(frozen=True, slots=True)
class ServerAttributes:
    """What EXCSATRD said about the server."""

    server_class: str
    release_level: str
    server_name: str
    external_name: str


async def run(target: Target, settings: Db2Settings, context: CheckContext) -> CheckResult:
    """Exchange server attributes and, with a `database`, ask the server to access it."""
    reader, writer = await open_stream(context, target)
    try:
        with context.phase(Phase.HANDSHAKE):
            writer.write(excsat_request())
            reply = await read_reply(reader, context)
            attributes = parse_excsatrd(reply)
            context.peer = peer_info(attributes)
            detail = describe(attributes)
            if settings.database is not None:
                writer.write(accsec_request(settings.database))
                reply = await read_reply(reader, context)
                detail += ", " + database_verdict(reply, settings.database, attributes)
    finally:
        await close_stream(writer)
    return context.ok(detail)


def encode_dss(codepoint: int, parameters: bytes, correlation_id: int = 1) -> bytes:
    """One request DSS (not chained) around one DDM command."""
    ddm = DDM_HEADER.pack(DDM_HEADER.size + len(parameters), codepoint) + parameters
    return DSS_HEADER.pack(DSS_HEADER.size + len(ddm), DSS_MAGIC, REQUEST_DSS, correlation_id) + ddm


def encode_parameter(codepoint: int, data: bytes) -> bytes:
    """One DDM parameter: length, code point, data."""
    return DDM_HEADER.pack(DDM_HEADER.size + len(data), codepoint) + data


def excsat_request() -> bytes:
    """EXCSAT with our external name and empty attributes, which asks the server for its own."""
    parameters = b"".join(
        [
            encode_parameter(EXTNAM, CLIENT_EXTERNAL_NAME.encode("cp500")),
            encode_parameter(SRVNAM, b""),
            encode_parameter(SRVRLSLV, b""),
            encode_parameter(SRVCLSNM, b""),
            encode_parameter(MGRLVLLS, MANAGER_LEVELS),
        ]
    )
    return encode_dss(EXCSAT, parameters, correlation_id=1)


def accsec_request(database: str) -> bytes:
    """ACCSEC naming the database (EBCDIC, blank-padded to 18 as DRDA requires)."""
    name = database.ljust(RDBNAM_MIN_LENGTH).encode("cp500")
    parameters = encode_parameter(SECMEC, SECMEC_USRIDPWD.to_bytes(2, "big")) + encode_parameter(
        RDBNAM, name
    )
    return encode_dss(ACCSEC, parameters, correlation_id=2)


async def read_reply(reader: asyncio.StreamReader, context: CheckContext) -> DdmObject:
    """Read DSSs until one that is not chained; return the first DDM object that is a reply.

    At most `MAX_REPLY_DSS` DSSs of at most 32 KiB each are read, whatever the peer sends.
    """
    first: DdmObject | None = None
    for _ in range(MAX_REPLY_DSS):
        header = await _read_header(reader)
        length, fmt = validate_dss_header(header)
        try:
            body = await reader.readexactly(length - DSS_HEADER.size)
        except asyncio.IncompleteReadError as exc:
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH,
                f"not a DRDA server: it announced a {length}-byte DSS and sent "
                f"{DSS_HEADER.size + len(exc.partial)}",
            ) from exc
        ddm = parse_ddm(body)
        context.debug("drda reply", codepoint=f"0x{ddm.codepoint:04X}", bytes=length)
        first = first or ddm
        if not fmt & FORMAT_CHAINED:
            return first
    raise CheckFailure(
        Result.PROTOCOL_MISMATCH, f"not a DRDA server: more than {MAX_REPLY_DSS} chained DSSs"
    )


async def _read_header(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readexactly(DSS_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise CheckFailure(
                Result.SERVICE_ERROR, "connection closed before the DRDA reply"
            ) from exc
        if _starts_a_dss_header(exc.partial):
            raise CheckFailure(
                Result.SERVICE_ERROR,
                f"connection closed after {len(exc.partial)} of the {DSS_HEADER.size} bytes of "
                "a DSS header",
            ) from exc
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"not a DRDA server: it sent {quote_peer(exc.partial)}"
        ) from exc


def validate_dss_header(header: bytes) -> tuple[int, int]:
    """Return (length, format) of a reply DSS header, or fail as not DRDA."""
    # The correlation id is not compared with the request's: Derby 10.14 answered an ACCSEC
    # sent with id 2 with id 1.
    length, magic, fmt, _ = DSS_HEADER.unpack(header)
    if magic != DSS_MAGIC:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"not a DRDA server: it sent {quote_peer(header)}"
        )
    if fmt & FORMAT_RESERVED or fmt & FORMAT_TYPE_MASK not in (REPLY_DSS, OBJECT_DSS):
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"not a DRDA server: DSS format byte 0x{fmt:02X}"
        )
    if length & DSS_CONTINUED or length < DSS_HEADER.size + DDM_HEADER.size:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"not a DRDA server: DSS length field 0x{length:04X}"
        )
    return length, fmt


def parse_ddm(body: bytes) -> DdmObject:
    """Parse the one DDM object a DSS body holds, with its parameters; strict on every length."""
    length, codepoint = DDM_HEADER.unpack_from(body)
    if length != len(body):
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"not a DRDA server: DDM object of {length} bytes in a {len(body)}-byte DSS body",
        )
    parameters: list[tuple[int, bytes]] = []
    offset = DDM_HEADER.size
    while offset < length:  # each turn consumes at least 4 bytes: bounded by the body size
        if length - offset < DDM_HEADER.size:
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH, "not a DRDA server: truncated DDM parameter"
            )
        size, parameter = DDM_HEADER.unpack_from(body, offset)
        if size < DDM_HEADER.size or offset + size > length:
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH,
                f"not a DRDA server: DDM parameter 0x{parameter:04X} with length {size}",
            )
        parameters.append((parameter, body[offset + DDM_HEADER.size : offset + size]))
        offset += size
    return DdmObject(codepoint, tuple(parameters))


def parse_excsatrd(reply: DdmObject) -> ServerAttributes:
    """The server attributes of an EXCSATRD; a refusal or another object fails the check."""
    _expect_reply(reply, EXCSATRD, "EXCSATRD", "refused EXCSAT")
    return ServerAttributes(
        server_class=decode_text(reply.get(SRVCLSNM)),
        release_level=decode_text(reply.get(SRVRLSLV)),
        server_name=decode_text(reply.get(SRVNAM)),
        external_name=decode_text(reply.get(EXTNAM)),
    )


def _expect_reply(reply: DdmObject, expected: int, name: str, refusal: str) -> None:
    """A reply message (SYNTAXRM, ...) is the server refusing; any other object is not DRDA."""
    if reply.codepoint in REPLY_MESSAGES:
        raise CheckFailure(
            Result.SERVICE_ERROR, f"DRDA server {refusal}: {REPLY_MESSAGES[reply.codepoint]}"
        )
    if reply.codepoint != expected:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"not a DRDA server: reply code point 0x{reply.codepoint:04X} instead of {name}",
        )


def decode_text(data: bytes | None) -> str:
    """A DRDA character string: EBCDIC as the architecture says, ASCII if the server sent that.

    Every letter and digit of EBCDIC lies at 0x81 or above, and none of ASCII does: a string
    with no such byte but only printable ASCII was sent in ASCII.
    """
    if not data:
        return ""
    if all(0x20 <= byte < 0x7F for byte in data):
        text = data.decode("ascii")
    else:
        text = data.decode("cp500", errors="replace")
    return "".join(char if char.isprintable() else "?" for char in text).strip()


def release_version(level: str) -> str:
    """The version in a release level: `SQL11055` → 11.5.5, `CSS10140/10.14.2.0` → 10.14.2.0."""
    match = _RELEASE_DB2.match(level)
    if match is not None:
        _, version, release, modification = match.groups()
        return f"{int(version)}.{int(release)}.{modification}"
    _, slash, rest = level.partition("/")
    if slash:
        return rest.split(" ", 1)[0]
    return level


def peer_info(attributes: ServerAttributes) -> PeerInfo:
    """Product from the server class, version from the release level."""
    return PeerInfo(
        product=attributes.server_class or "DRDA server",
        version=release_version(attributes.release_level),
    )


def describe(attributes: ServerAttributes) -> str:
    """The detail of a successful exchange."""
    parts = [f"DRDA {attributes.server_class or 'server'} {attributes.release_level}".rstrip()]
    if attributes.server_name:
        parts.append(f"server name {attributes.server_name}")
    if attributes.external_name:
        parts.append(f"external name {attributes.external_name}")
    return ", ".join(parts)


def database_verdict(reply: DdmObject, database: str, attributes: ServerAttributes) -> str:
    """What the ACCSEC reply says about the database; an unknown one fails the check."""
    if reply.codepoint == RDBNFNRM:
        raise CheckFailure(
            Result.SERVICE_ERROR,
            f"database {database} not found on the DRDA server (RDBNFNRM, SQL30061N)",
        )
    _expect_reply(reply, ACCSECRD, "ACCSECRD", f"refused access to database {database}")
    if attributes.server_class == "Apache Derby":
        return (
            f"database {database} not verified "
            "(Apache Derby opens databases only at login and accepts any name before)"
        )
    return f"database {database} known (ACCSEC accepted)"


SPEC = CheckSpec(
    "db2",
    Db2Settings,
    run,
    "DRDA Exchange Server Attributes (Db2, Derby); database known without credentials",
)


def _starts_a_dss_header(partial: bytes) -> bool:
    """Whether `partial` can begin a DSS header (DRDA Vol. 3, DSS): a length of at least the
    header itself, then the 0xD0 magic."""
    if len(partial) >= 2 and int.from_bytes(partial[:2], "big") < DSS_HEADER.size:
        return False
    return len(partial) < 3 or partial[2] == DSS_MAGIC
