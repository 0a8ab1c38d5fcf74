"""`mssql` and `mssql_browser`: SQL Server's TDS pre-login, its TLS, and its Browser (SSRP).

`mssql` without credentials sends a TDS PRELOGIN packet (MS-TDS 2.2.6.5) and reads the answer:
the server's version and its encryption setting, with no login attempt left in the server's
error log. An `instance` setting first asks the SQL Server Browser (MC-SQLR CLNT_UCAST_INST on
UDP 1434) for that instance's TCP port, the way clients resolve `HOST\\INSTANCE`, and the
pre-login goes to that port. With `username` and `password` a real SQL login follows through
pymssql on the blocking pool, then `SELECT @@VERSION`.

TLS (`encrypt`), the way SQL Server clients do it:
- TDS 7.x (`auto`, `require`): after the pre-login answer, the TLS handshake records travel as
  the payload of TDS PRELOGIN packets (type 0x12) in both directions until the handshake is
  done (MS-TDS 2.2.6.5, 3.2.5.2 and 3.3.5.2); only afterwards would TLS records flow bare on
  the TCP connection. `auto` sends ENCRYPT_OFF, which lets the answer show the server's policy
  (ENCRYPT_OFF: only the login packet is encrypted; ENCRYPT_REQ: the server forces encryption),
  and handshakes when the answer says the whole connection is encrypted (ENCRYPT_ON or
  ENCRYPT_REQ). `require` sends ENCRYPT_ON, handshakes with any server that can, and fails as
  `tls_error` when the answer is ENCRYPT_NOT_SUP. `off` never handshakes.
- TDS 8.0 (`strict`, SQL Server 2022): TLS from the first byte with ALPN `tds/8.0`, then the
  pre-login inside TLS.
The handshake runs in an `ssl.SSLObject` over memory BIOs fed from the asyncio stream (no thread,
every read bounded), is verified by the rules and settings of the `tls` check (`ca_file`,
`server_name`, `insecure_skip_verify`), is reported in the same words (`exporter.classify`), and
records the leaf's and the chain's expiry, also of a certificate that failed verification.
pymssql's FreeTDS does not verify the server's certificate at login; this handshake is what
proves it.

`mssql_browser` sends CLNT_UCAST_EX (one byte 0x03) to UDP 1434 and lists the instances of the
SVR_RESP answer with their TCP ports.

Error mapping: pymssql raises `OperationalError(code, message)`; `classify` turns SQL Server's
login errors (18456 and its relatives) into `auth_failed` and FreeTDS's connection errors
(20009 refused / timed out, 20002 failed) into the matching classes, number in the detail.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import ssl
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import Field, model_validator

from exporter.blocking import Deadline
from exporter.checks.base import CheckContext, CheckSettings, CheckSpec, Target, quote_peer
from exporter.checks.net import (
    MAX_DATAGRAM_BYTES,
    TlsSettings,
    client_ssl_context,
    close_stream,
    exchange_datagram,
    open_stream,
    presented_chain,
    record_certificates,
)
from exporter.checks.tls import expiry_note
from exporter.errors import CheckFailure
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.secrets import Secret, reveal

BROWSER_PORT = 1434
TDS_HEADER = struct.Struct(">BBHHBB")  # type, status, length, SPID, packet id, window
TDS_PRELOGIN = 0x12
TDS_TABULAR_RESULT = 0x04  # the type of every server response, the pre-login answer included
TDS_STATUS_EOM = 0x01
MAX_PRELOGIN_REPLY_BYTES = 4096  # a pre-login answer is tens of bytes; the minimum packet size
MAX_PRELOGIN_OPTIONS = 16  # eight option tokens are defined; more is not a pre-login answer
# TLS inside PRELOGIN packets: a server sends its certificate chain in a few packets of its
# 4096-byte default packet size; 32767 is the largest packet size a client can negotiate.
MAX_TDS_PACKET_BYTES = 32767
OUR_PACKET_BYTES = 4096  # what we send per packet, the default packet size before a login
MAX_HANDSHAKE_PACKETS = 64
MAX_HANDSHAKE_BYTES = 256 * 1024  # the most a server's handshake may send us in all
TLS_READ_BYTES = 16 * 1024  # one read from the socket while TLS wraps the whole connection
TDS8_ALPN = "tds/8.0"  # TDS 8.0 strict encryption (IANA ALPN protocol IDs registry)
SSRP_UCAST_EX = b"\x03"  # MC-SQLR 2.2.2 CLNT_UCAST_EX: every instance
SSRP_UCAST_INST = 0x04  # MC-SQLR 2.2.3 CLNT_UCAST_INST: one instance by name
SSRP_SVR_RESP = 0x05  # MC-SQLR 2.2.5
MAX_SSRP_INST_REPLY_BYTES = 3 + 1024  # RESP_DATA for one instance is at most 1024 bytes
MAX_SSRP_EX_REPLY_BYTES = MAX_DATAGRAM_BYTES  # RESP_DATA may say 65535 bytes; UDP caps it
MAX_LISTED_INSTANCES = 16  # instances named in a detail; the rest are counted
BROWSER_SHARE = 0.5  # of the time left, what the Browser lookup before a pre-login may use
_INSTANCE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$#@]{0,15}$")  # SQL Server: 16 characters

# MS-TDS 2.2.6.5 option tokens and their data in our request; VERSION must come first (3.3.5.1).
_VERSION, _ENCRYPTION, _INSTOPT, _THREADID, _MARS, _TERMINATOR = 0, 1, 2, 3, 4, 0xFF
# MS-TDS 2.2.6.5 B_FENCRYPTION values.
ENCRYPT_OFF, ENCRYPT_ON, ENCRYPT_NOT_SUP, ENCRYPT_REQ = 0x00, 0x01, 0x02, 0x03
Encrypt = Literal["auto", "require", "strict", "off"]
_ENCRYPTION_WORDS = {
    0x00: "encryption off (login packet only)",
    0x01: "encryption on",
    0x02: "encryption not supported",
    0x03: "encryption required",
}
_SERVER_MESSAGE = re.compile(r"(?:Login failed|Cannot open database)[^\n]{0,120}?\.(?=\s|$|DB-Lib)")
_RELEASES = {16: "2022", 15: "2019", 14: "2017", 13: "2016", 12: "2014", 11: "2012", 10: "2008"}
# SQL Server's login errors (sys.messages); each is a wrong or unusable credential.
_LOGIN_ERRORS = {
    18456: "login failed",
    18452: "login from an untrusted domain",
    18470: "login disabled",
    18486: "account locked out",
    18487: "password expired",
    18488: "password must be changed",
    4060: "cannot open the requested database",
}


class MssqlBrowserSettings(CheckSettings):
    """Options of the `mssql_browser` check."""

    instance: str | None = Field(
        default=None, description="An instance the Browser must list (e.g. SQLEXPRESS)."
    )

    @model_validator(mode="after")
    def _valid_instance(self) -> MssqlBrowserSettings:
        _check_instance_name(self.instance)
        return self


class MssqlSettings(TlsSettings):
    """Options of the `mssql` check; the TLS options are those of the `tls` check."""

    instance: str | None = Field(
        default=None,
        description=(
            "Named instance: its TCP port is asked of the SQL Server Browser first, and the "
            "target's port is not used."
        ),
    )
    browser_port: int = Field(
        default=BROWSER_PORT, ge=1, le=65535, description="UDP port of the SQL Server Browser."
    )
    username: str | None = Field(default=None, description="SQL login for a real login.")
    password: Secret | None = Field(default=None, description="Password of the SQL login.")
    encrypt: Encrypt = Field(
        default="auto",
        description=(
            "TLS: `auto` handshakes when the server encrypts the whole connection (ENCRYPT_ON "
            "or ENCRYPT_REQ), `require` also asks for it and fails where the server cannot, "
            "`strict` is TDS 8.0 (TLS first, ALPN tds/8.0), `off` never handshakes."
        ),
    )

    @model_validator(mode="after")
    def _valid(self) -> MssqlSettings:
        _check_instance_name(self.instance)
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: give both or neither")
        if self.encrypt == "strict" and self.username is not None:
            raise ValueError(
                "encrypt: strict cannot go with a login: pymssql logs in with TDS 7.x only "
                "(use encrypt: require for a login over TLS)"
            )
        return self


def _check_instance_name(name: str | None) -> None:
    if name is not None and not _INSTANCE_NAME.match(name):
        raise ValueError(
            f"instance {name!r} is not a SQL Server instance name "
            "(a letter or _, then up to 15 letters, digits, _, $, # or @)"
        )


@dataclass(frozen=True, slots=True)
class Prelogin:
    """What a server's pre-login answer says about it."""

    version: str  # "16.0.4135"
    major: int
    encryption: int | None


