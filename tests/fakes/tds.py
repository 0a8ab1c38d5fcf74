"""A SQL Server stand-in written from MS-TDS, and a SQL Server Browser written from MC-SQLR.

The TDS side answers what a client sends before and during a SQL login:
- PRELOGIN (packet type 0x12, MS-TDS 2.2.6.5): VERSION, ENCRYPTION, INSTOPT, THREADID, MARS. The
  ENCRYPTION answer follows the table of 2.2.6.5 from the client's value and the server's own
  setting (`encryption`): NOT_SUP (no certificate, the default), OFF (a certificate, encryption
  when the client asks; only LOGIN7 is encrypted otherwise), ON or REQ (encryption forced).
- TLS (with a certificate): the handshake records travel as the payload of PRELOGIN packets in
  both directions (2.2.6.5, 3.3.5.2), capped at TLS 1.2 as SQL Server's TDS 7.x is; then every
  later packet goes inside TLS records on the bare connection, or only the LOGIN7 packet when the
  answer was ENCRYPT_OFF (login-only encryption). With `strict` the fake is a TDS 8.0 server:
  TLS (ALPN `tds/8.0`) from the first byte, the pre-login inside it.
- LOGIN7 (type 0x10, MS-TDS 2.2.6.4): the user and the password (each byte XOR 0xA5 with its
  nibbles swapped, 2.2.6.4) read from the offset/length table; the right pair gets ENVCHANGE
  (database, packet size; 2.2.7.9), LOGINACK (2.2.7.14) and DONE (2.2.7.6); a wrong one the
  ERROR token (2.2.7.10) 18456 "Login failed for user" and DONE with DONE_ERROR.
- SQL batch (type 0x01, 2.2.6.7): `SELECT @@VERSION` gets one NVARCHAR column (COLMETADATA 2.2.7.4, ROW
  2.2.7.19) holding the server's @@VERSION text and DONE with a row count; other batches DONE;
  ATTENTION (type 0x06) DONE with DONE_ATTN.
All responses are packet type 0x04 (tabular result), the handshake's PRELOGIN packets apart.
The Browser answers CLNT_BCAST_EX (0x02) and CLNT_UCAST_EX (0x03) alike with every instance
(MC-SQLR 2.2.1, 2.2.2, 3.2.5) and CLNT_UCAST_INST (0x04 name 00) with that instance, staying
silent for an unknown one as SQL Server's Browser does (MC-SQLR 3.2.5).

FreeTDS's `tsql`, pymssql and nmap's ms-sql-info prove both in tests/checks/test_mssql_peer.py,
tsql and pymssql with encryption required (and pymssql's FreeTDS in TDS 8.0 strict mode) the TLS
side; impacket's SSRP client proves the Browser in tests/checks/test_mssql_impacket.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import ssl
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from tests.peers.pki import CertPair
from tests.peers.udp import Answer, UdpPeer, udp_peer

HEADER = struct.Struct(">BBHHBB")
VERSION = (16, 0, 4135)
VERSION_TEXT = "Microsoft SQL Server 2022 (RTM-CU15) (KB5041321) - 16.0.4135.4 (X64) fake"
SERVER_NAME = "FAKESQL"
MAX_MESSAGE_BYTES = 64 * 1024  # a LOGIN7 or a short batch; anything longer ends the connection
MAX_PACKETS = 32
THREAD_START_TIMEOUT_S = 10.0
PACKET_BYTES = 4096  # the default packet size before a login changes it
TLS_READ_BYTES = 16 * 1024
# MS-TDS 2.2.6.5 B_FENCRYPTION values.
ENCRYPT_OFF, ENCRYPT_ON, ENCRYPT_NOT_SUP, ENCRYPT_REQ = 0x00, 0x01, 0x02, 0x03
TDS8_ALPN = "tds/8.0"


@dataclass
class TdsFake:
    """Where the fake listens and what it accepts; `logins` records every user that tried."""

    port: int
    user: str
    password: str
    logins: list[tuple[str, bool]] = field(default_factory=list)
    answer_logins: bool = True  # False: LOGIN7 is read and never answered (a hung server)
    encryption: int = ENCRYPT_NOT_SUP  # the server's setting (needs `certificate` unless NOT_SUP)
    certificate: CertPair | None = None
    strict: bool = False  # TDS 8.0: TLS from the first byte
    client_encryption: list[int] = field(default_factory=list)  # each PRELOGIN's ENCRYPTION
    handshakes: list[str] = field(default_factory=list)  # the TLS version of each handshake
    alpn: list[str | None] = field(default_factory=list)  # the protocol each strict client chose
    encrypted_logins: list[bool] = field(default_factory=list)  # LOGIN7 came inside TLS


def negotiate(client: int, server: int) -> tuple[int, str]:
    """The ENCRYPTION answer and what follows it, by the table of MS-TDS 2.2.6.5.

    What follows: "none" (clear text), "login" (only LOGIN7 inside TLS), "full" (everything
    inside TLS) or "close" (the server cannot serve this client). A client that asked for
    encryption and gets NOT_SUP must disconnect; the fake leaves that to the client.
    """
    if server == ENCRYPT_NOT_SUP:
        return ENCRYPT_NOT_SUP, "none"
    if client == ENCRYPT_NOT_SUP:
        return (ENCRYPT_NOT_SUP, "none") if server == ENCRYPT_OFF else (ENCRYPT_REQ, "close")
    if client == ENCRYPT_OFF:
        return (ENCRYPT_OFF, "login") if server == ENCRYPT_OFF else (ENCRYPT_REQ, "full")
    return ENCRYPT_ON, "full"  # the client asks (ON) or requires (REQ) encryption


def prelogin_option(payload: bytes, token: int) -> bytes | None:
    """One option's data from a PRELOGIN option table (2.2.6.5), None when absent."""
    position = 0
    while position + 5 <= len(payload) and payload[position] != 0xFF:
        option, offset, length = struct.unpack_from(">BHH", payload, position)
        if option == token:
            return payload[offset : offset + length]
        position += 5
    return None


