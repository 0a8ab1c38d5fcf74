"""`oracle_tns`: the Oracle Net (TNS) listener answers a ping; optionally a service and a login.

The ping is what `lsnrctl`/`tnsping` send: a TNS CONNECT packet whose connect data is
`(CONNECT_DATA=(COMMAND=ping))`. A listener answers with a REFUSE packet carrying
`(DESCRIPTION=(TMP=)(VSNNUM=…)(ERR=0)(ALIAS=LISTENER))`: `ERR=0` says it is alive, `ALIAS` is
its name and `VSNNUM` its version (0 on listeners that do not disclose it). No credentials are
needed, and nothing starts on the database side.

With `service_name`, a second connection sends the CONNECT a client sends to open a session.
The listener refuses it with `ERR=12514` when no instance registered that service, and accepts,
asks for a resend or redirects when one did. An accepted CONNECT hands the socket to a server
process, which then sees the exporter leave (a line in the listener's and server's logs).

With `username` and `password` the login is real: python-oracledb in thin mode (pure Python,
no Oracle client libraries), through its asyncio API, so no worker thread is held.

Packet layout (all big endian), from Wireshark's TNS dissector (`epan/dissectors/packet-tns.c`),
nmap's `oracle-tns-version` script and python-oracledb's `impl/thin/messages/connect.pyx`:
header = length (2), packet checksum (2), type (1), flags (1), header checksum (2); CONNECT body
= version, lowest compatible version, service options, SDU, TDU, protocol characteristics, line
turnaround, value of one, connect data length and offset, max receivable data, two NSI flag
bytes, trace fields, then the connect data at offset 58. REFUSE body = user reason (1), system
reason (1), data length (2), data.
"""

from __future__ import annotations

import asyncio
import re
import struct
import sys
from dataclasses import dataclass

from pydantic import Field, model_validator

from exporter import __version__
from exporter.checks.base import CheckContext, CheckSettings, CheckSpec, Target, quote_peer
from exporter.checks.net import close_stream, open_stream
from exporter.classify import classify as classify_generic
from exporter.errors import CheckFailure
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.secrets import Secret, reveal

# Packet types (Wireshark packet-tns.h)
CONNECT = 1
ACCEPT = 2
REFUSE = 4
REDIRECT = 5
DATA = 6
RESEND = 11
_KNOWN_TYPES = frozenset(range(1, 15))  # CONNECT (1) to CONTROL (14)
HEADER = struct.Struct(">HHBBH")
_CONNECT_BODY = struct.Struct(">HHHHHHHHHHIBB4s4s8s8s")
CONNECT_DATA_OFFSET = HEADER.size + _CONNECT_BODY.size  # 58, as nmap and tnscmd send
PROTOCOL_VERSION = 0x0136  # 310: what nmap and tnscmd send; listeners since 8i answer it
LOWEST_VERSION = 0x012C  # 300
SDU = 0x0800
TDU = 0x7FFF
PROTOCOL_CHARACTERISTICS = 0x7F08
MAX_INLINE_CONNECT_DATA = 230  # longer connect data follows in a DATA packet (python-oracledb)
MAX_REPLY_BYTES = 8192  # a listener's REFUSE/REDIRECT text is a few hundred bytes
MAX_RESENDS = 3  # RESEND asks for the same CONNECT again; more than this is a loop
PING = "(CONNECT_DATA=(COMMAND=ping))"
PROGRAM = "certero-flow-exporter"
ORA_UNKNOWN_SERVICE = 12514
_VSNNUM = re.compile(r"\(VSNNUM=(\d+)\)")
_ERR = re.compile(r"\(ERR=(\d+)\)")
_ALIAS = re.compile(r"\(ALIAS=([^()]*)\)")
_SERVICE_NAME = re.compile(r"[A-Za-z0-9_.$#\-]+")
# Listener error numbers a REFUSE can carry (Oracle's TNS message file, nmap's ERR_CODES).
LISTENER_ERRORS = {
    1189: "the listener refused the command from a remote host (TNS-01189)",
    1194: "the listener accepts commands over a secure transport only (TNS-01194)",
    12154: "the listener could not resolve the connect identifier (ORA-12154)",
    12504: "the listener was not given a SERVICE_NAME or SID (ORA-12504)",
    12505: "the listener does not know that SID (ORA-12505)",
    ORA_UNKNOWN_SERVICE: "the listener does not know that service (ORA-12514)",
    12516: "the listener found no handler available for the service (ORA-12516)",
    12519: "the listener found no handler available for the service (ORA-12519)",
    12520: "the listener found no handler of the needed type (ORA-12520)",
    12526: "the service accepts restricted sessions only (ORA-12526)",
    12528: "the service is blocking new connections (ORA-12528)",
}