@dataclass(frozen=True, slots=True)
class BrowserInstance:
    """One record of an SSRP answer: an instance and its endpoints."""

    server: str
    name: str
    version: str
    tcp_port: int | None


async def run(target: Target, settings: MssqlSettings, context: CheckContext) -> CheckResult:
    """Pre-login (after a Browser lookup for a named instance) and TLS as `encrypt` says, then
    a login with credentials."""
    password = reveal(settings.password) if settings.password is not None else None
    port = target.port or 1433
    where = ""
    if settings.instance is not None:
        port = await _instance_port(context, target, settings)
        where = f"instance {settings.instance} on TCP port {port} (from the Browser), "
    server_name = settings.server_name or target.host
    prelogin, tls_version = await _prelogin(
        context, Target(target.host, port), settings, server_name
    )
    context.peer = PeerInfo(
        product="SQL Server",
        version=prelogin.version if tls_version is None else f"{prelogin.version}, {tls_version}",
    )
    release = _RELEASES.get(prelogin.major)
    name = (
        f"SQL Server {release} ({prelogin.version})"
        if release
        else f"SQL Server {prelogin.version}"
    )
    encryption = (
        "no encryption answer"
        if prelogin.encryption is None
        else _ENCRYPTION_WORDS.get(prelogin.encryption, f"encryption {prelogin.encryption:#04x}")
    )
    detail = f"{where}{name}, {encryption}{_tls_note(settings.encrypt, prelogin, tls_version)}"
    detail += expiry_note(context)
    if settings.username is None or password is None:
        return context.ok(detail)
    with context.phase(Phase.AUTH):
        server_version = await context.run_blocking(
            _login,
            context.address or target.host,
            port,
            settings.username,
            password,
            encryption="require" if settings.encrypt == "require" else None,
        )
    first_line = server_version.splitlines()[0].strip() if server_version else ""
    return context.ok(f"{detail}, login as {settings.username} ok: {first_line[:120]}")