class Stream(Protocol):
    """What the fake reads packets from and writes them to: the connection or TLS over it."""

    async def readexactly(self, n: int) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


class PlainStream:
    """TDS packets straight on the connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def readexactly(self, n: int) -> bytes:
        """Read exactly `n` bytes from the connection."""
        return await self.reader.readexactly(n)

    def write(self, data: bytes) -> None:
        """Queue `data` on the connection."""
        self.writer.write(data)

    async def drain(self) -> None:
        """Wait until the connection took what was written."""
        await self.writer.drain()


class TlsStream(PlainStream):
    """TDS packets inside TLS records on the connection, the session kept in memory BIOs."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tls: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
    ) -> None:
        super().__init__(reader, writer)
        self.tls = tls
        self.incoming = incoming
        self.outgoing = outgoing

    async def readexactly(self, n: int) -> bytes:
        """Decrypt exactly `n` bytes, reading at most `TLS_READ_BYTES` from the socket at a time."""
        data = bytearray()
        while len(data) < n:
            try:
                chunk = self.tls.read(n - len(data))
            except ssl.SSLWantReadError:
                raw = await self.reader.read(TLS_READ_BYTES)
                if not raw:
                    raise asyncio.IncompleteReadError(bytes(data), n) from None
                self.incoming.write(raw)
                continue
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(data), n)
            data += chunk
        return bytes(data)

    def write(self, data: bytes) -> None:
        """Encrypt `data` and queue the records on the connection."""
        self.tls.write(data)
        self.writer.write(self.outgoing.read())