class OracleTnsSettings(CheckSettings):
    """Options of the Oracle TNS check."""

    service_name: str | None = Field(
        default=None,
        description="Database service the listener must know (ORA-12514 if it does not).",
    )
    username: str | None = Field(
        default=None, description="Database user for a real login (needs service_name)."
    )
    password: Secret | None = Field(default=None, description="That user's password.")

    @model_validator(mode="after")
    def _consistent(self) -> OracleTnsSettings:
        if self.service_name is not None and not _SERVICE_NAME.fullmatch(self.service_name):
            raise ValueError(
                "service_name may hold letters, digits and _ . $ # - only "
                "(it is written into the listener's connect descriptor)"
            )
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.username is not None and self.service_name is None:
            raise ValueError("a login (username/password) needs service_name")
        return self


@dataclass(frozen=True, slots=True)
class Packet:
    """One TNS packet as read: its type, header flags and body (after the 8-byte header)."""

    type: int
    flags: int
    body: bytes


@dataclass(frozen=True, slots=True)
class ListenerStatus:
    """What a listener says in a REFUSE text: its error number, name and version."""

    err: int | None
    alias: str
    version: str


async def run(target: Target, settings: OracleTnsSettings, context: CheckContext) -> CheckResult:
    """Ping the listener; then, if configured, check the service and log in."""
    reply = await _exchange(context, target, PING)
    if reply.type != REFUSE:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"the listener answered a ping with TNS packet type {reply.type}, not a REFUSE",
        )
    status = parse_refuse(reply.body)
    context.peer = PeerInfo(product="Oracle TNS listener", version=status.version)
    if status.err != 0:
        raise CheckFailure(Result.SERVICE_ERROR, f"ping refused: {_listener_error(status.err)}")
    version = status.version or "version not disclosed"
    alias = status.alias or "unnamed"
    detail = f"listener {alias} answered the ping ({version})"
    if settings.service_name is not None:
        detail += f", {await _check_service(context, target, settings.service_name)}"
    if settings.username is not None and settings.password is not None:
        detail += f", {await _login(context, target, settings)}"
    return context.ok(detail)


async def _check_service(context: CheckContext, target: Target, service_name: str) -> str:
    """Ask the listener for a session to the service; say what it answered."""
    host = context.address or target.host
    data = (
        f"(DESCRIPTION=(CONNECT_DATA=(SERVICE_NAME={service_name})"
        f"(CID=(PROGRAM={PROGRAM})(HOST=exporter)(USER=exporter)))"
        f"(ADDRESS=(PROTOCOL=TCP)(HOST={host})(PORT={target.port})))"
    )
    reply = await _exchange(context, target, data)
    if reply.type == REFUSE:
        status = parse_refuse(reply.body)
        if status.err == ORA_UNKNOWN_SERVICE:
            raise CheckFailure(
                Result.SERVICE_ERROR,
                f"service {service_name!r} is not registered with the listener (ORA-12514)",
            )
        raise CheckFailure(
            Result.SERVICE_ERROR, f"service {service_name!r}: {_listener_error(status.err)}"
        )
    if reply.type == ACCEPT:
        return f"service {service_name} accepted"
    if reply.type == REDIRECT:
        return f"service {service_name} known (redirected to a handler)"
    raise CheckFailure(
        Result.PROTOCOL_MISMATCH,
        f"the listener answered a CONNECT with TNS packet type {reply.type}",
    )