def _tls_note(encrypt: Encrypt, prelogin: Prelogin, tls_version: str | None) -> str:
    """What the detail says about TLS: the handshake made, or why none was made."""
    if encrypt == "strict":
        return f", TDS 8.0 strict encryption over {tls_version}"
    if tls_version is not None:
        return f", {tls_version} handshake in PRELOGIN"
    if encrypt == "off":
        return ", TLS not checked (encrypt: off)"
    if prelogin.encryption == ENCRYPT_OFF:
        return ", certificate not checked (encrypt: require checks it)"
    return ""


async def _instance_port(context: CheckContext, target: Target, settings: MssqlSettings) -> int:
    """Ask the Browser for the instance's TCP port within a share of the time left."""
    instance = settings.instance
    assert instance is not None
    request = bytes([SSRP_UCAST_INST]) + instance.encode("ascii") + b"\x00"
    browser = Target(target.host, settings.browser_port)
    budget = context.remaining() * BROWSER_SHARE
    try:
        async with asyncio.timeout(budget):
            reply = await exchange_datagram(
                context, browser, request, max_reply_bytes=MAX_SSRP_INST_REPLY_BYTES
            )
    except TimeoutError as exc:
        context.timeout_detail = None
        raise CheckFailure(
            Result.TIMEOUT,
            f"no answer from the SQL Server Browser on UDP {settings.browser_port} for instance "
            f"{instance} within {round(budget, 2):g}s: the instance is unknown there, the "
            "Browser is stopped, or the port is filtered",
        ) from exc
    instances = parse_svr_resp(reply.data)
    found = next((i for i in instances if i.name.casefold() == instance.casefold()), None)
    if found is None:
        raise CheckFailure(
            Result.SERVICE_ERROR,
            f"the SQL Server Browser does not know instance {instance} "
            f"(it answered with {_instance_list(instances) or 'no instance'})",
        )
    if found.tcp_port is None:
        raise CheckFailure(
            Result.SERVICE_ERROR,
            f"instance {instance} has no TCP endpoint (TCP/IP disabled for it)",
        )
    context.debug("browser", instance=found.name, port=found.tcp_port, version=found.version)
    return found.tcp_port