def server_ssl_context(certificate: CertPair, *, strict: bool) -> ssl.SSLContext:
    """The fake's TLS: TDS 7.x stops at TLS 1.2 as SQL Server does; TDS 8.0 offers `tds/8.0`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.cert, certificate.key)
    if strict:
        context.set_alpn_protocols([TDS8_ALPN])
        context.num_tickets = 0
    else:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


async def accept_tls_in_prelogin(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext
) -> TlsStream:
    """The server side of the TDS 7.x handshake: each flight is the payload of PRELOGIN packets."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=True)
    plain = PlainStream(reader, writer)
    for _ in range(MAX_PACKETS):
        kind, payload = await _read_message(plain)
        if kind != 0x12:
            raise ConnectionError(f"packet type {kind:#04x} during the TLS handshake")
        incoming.write(payload)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            done = False
        else:
            done = True
        flight = outgoing.read()
        room = PACKET_BYTES - HEADER.size
        chunks = [flight[start : start + room] for start in range(0, len(flight), room)]
        for number, chunk in enumerate(chunks, start=1):
            status = 0x01 if number == len(chunks) else 0x00
            writer.write(HEADER.pack(0x12, status, HEADER.size + len(chunk), 0, number, 0) + chunk)
        await writer.drain()
        if done:
            return TlsStream(reader, writer, tls, incoming, outgoing)
    raise ConnectionError("TLS handshake did not finish")


def prelogin_reply(encryption: int = ENCRYPT_NOT_SUP) -> bytes:
    """The server's PRELOGIN answer: same option-table layout as the request."""
    major, minor, build = VERSION
    options = [
        (0x00, struct.pack(">BBHH", major, minor, build, 0)),
        (0x01, bytes([encryption])),
        (0x02, b"\x00"),
        (0x03, b""),
        (0x04, b"\x00"),
    ]
    offset = len(options) * 5 + 1
    table, data = b"", b""
    for token, value in options:
        table += struct.pack(">BHH", token, offset + len(data), len(value))
        data += value
    return table + b"\xff" + data


def _b_varchar(text: str) -> bytes:
    encoded = text.encode("utf-16-le")
    return bytes([len(text)]) + encoded


def _us_varchar(text: str) -> bytes:
    return struct.pack("<H", len(text)) + text.encode("utf-16-le")


def _done(status: int, rows: int = 0) -> bytes:
    return b"\xfd" + struct.pack("<HHQ", status, 0, rows)  # TDS 7.2+: 8-byte row count


def _envchange(kind: int, new: str, old: str) -> bytes:
    body = bytes([kind]) + _b_varchar(new) + _b_varchar(old)
    return b"\xe3" + struct.pack("<H", len(body)) + body


def login_ack(tds_version: bytes) -> bytes:
    """ENVCHANGE database and packet size, LOGINACK echoing the client's TDS version, DONE."""
    major, minor, build = VERSION
    body = (
        b"\x01"  # interface: SQL_TSQL
        + tds_version[::-1]  # LOGIN7 sends it little-endian, LOGINACK big-endian (2.2.7.14)
        + _b_varchar("Microsoft SQL Server")
        + bytes([major, minor])
        + struct.pack(">H", build)
    )
    return (
        _envchange(1, "master", "")
        + _envchange(4, "4096", "4096")
        + b"\xad"
        + struct.pack("<H", len(body))
        + body
        + _done(0)
    )


def login_error(user: str) -> bytes:
    """ERROR 18456 state 1 class 14 as SQL Server sends it, then DONE with DONE_ERROR."""
    body = (
        struct.pack("<iBB", 18456, 1, 14)
        + _us_varchar(f"Login failed for user '{user}'.")
        + _b_varchar(SERVER_NAME)
        + _b_varchar("")
        + struct.pack("<i", 1)
    )
    return b"\xaa" + struct.pack("<H", len(body)) + body + _done(0x02)


def version_rows() -> bytes:
    """One NVARCHAR(4000) column, unnamed, one row with the @@VERSION text, DONE with a count."""
    collation = bytes.fromhex("0904d00034")
    metadata = (
        b"\x81"
        + struct.pack("<H", 1)
        + struct.pack("<IH", 0, 0x0001)  # user type, flags: nullable
        + b"\xe7"
        + struct.pack("<H", 8000)
        + collation
        + _b_varchar("")
    )
    value = VERSION_TEXT.encode("utf-16-le")
    row = b"\xd1" + struct.pack("<H", len(value)) + value
    return metadata + row + _done(0x10, 1)