async def _exchange(context: CheckContext, target: Target, connect_data: str) -> Packet:
    """Send a CONNECT on a new connection and return the answer, resending when asked."""
    reader, writer = await open_stream(context, target)
    try:
        with context.phase(Phase.HANDSHAKE):
            request = connect_packets(connect_data.encode("ascii"))
            for _ in range(MAX_RESENDS + 1):
                writer.write(request)
                reply = await read_packet(reader)
                context.debug("tns reply", type=reply.type, bytes=len(reply.body))
                if reply.type != RESEND:
                    return reply
    finally:
        await close_stream(writer)
    raise CheckFailure(
        Result.SERVICE_ERROR, f"the listener asked for the CONNECT again {MAX_RESENDS} times"
    )


def connect_packets(connect_data: bytes) -> bytes:
    """A TNS CONNECT carrying `connect_data`, followed by a DATA packet when it is long."""
    inline = len(connect_data) <= MAX_INLINE_CONNECT_DATA
    body = _CONNECT_BODY.pack(
        PROTOCOL_VERSION,
        LOWEST_VERSION,
        0,  # service options
        SDU,
        TDU,
        PROTOCOL_CHARACTERISTICS,
        0,  # line turnaround
        1,  # value of one, in the sender's byte order
        len(connect_data),
        CONNECT_DATA_OFFSET,
        0,  # max receivable connect data
        0,  # NSI flags 0 and 1: no native network services asked for (as nmap and tnscmd)
        0,
        b"\0" * 4,
        b"\0" * 4,
        b"\0" * 8,
        b"\0" * 8,
    )
    packet = body + connect_data if inline else body
    connect = HEADER.pack(HEADER.size + len(packet), 0, CONNECT, 0, 0) + packet
    if inline:
        return connect
    data_packet = b"\0\0" + connect_data  # two bytes of data flags, then the data
    return connect + HEADER.pack(HEADER.size + len(data_packet), 0, DATA, 0, 0) + data_packet


async def read_packet(reader: asyncio.StreamReader) -> Packet:
    """Read one TNS packet, rejecting what cannot be one before reading its body."""
    header = await reader.readexactly(HEADER.size)
    length, _, packet_type, flags, _ = HEADER.unpack(header)
    if packet_type not in _KNOWN_TYPES or length < HEADER.size:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"not an Oracle TNS listener: it sent {quote_peer(header)}"
        )
    if length > MAX_REPLY_BYTES:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"TNS packet of {length} bytes, longer than any listener answer ({MAX_REPLY_BYTES})",
        )
    body = await reader.readexactly(length - HEADER.size)
    return Packet(type=packet_type, flags=flags, body=body)


def parse_refuse(body: bytes) -> ListenerStatus:
    """The error number, alias and version in a REFUSE packet's text."""
    if len(body) < 4:
        raise CheckFailure(Result.PROTOCOL_MISMATCH, "TNS REFUSE packet too short")
    (data_length,) = struct.unpack_from(">H", body, 2)
    text = body[4 : 4 + data_length].decode("ascii", errors="replace")
    err = _ERR.search(text)
    vsnnum = _VSNNUM.search(text)
    alias = _ALIAS.search(text)
    if err is None and vsnnum is None:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"TNS REFUSE without a listener description: {text[:60]!r}"
        )
    return ListenerStatus(
        err=int(err.group(1)) if err else None,
        alias=alias.group(1) if alias else "",
        version=decode_vsnnum(int(vsnnum.group(1))) if vsnnum else "",
    )


def decode_vsnnum(vsnnum: int) -> str:
    """A listener's VSNNUM as the dotted version Oracle prints ("" for 0: not disclosed).

    The five fields are 8, 4, 8, 4 and 8 bits wide (nmap `oracle-tns-version`).
    """
    if vsnnum <= 0:
        return ""
    return ".".join(
        str(part)
        for part in (
            vsnnum >> 24,
            vsnnum >> 20 & 0xF,
            vsnnum >> 12 & 0xFF,
            vsnnum >> 8 & 0xF,
            vsnnum & 0xFF,
        )
    )