def build_prelogin(encryption: int = ENCRYPT_OFF) -> bytes:
    """Our PRELOGIN packet: VERSION, ENCRYPTION, INSTOPT (any), THREADID, MARS (off)."""
    options = [
        (_VERSION, bytes(6)),
        (_ENCRYPTION, bytes([encryption])),
        (_INSTOPT, b"\x00"),
        (_THREADID, bytes(4)),
        (_MARS, b"\x00"),
    ]
    offset = len(options) * 5 + 1
    table, data = b"", b""
    for token, value in options:
        table += struct.pack(">BHH", token, offset + len(data), len(value))
        data += value
    payload = table + bytes([_TERMINATOR]) + data
    header = TDS_HEADER.pack(TDS_PRELOGIN, TDS_STATUS_EOM, 8 + len(payload), 0, 1, 0)
    return header + payload


async def _prelogin(
    context: CheckContext, target: Target, settings: MssqlSettings, server_name: str
) -> tuple[Prelogin, str | None]:
    """The pre-login exchange and the TLS handshake `encrypt` asks for, on one connection.

    Returns the answer and the negotiated TLS version (None: no handshake was made). The
    connection is closed afterwards: a login, when configured, is pymssql's own connection.
    """
    reader, writer = await open_stream(context, target)
    try:
        if settings.encrypt == "strict":
            session = _TlsSession(reader, writer, _strict_ssl_context(settings), server_name)
            with context.phase(Phase.TLS):
                await session.handshake(context, in_prelogin=False)
            context.debug("tds 8.0", alpn=session.tls.selected_alpn_protocol())
            with context.phase(Phase.HANDSHAKE):  # inside TLS already: NOT_SUP, as FreeTDS sends
                prelogin = await _exchange_prelogin(context, session, ENCRYPT_NOT_SUP)
            return prelogin, session.tls.version()
        wire = _PlainWire(reader, writer)
        request = ENCRYPT_ON if settings.encrypt == "require" else ENCRYPT_OFF
        with context.phase(Phase.HANDSHAKE):
            prelogin = await _exchange_prelogin(context, wire, request)
        if not _handshake_wanted(settings.encrypt, prelogin.encryption):
            return prelogin, None
        session = _TlsSession(reader, writer, client_ssl_context(settings), server_name)
        with context.phase(Phase.TLS):
            await session.handshake(context, in_prelogin=True)
        return prelogin, session.tls.version()
    finally:
        await close_stream(writer)


def _handshake_wanted(encrypt: Encrypt, answer: int | None) -> bool:
    """Whether a TDS 7.x client with this `encrypt` handshakes after this answer (2.2.6.5).

    A server answers ENCRYPT_NOT_SUP when it has no certificate; `require` then fails, as a
    client demanding encryption must disconnect.
    """
    if encrypt == "off":
        return False
    if encrypt == "require":
        if answer in (None, ENCRYPT_NOT_SUP):
            raise CheckFailure(
                Result.TLS_ERROR,
                "the server does not support encryption (its pre-login answer says "
                "ENCRYPT_NOT_SUP) and encrypt: require asks for it",
            )
        return True
    return answer in (ENCRYPT_ON, ENCRYPT_REQ)