def batch_reply(payload: bytes) -> bytes:
    """`SELECT @@VERSION` gets its row; any other batch (session SET options) a bare DONE.

    A TDS 7.2+ batch starts with ALL_HEADERS (2.2.5.3), whose first DWORD is its total length.
    """
    (headers_length,) = struct.unpack_from("<I", payload)
    text = payload[headers_length:].decode("utf-16-le", errors="replace")
    return version_rows() if "@@VERSION" in text.upper() else _done(0)


def decode_password(scrambled: bytes) -> str:
    """Undo LOGIN7's password scrambling: XOR 0xA5, then swap the nibbles (MS-TDS 2.2.6.4)."""
    plain = bytes((((b ^ 0xA5) << 4) & 0xF0) | ((b ^ 0xA5) >> 4) for b in scrambled)
    return plain.decode("utf-16-le")


def parse_login7(payload: bytes) -> tuple[bytes, str, str]:
    """The TDS version, user and password of a LOGIN7 message."""
    tds_version = payload[4:8]
    user_offset, user_chars, password_offset, password_chars = struct.unpack_from(
        "<HHHH", payload, 40
    )
    user = payload[user_offset : user_offset + 2 * user_chars].decode("utf-16-le")
    password = decode_password(payload[password_offset : password_offset + 2 * password_chars])
    return tds_version, user, password


async def _read_message(reader: Stream) -> tuple[int, bytes]:
    """One TDS message: the packets up to the one with the EOM status bit."""
    kind, payload = 0, b""
    for _ in range(MAX_PACKETS):
        kind, status, length, _, _, _ = HEADER.unpack(await reader.readexactly(HEADER.size))
        payload += await reader.readexactly(length - HEADER.size)
        if status & 0x01 or len(payload) > MAX_MESSAGE_BYTES:
            break
    return kind, payload


def _packet(payload: bytes) -> bytes:
    return HEADER.pack(0x04, 0x01, HEADER.size + len(payload), 0, 1, 0) + payload