def _listener_error(err: int | None) -> str:
    if err is None:
        return "the listener gave no error number"
    return LISTENER_ERRORS.get(err, f"the listener returned error {err} (TNS-{err:05d})")


async def _login(context: CheckContext, target: Target, settings: OracleTnsSettings) -> str:
    """Log in with python-oracledb's thin asyncio driver and report the database version."""
    import oracledb  # noqa: PLC0415 - loaded by the first login only (40 ms)

    assert settings.password is not None
    password = reveal(settings.password)
    with context.phase(Phase.AUTH):
        connection = await oracledb.connect_async(
            user=settings.username,
            password=password,
            host=context.address or target.host,
            port=target.port or 1521,
            service_name=settings.service_name,
            tcp_connect_timeout=max(context.remaining(), 0.001),
            retry_count=0,
            program=PROGRAM,
            driver_name=f"{PROGRAM} {__version__.split('+')[0]}",
        )
        try:
            version = connection.version
        finally:
            await connection.close()
    return f"logged in as {settings.username} (database {version})"


# python-oracledb errors by their code. `DPY-6005` wraps every connect-phase failure and
# chains its cause, which is classified instead.
_AUTH_ERRORS = {
    1017: "invalid username or password (ORA-01017)",
    1045: "the user lacks CREATE SESSION (ORA-01045)",
    28000: "the account is locked (ORA-28000)",
    28001: "the password has expired (ORA-28001)",
}
_DRIVER_ERRORS = {
    "DPY-6001": (
        Result.SERVICE_ERROR,
        "the service is not registered with the listener (ORA-12514)",
    ),
    "DPY-6003": (Result.SERVICE_ERROR, "the SID is not registered with the listener (ORA-12505)"),
    "DPY-3001": (
        Result.SERVICE_ERROR,
        "the server requires Native Network Encryption, which thin mode does not speak (DPY-3001)",
    ),
    "DPY-3010": (
        Result.SERVICE_ERROR,
        "the database is older than 12.1, which thin mode cannot log in to (DPY-3010)",
    ),
    "DPY-4011": (Result.SERVICE_ERROR, "the database closed the connection (DPY-4011)"),
}


def classify(exc: BaseException, phase: Phase | None) -> tuple[Result, str] | None:
    """python-oracledb's errors → result classes, with the ORA-/DPY- code in the detail.

    Only a login raises them, and a login imports the driver: until then nothing is imported
    here, so that a failed ping is classified without loading it.
    """
    oracledb = sys.modules.get("oracledb")
    if oracledb is None or not isinstance(exc, oracledb.Error) or not exc.args:
        return None
    error = exc.args[0]
    full_code = str(getattr(error, "full_code", "") or "")
    code = int(getattr(error, "code", 0) or 0)
    if full_code == "DPY-6005" and exc.__cause__ is not None:  # cannot connect: say why
        return classify_generic(exc.__cause__, phase, classify)
    if code in _AUTH_ERRORS:
        return Result.AUTH_FAILED, f"login failed: {_AUTH_ERRORS[code]}"
    if full_code in _DRIVER_ERRORS:
        result, text = _DRIVER_ERRORS[full_code]
        return result, f"login failed: {text}"
    if full_code == "DPY-6000":
        similar = re.search(r"ORA-\d+", str(error))
        named = similar.group(0) if similar else full_code
        return Result.SERVICE_ERROR, f"login failed: the listener refused the connection ({named})"
    where = full_code or (f"ORA-{code:05d}" if code else type(exc).__name__)
    first_line = str(error).splitlines()[0] if str(error) else where
    return Result.SERVICE_ERROR, f"login failed: {first_line[:160]}"


SPEC = CheckSpec(
    "oracle_tns",
    OracleTnsSettings,
    run,
    "Oracle TNS listener ping; service registration; thin-mode login",
    classify=classify,
)