@functools.lru_cache(maxsize=16)
def _strict_ssl_context_for(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    """The `tls` check's rules (`client_ssl_context`) plus ALPN `tds/8.0`, built once.

    A context of its own: the shared ones of `exporter.checks.net` must not offer `tds/8.0`
    to the HTTPS and LDAPS servers the other checks reach.
    """
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([TDS8_ALPN])
    return context


def _strict_ssl_context(settings: TlsSettings) -> ssl.SSLContext:
    return _strict_ssl_context_for(settings.ca_file, not settings.insecure_skip_verify)


class _Wire(Protocol):
    """Where TDS packets go: the bare connection, or TLS over it."""

    def send(self, data: bytes) -> None: ...

    async def read_exactly(self, size: int) -> bytes: ...


class _PlainWire:
    """TDS packets straight on the connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_exactly(self, size: int) -> bytes:
        return await self.reader.readexactly(size)


class _TlsSession:
    """A client TLS session in memory BIOs over the check's asyncio stream.

    In TDS 7.x each handshake flight travels as the payload of PRELOGIN packets (MS-TDS 2.2.6.5:
    "the packet data is simply the raw bytes of the SSL handshake payload"); in TDS 8.0 the
    records go bare on the connection from the first byte. Every read is bounded: one TDS
    packet of at most 32767 bytes, or `TLS_READ_BYTES` from the socket.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ssl_context: ssl.SSLContext,
        server_name: str,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = ssl_context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_name)

    async def handshake(self, context: CheckContext, *, in_prelogin: bool) -> None:
        """Run the handshake; record the presented chain's expiry, also when it is rejected."""
        received = 0
        for _ in range(MAX_HANDSHAKE_PACKETS):
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError:
                record_certificates(context, self._rejected_chain())
                raise
            else:
                # TDS 8.0: the last flight (TLS 1.3's client Finished) waits for the pre-login and
                # leaves with it in one write; sent apart, the answer came ~45 ms later from the
                # asyncio-based fake server (measured), which a server's reads should not decide.
                if in_prelogin:
                    self._flush(in_prelogin=True)
                record_certificates(context, presented_chain(self.tls))
                context.debug(
                    "tls established", version=self.tls.version(), cipher=self.tls.cipher()
                )
                return
            self._flush(in_prelogin=in_prelogin)
            data = await (self._read_tds_packet() if in_prelogin else self._read_socket())
            received += len(data)
            if received > MAX_HANDSHAKE_BYTES:
                raise CheckFailure(
                    Result.PROTOCOL_MISMATCH,
                    f"TLS handshake longer than {MAX_HANDSHAKE_BYTES} bytes: not a TLS server",
                )
            self.incoming.write(data)
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"TLS handshake not finished after {MAX_HANDSHAKE_PACKETS} packets from the server",
        )

    def _rejected_chain(self) -> list[bytes]:
        """The chain of a handshake that failed verification (OpenSSL keeps what it got)."""
        try:
            return presented_chain(self.tls)
        except ValueError:  # no chain kept, and no verified leaf to fall back on
            return []

    def _flush(self, *, in_prelogin: bool) -> None:
        """Send what TLS has written: in PRELOGIN packets during a TDS 7.x handshake."""
        data = self.outgoing.read()
        if not data:
            return
        if not in_prelogin:
            self.writer.write(data)
            return
        room = OUR_PACKET_BYTES - TDS_HEADER.size
        chunks = [data[start : start + room] for start in range(0, len(data), room)]
        for number, chunk in enumerate(chunks, start=1):
            status = TDS_STATUS_EOM if number == len(chunks) else 0
            header = TDS_HEADER.pack(
                TDS_PRELOGIN, status, TDS_HEADER.size + len(chunk), 0, number % 256, 0
            )
            self.writer.write(header + chunk)

    async def _read_tds_packet(self) -> bytes:
        """One packet of the server's handshake: PRELOGIN (or tabular result) type, bounded."""
        raw = await self.reader.readexactly(TDS_HEADER.size)
        kind, _, length, _, _, _ = TDS_HEADER.unpack(raw)
        if kind not in (TDS_PRELOGIN, TDS_TABULAR_RESULT) or not (
            TDS_HEADER.size < length <= MAX_TDS_PACKET_BYTES
        ):
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH,
                f"not a TLS handshake in TDS packets: the server sent {quote_peer(raw)}",
            )
        return await self.reader.readexactly(length - TDS_HEADER.size)

    async def _read_socket(self) -> bytes:
        data = await self.reader.read(TLS_READ_BYTES)
        if not data:
            raise asyncio.IncompleteReadError(b"", None)
        return data

    def send(self, data: bytes) -> None:
        """Encrypt and send (after the handshake)."""
        self.tls.write(data)
        self._flush(in_prelogin=False)

    async def read_exactly(self, size: int) -> bytes:
        """Decrypt exactly `size` bytes; end of stream raises IncompleteReadError."""
        data = bytearray()
        while len(data) < size:
            try:
                chunk = self.tls.read(size - len(data))
            except ssl.SSLWantReadError:
                raw = await self.reader.read(TLS_READ_BYTES)
                if not raw:
                    raise asyncio.IncompleteReadError(bytes(data), size) from None
                self.incoming.write(raw)
                continue
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                raise asyncio.IncompleteReadError(bytes(data), size) from None
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(data), size)
            data += chunk
        return bytes(data)