@contextlib.asynccontextmanager
async def tds_server(
    user: str,
    password: str,
    host: str = "127.0.0.1",
    *,
    encryption: int = ENCRYPT_NOT_SUP,
    certificate: CertPair | None = None,
    strict: bool = False,
) -> AsyncIterator[TdsFake]:
    """Serve the fake SQL Server on a free TCP port of `host`.

    `encryption` is the server's setting (MS-TDS 2.2.6.5); any other than NOT_SUP, and `strict`,
    need a `certificate`.
    """
    if (encryption != ENCRYPT_NOT_SUP or strict) and certificate is None:
        raise ValueError("a server that encrypts needs a certificate")
    fake = TdsFake(
        port=0,
        user=user,
        password=password,
        encryption=encryption,
        certificate=certificate,
        strict=strict,
    )
    tls_context = (
        server_ssl_context(certificate, strict=strict) if certificate is not None else None
    )
    tasks: set[asyncio.Task[object]] = set()
    writers: set[asyncio.StreamWriter] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            tasks.add(task)
        writers.add(writer)
        try:
            await serve_connection(fake, tls_context, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(on_connect, host, 0, ssl=tls_context if strict else None)
    fake.port = server.sockets[0].getsockname()[1]
    try:
        yield fake
    finally:
        server.close()
        for open_writer in writers:  # the handlers then end on end-of-stream, not cancelled
            open_writer.transport.abort()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def serve_connection(
    fake: TdsFake,
    tls_context: ssl.SSLContext | None,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """One client connection: pre-login, TLS as negotiated, login and batches."""
    plain = PlainStream(reader, writer)
    stream: Stream = plain
    follows = "none"
    if fake.strict:
        ssl_object = writer.get_extra_info("ssl_object")
        fake.alpn.append(ssl_object.selected_alpn_protocol())
        fake.handshakes.append(ssl_object.version())
    for _ in range(MAX_PACKETS):
        kind, payload = await _read_message(stream)
        if kind == 0x12:
            stream, follows = await _answer_prelogin(fake, tls_context, stream, payload, plain)
            if follows == "close":
                break
            continue
        if kind == 0x10:
            fake.encrypted_logins.append(fake.strict or stream is not plain)
            if follows == "login":  # ENCRYPT_OFF: the answer and all after it in clear text
                stream = plain
            tds_version, login_user, login_password = parse_login7(payload)
            accepted = (login_user, login_password) == (fake.user, fake.password)
            fake.logins.append((login_user, accepted))
            if not fake.answer_logins:
                await reader.read()  # until the client gives up and closes
                break
            stream.write(_packet(login_ack(tds_version) if accepted else login_error(login_user)))
        elif kind == 0x01:
            stream.write(_packet(batch_reply(payload)))
        elif kind == 0x06:  # ATTENTION (2.2.1.7): acknowledged by DONE_ATTN
            stream.write(_packet(_done(0x20)))
        else:
            break
        await stream.drain()


async def _answer_prelogin(
    fake: TdsFake,
    tls_context: ssl.SSLContext | None,
    stream: Stream,
    payload: bytes,
    plain: PlainStream,
) -> tuple[Stream, str]:
    """Answer a PRELOGIN and make the TLS handshake it negotiates; the stream to go on with."""
    client = (prelogin_option(payload, 0x01) or bytes([ENCRYPT_NOT_SUP]))[0]
    fake.client_encryption.append(client)
    if fake.strict:  # already inside TLS: the answer only says so
        answer, follows = ENCRYPT_ON, "none"
    else:
        answer, follows = negotiate(client, fake.encryption)
    stream.write(_packet(prelogin_reply(answer)))
    await stream.drain()
    if follows in ("login", "full") and tls_context is not None:
        tls = await accept_tls_in_prelogin(plain.reader, plain.writer, tls_context)
        fake.handshakes.append(tls.tls.version() or "")
        return tls, follows
    return stream, follows


def browser_record(instance: str, port: int) -> str:
    """One SVR_RESP record as SQL Server's Browser writes it (MC-SQLR 2.2.5)."""
    return (
        f"ServerName;{SERVER_NAME};InstanceName;{instance};IsClustered;No;"
        f"Version;16.0.4135.4;tcp;{port};np;\\\\{SERVER_NAME}\\pipe\\MSSQL${instance}\\sql\\query;;"
    )


def browser_answer(instances: dict[str, int]) -> Answer:
    """The Browser's answer function for `udp_peer`: instance name → TCP port."""

    def answer(data: bytes) -> bytes | None:
        if data[:1] in (b"\x02", b"\x03"):
            body = "".join(browser_record(name, port) for name, port in instances.items())
        elif data[:1] == b"\x04":
            wanted = data[1:].split(b"\x00")[0].decode("latin-1").casefold()
            known = {name.casefold(): (name, port) for name, port in instances.items()}
            if wanted not in known:
                return None
            body = browser_record(*known[wanted])
        else:
            return None
        encoded = body.encode("latin-1")
        return b"\x05" + struct.pack("<H", len(encoded)) + encoded

    return answer


@contextlib.asynccontextmanager
async def browser(
    instances: dict[str, int], host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[UdpPeer]:
    """Serve the Browser on UDP `host`:`port` (a free port when 0)."""
    answer = browser_answer(instances)
    async with udp_peer(answer, host, port) as peer:
        yield peer


@contextlib.contextmanager
def tds_server_thread(
    user: str,
    password: str,
    *,
    encryption: int = ENCRYPT_NOT_SUP,
    certificate: CertPair | None = None,
) -> Iterator[TdsFake]:
    """The fake SQL Server on a thread of its own, for tests without an event loop."""
    started: queue.Queue[tuple[TdsFake, asyncio.AbstractEventLoop, asyncio.Event]] = queue.Queue()

    async def serve() -> None:
        stop = asyncio.Event()
        async with tds_server(
            user, password, encryption=encryption, certificate=certificate
        ) as fake:
            started.put((fake, asyncio.get_running_loop(), stop))
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    fake, loop, stop = started.get(timeout=THREAD_START_TIMEOUT_S)
    try:
        yield fake
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(THREAD_START_TIMEOUT_S)