async def _exchange_prelogin(context: CheckContext, wire: _Wire, encryption: int) -> Prelogin:
    """Send our PRELOGIN and read the server's answer (one packet, bounded)."""
    wire.send(build_prelogin(encryption))
    kind, status, length = await _read_header(wire)
    context.debug("tds packet", type=kind, status=status, length=length)
    payload = await wire.read_exactly(length - TDS_HEADER.size)
    prelogin = parse_prelogin_reply(payload)
    context.debug("prelogin", version=prelogin.version, encryption=prelogin.encryption)
    context.peer = PeerInfo(product="SQL Server", version=prelogin.version)  # kept on failure
    return prelogin


async def _read_header(wire: _Wire) -> tuple[int, int, int]:
    try:
        raw = await wire.read_exactly(TDS_HEADER.size)
    except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
        partial = exc.partial if isinstance(exc, asyncio.IncompleteReadError) else b""
        if partial and partial[0] == TDS_TABULAR_RESULT:  # MS-TDS 2.2.3.1.1: a reply's type
            raise CheckFailure(
                Result.SERVICE_ERROR,
                f"connection closed after {len(partial)} of the {TDS_HEADER.size} bytes of a "
                "TDS packet header",
            ) from exc
        if partial:
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH, f"not a TDS server: it sent {quote_peer(partial)}"
            ) from exc
        raise CheckFailure(
            Result.SERVICE_ERROR,
            "connection closed without a pre-login answer (not SQL Server, or a server "
            "that accepts only TDS 8.0 strict encryption)",
        ) from exc
    kind, status, length, _, _, _ = TDS_HEADER.unpack(raw)
    if kind != TDS_TABULAR_RESULT or not TDS_HEADER.size < length <= MAX_PRELOGIN_REPLY_BYTES:
        raise CheckFailure(Result.PROTOCOL_MISMATCH, f"not a TDS server: it sent {quote_peer(raw)}")
    return kind, status, length


def parse_prelogin_reply(payload: bytes) -> Prelogin:
    """Read the option table of a pre-login answer (MS-TDS 2.2.6.5); VERSION is required."""
    options: dict[int, bytes] = {}
    position = 0
    for _ in range(MAX_PRELOGIN_OPTIONS):
        if position >= len(payload):
            break
        token = payload[position]
        if token == _TERMINATOR:
            break
        if position + 5 > len(payload):
            break
        offset, size = struct.unpack_from(">HH", payload, position + 1)
        if offset + size > len(payload):
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH, "malformed pre-login answer: an option lies past its end"
            )
        options[token] = payload[offset : offset + size]
        position += 5
    else:
        raise CheckFailure(Result.PROTOCOL_MISMATCH, "malformed pre-login answer: no terminator")
    version = options.get(_VERSION)
    if version is None or len(version) < 6:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, "malformed pre-login answer: no VERSION option"
        )
    major, minor, build = struct.unpack_from(">BBH", version)
    encryption = options.get(_ENCRYPTION, b"")
    return Prelogin(
        version=f"{major}.{minor}.{build}",
        major=major,
        encryption=encryption[0] if encryption else None,
    )


def parse_svr_resp(data: bytes) -> list[BrowserInstance]:
    """Instances of an SSRP SVR_RESP (MC-SQLR 2.2.5): `05`, size (LE16), `key;value;…;;` records.

    An empty value also yields `;;`, so records are split at each `ServerName` key, not at `;;`.
    """
    if len(data) < 3 or data[0] != SSRP_SVR_RESP:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"not a SQL Server Browser answer: it sent {quote_peer(data)}"
        )
    (size,) = struct.unpack_from("<H", data, 1)
    body = data[3 : 3 + size].decode("latin-1")
    if size != len(data) - 3 or not body.startswith("ServerName;"):
        raise CheckFailure(Result.PROTOCOL_MISMATCH, "malformed SQL Server Browser answer")
    instances = []
    for record in body.split("ServerName;")[1:]:
        fields = record.split(";")
        pairs: Mapping[str, str] = dict(
            zip(["ServerName", *fields[1::2]], fields[0::2], strict=False)
        )
        port_text = pairs.get("tcp", "")
        instances.append(
            BrowserInstance(
                server=pairs.get("ServerName", ""),
                name=pairs.get("InstanceName", ""),
                version=pairs.get("Version", ""),
                tcp_port=int(port_text)
                if port_text.isdigit() and 0 < int(port_text) < 65536
                else None,
            )
        )
    return instances


def _instance_list(instances: list[BrowserInstance]) -> str:
    shown = [
        f"{i.name} tcp {i.tcp_port}" if i.tcp_port else f"{i.name} (no tcp)"
        for i in instances[:MAX_LISTED_INSTANCES]
    ]
    rest = len(instances) - len(shown)
    return ", ".join(shown) + (f" and {rest} more" if rest > 0 else "")


async def run_browser(
    target: Target, settings: MssqlBrowserSettings, context: CheckContext
) -> CheckResult:
    """List the Browser's instances (CLNT_UCAST_EX); a configured instance must be among them."""
    reply = await exchange_datagram(
        context, target, SSRP_UCAST_EX, max_reply_bytes=MAX_SSRP_EX_REPLY_BYTES
    )
    instances = parse_svr_resp(reply.data)
    server = instances[0].server if instances else ""
    listed = _instance_list(instances)
    # Instance:port pairs as the peer's version: a moved dynamic port shows in the info series.
    ports = [f"{i.name}:{i.tcp_port or '-'}" for i in instances[:MAX_LISTED_INSTANCES]]
    more = len(instances) - len(ports)
    context.peer = PeerInfo(
        product="SQL Server Browser", version=" ".join(ports) + (f" +{more}" if more > 0 else "")
    )
    detail = f"{len(instances)} instance(s) on {server}: {listed}"
    if settings.instance is not None:
        wanted = settings.instance.casefold()
        if not any(i.name.casefold() == wanted for i in instances):
            raise CheckFailure(
                Result.SERVICE_ERROR, f"instance {settings.instance} is not listed; {detail}"
            )
    return context.ok(detail)


def _login(
    deadline: Deadline, host: str, port: int, user: str, password: str, *, encryption: str | None
) -> str:
    """Log in with pymssql and return `SELECT @@VERSION` (runs on the blocking pool).

    pymssql takes whole seconds: the timeouts are rounded up, so the worker returns at most a
    second after the check's deadline. `encryption="require"` makes FreeTDS refuse a login in
    clear text; FreeTDS verifies no certificate either way (the check's own handshake does).
    """
    import pymssql  # noqa: PLC0415 - imported on the pool's thread, and only when a login is set

    seconds = max(1, math.ceil(deadline.timeout()))
    connection = pymssql.connect(
        server=host,
        port=str(port),
        user=user,
        password=password,
        login_timeout=seconds,
        timeout=seconds,
        appname="certero-flow-exporter",
        encryption=encryption,
    )
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT @@VERSION")
        row: Any = cursor.fetchone()
    finally:
        connection.close()
    return str(row[0]) if row else ""


def classify(error: BaseException, phase: Phase | None) -> tuple[Result, str] | None:
    """pymssql's errors: SQL Server's login errors and FreeTDS's connection errors."""
    if type(error).__module__.split(".")[0] != "pymssql" or not error.args:
        return None
    args = error.args[0] if isinstance(error.args[0], tuple) else error.args  # ((code, msg),)
    code = args[0] if args and isinstance(args[0], int) else None
    message = args[1] if len(args) > 1 else b""
    text = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
    first = " ".join(text.split())[:160]
    if code in _LOGIN_ERRORS:
        # pymssql's text holds the server's own message only sometimes (it keeps the last
        # FreeTDS messages of the thread); the number is what is always there.
        said = _SERVER_MESSAGE.search(text)
        quoted = f": {said.group(0)}" if said else ""
        return Result.AUTH_FAILED, f"SQL Server error {code} ({_LOGIN_ERRORS[code]}){quoted}"
    if "Connection refused" in text:
        return Result.REFUSED, f"pymssql error {code}: connection refused"
    if "timed out" in text:
        return Result.TIMEOUT, f"pymssql error {code}: {first}"
    return Result.SERVICE_ERROR, f"pymssql error {code}: {first}"


SPEC = CheckSpec(
    "mssql",
    MssqlSettings,
    run,
    "SQL Server TDS pre-login (MS-TDS 2.2.6.5), Browser instance lookup, optional SQL login",
    classify=classify,
)
BROWSER_SPEC = CheckSpec(
    "mssql_browser",
    MssqlBrowserSettings,
    run_browser,
    "SQL Server Browser instance list (MC-SQLR SSRP on UDP 1434)",
    transport="udp",
)
