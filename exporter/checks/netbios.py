"""`netbios_ns` and `netbios_ssn`: the NetBIOS name service (UDP 137) and session service (TCP 139).

`netbios_ns` sends the NODE STATUS REQUEST (RFC 1002 4.2.17) for the wildcard name `*`, the
question `nmblookup -A` and `nbtstat -A` ask, and reads the NODE STATUS RESPONSE (4.2.18): the
node's name table and the UNIT_ID of its statistics. From these come what Certero identifies
a Windows PC by: the machine name (the unique name with suffix 0x00, else 0x20), the workgroup
or domain (the group name with suffix 0x00) and the adapter's MAC address. They are the
peer info of the result. Samba answers with an all-zero MAC, which is reported as no MAC.

`netbios_ssn` opens TCP 139 and sends a SESSION REQUEST (RFC 1002 4.3.2) calling
`*SMBSERVER<20>` (the name Windows and Samba accept from a client that does not know the
server's own name) or the configured `called_name`, from the fixed calling name
`CERTEROFLOW<00>`. Every answer RFC 1002 4.3.3 to 4.3.5 defines proves the session service:

* POSITIVE SESSION RESPONSE (0x82): ok, the service takes sessions for that name.
* RETARGET SESSION RESPONSE (0x84): ok, naming the address and port the caller is sent to.
* NEGATIVE SESSION RESPONSE (0x83) with error 0x82, "called name not present": ok with the
  words in the detail. The service runs; the host only goes by another name (Windows answers
  this way to a name it does not hold), and a client that knows the name gets its session.
* NEGATIVE SESSION RESPONSE with any other error: `service_error`, the code decoded. 0x80
  (not listening on the called name) and 0x81 (not listening for the calling name) mean the
  name exists but no server takes our session, 0x83 (insufficient resources) a server that
  cannot take one now, 0x8F an unspecified error: the flow reaches the right service, which
  will not serve it, as any peer answering with an error status is classified.

Anything else is `protocol_mismatch`. Nothing is read beyond what the packet's own length
allows, and no length is believed past what RFC 1002 defines for its packet type.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import struct
from dataclasses import dataclass

from pydantic import Field, field_validator

from exporter.checks.base import CheckContext, CheckSettings, CheckSpec, Target, quote_peer
from exporter.checks.net import UdpSettings, close_stream, exchange_datagram, open_stream
from exporter.errors import CheckFailure
from exporter.result import CheckResult, PeerInfo, Phase, Result

NAME_SERVICE_PORT = 137
SESSION_SERVICE_PORT = 139
DEFAULT_CALLED_NAME = "*SMBSERVER"
CALLING_NAME = "CERTEROFLOW"
FILE_SERVER_SUFFIX = 0x20  # the server service's name: what an SMB client calls
WORKSTATION_SUFFIX = 0x00
DOMAIN_CONTROLLERS_SUFFIX = 0x1C

# RFC 1002 4.2.1.1 header; 4.2.17 / 4.2.18 node status
NS_HEADER = struct.Struct(">HHHHHH")  # NAME_TRN_ID, flags, QD, AN, NS, AR counts
RR_FIXED = struct.Struct(">HHIH")  # RR_TYPE, RR_CLASS, TTL, RDLENGTH
NODE_NAME = struct.Struct(">15sBH")  # name (blank-padded), suffix, NAME_FLAGS
TYPE_NBSTAT = 0x0021
CLASS_IN = 0x0001
FLAG_RESPONSE = 0x8000
FLAG_GROUP = 0x8000  # NAME_FLAGS: a group name, not a unique one
STATISTICS_BYTES = 46  # the STATISTICS field of 4.2.18; its first 6 bytes are the UNIT_ID
UNIT_ID_BYTES = 6
MAX_WIRE_NAME_BYTES = 255  # a compressed name with its scope, as for DNS (RFC 1035 3.1)
MAX_NAMES = 255  # NUM_NAMES is one byte
MAX_NODE_STATUS_REPLY_BYTES = (
    NS_HEADER.size
    + MAX_WIRE_NAME_BYTES
    + RR_FIXED.size
    + 1
    + MAX_NAMES * NODE_NAME.size
    + STATISTICS_BYTES
)
_RCODES = {
    1: "format error (FMT_ERR)",
    2: "server failure (SRV_ERR)",
    3: "name error (NAM_ERR)",
    4: "unsupported request (IMP_ERR)",
    5: "refused (RFS_ERR)",
    6: "name active elsewhere (ACT_ERR)",
    7: "name in conflict (CFT_ERR)",
}

# RFC 1002 4.3.1 session packet header: type, flags (bit 0 extends the length), length
SESSION_HEADER = struct.Struct(">BBH")
SESSION_REQUEST = 0x81
POSITIVE_RESPONSE = 0x82
NEGATIVE_RESPONSE = 0x83
RETARGET_RESPONSE = 0x84
KEEP_ALIVE = 0x85
# Every answer to a session request has this exact trailer length (RFC 1002 4.3.3 to 4.3.6).
_TRAILER_BYTES = {POSITIVE_RESPONSE: 0, NEGATIVE_RESPONSE: 1, RETARGET_RESPONSE: 6, KEEP_ALIVE: 0}
MAX_KEEP_ALIVES = 4  # a keep-alive may come first; more before the answer is not a session
CALLED_NAME_NOT_PRESENT = 0x82
_NEGATIVE_WORDS = {
    0x80: "not listening on the called name",
    0x81: "not listening for the calling name",
    0x82: "called name not present",
    0x83: "called name present, but insufficient resources",
    0x8F: "unspecified error",
}
# Letters, digits and the punctuation NetBIOS names may hold; a leading `*` for *SMBSERVER
# and the like. Dots are left out: a dot starts a NetBIOS scope, which this check does not use.
_CALLED_NAME = re.compile(r"^\*?[A-Z0-9!@#$%^&()\-'{}~_]{1,15}$")


class NetbiosNsSettings(UdpSettings):
    """Options of the `netbios_ns` check: the UDP retransmissions every UDP check has."""


class NetbiosSsnSettings(CheckSettings):
    """Options of the `netbios_ssn` check."""

    called_name: str = Field(
        default=DEFAULT_CALLED_NAME,
        description=(
            "NetBIOS name called in the session request, with suffix <20> (file server); "
            "*SMBSERVER is accepted by Windows and Samba whatever their own name."
        ),
    )

    @field_validator("called_name")
    @classmethod
    def _netbios_name(cls, value: str) -> str:
        name = value.upper()
        if len(name) > 15 or not _CALLED_NAME.match(name):
            raise ValueError(
                f"{value!r} is not a NetBIOS name: 1 to 15 letters, digits or "
                "!@#$%^&()-'{}~_ (an optional leading *), without dots or spaces"
            )
        return name


def encode_name(name: bytes, suffix: int, padding: bytes = b" ") -> bytes:
    """A NetBIOS name in its wire form (RFC 1001 14.1, RFC 1002 4.1): 34 bytes, no scope.

    The name is padded to 15 bytes, the suffix added as the 16th, and each half-byte written
    as a letter from 'A' (first-level encoding); a length byte of 32 comes first and the
    empty root label last.
    """
    if not 1 <= len(name) <= 15:
        raise ValueError(f"a NetBIOS name has 1 to 15 bytes, not {len(name)}")
    raw = name.ljust(15, padding) + bytes([suffix])
    encoded = bytes(letter for byte in raw for letter in (0x41 + (byte >> 4), 0x41 + (byte & 0xF)))
    return b"\x20" + encoded + b"\x00"


def build_node_status_request(transaction_id: int) -> bytes:
    """NODE STATUS REQUEST for `*` (RFC 1002 4.2.17): the 50 bytes nmblookup -A sends."""
    header = NS_HEADER.pack(transaction_id, 0, 1, 0, 0, 0)
    question = encode_name(b"*", 0x00, padding=b"\x00")
    return header + question + struct.pack(">HH", TYPE_NBSTAT, CLASS_IN)


def build_session_request(called_name: str) -> bytes:
    """SESSION REQUEST (RFC 1002 4.3.2): called name with suffix <20>, our calling name <00>."""
    trailer = encode_name(called_name.encode("ascii"), FILE_SERVER_SUFFIX) + encode_name(
        CALLING_NAME.encode("ascii"), WORKSTATION_SUFFIX
    )
    return SESSION_HEADER.pack(SESSION_REQUEST, 0, len(trailer)) + trailer


@dataclass(frozen=True, slots=True)
class NodeName:
    """One entry of a node's name table (RFC 1002 4.2.18 NODE_NAME)."""

    name: str
    suffix: int
    flags: int

    @property
    def group(self) -> bool:
        """A group name (a workgroup or domain) rather than one this node owns alone."""
        return bool(self.flags & FLAG_GROUP)

    def __str__(self) -> str:
        return f"{self.name}<{self.suffix:02x}>" + (" group" if self.group else "")


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What a node status response says about the node."""

    names: tuple[NodeName, ...]
    unit_id: bytes | None  # the MAC address, None when the response carries no statistics

    @property
    def machine_name(self) -> str | None:
        """The node's own name: its unique workstation name, else its unique file-server name."""
        for suffix in (WORKSTATION_SUFFIX, FILE_SERVER_SUFFIX):
            for entry in self.names:
                if entry.suffix == suffix and not entry.group:
                    return entry.name
        return None

    @property
    def workgroup(self) -> str | None:
        """The workgroup or domain the node belongs to (its group name with suffix 0x00)."""
        return next(
            (e.name for e in self.names if e.group and e.suffix == WORKSTATION_SUFFIX), None
        )

    @property
    def mac(self) -> str | None:
        """The MAC address as aa:bb:cc:dd:ee:ff; None when absent or all zeros (Samba)."""
        if self.unit_id is None or not any(self.unit_id):
            return None
        return ":".join(f"{byte:02x}" for byte in self.unit_id)

    @property
    def file_server(self) -> bool:
        """The node holds a unique <20> name: its server service (SMB) is registered."""
        return any(e.suffix == FILE_SERVER_SUFFIX and not e.group for e in self.names)

    @property
    def domain_controller_of(self) -> str | None:
        """The domain whose controllers' group name (<1C>) the node holds, if any."""
        return next(
            (e.name for e in self.names if e.group and e.suffix == DOMAIN_CONTROLLERS_SUFFIX),
            None,
        )


def _mismatch(reason: str) -> CheckFailure:
    return CheckFailure(Result.PROTOCOL_MISMATCH, f"not a NetBIOS node status response: {reason}")


def _skip_name(data: bytes, offset: int) -> int:
    """The offset after the encoded name at `offset` (labels, or a compression pointer)."""
    start = offset
    while True:
        if offset >= len(data):
            raise _mismatch(f"truncated in the answer's name ({len(data)} bytes)")
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # a pointer ends the name (RFC 1002 4.1, as RFC 1035 4.1.4)
            if offset + 2 > len(data):
                raise _mismatch(f"truncated in the answer's name ({len(data)} bytes)")
            return offset + 2
        if length > 63:
            raise _mismatch(f"label length {length} in the answer's name (at most 63)")
        offset += 1 + length
        if offset - start > MAX_WIRE_NAME_BYTES:
            raise _mismatch(f"the answer's name is longer than {MAX_WIRE_NAME_BYTES} bytes")


def _printable_name(raw: bytes) -> str:
    """A name from the table, blank padding removed; bytes that do not print become '?'."""
    text = raw.decode("latin-1").rstrip(" \x00")
    return "".join(char if char.isprintable() else "?" for char in text)


def parse_node_status(data: bytes, transaction_id: int, request: bytes = b"") -> NodeStatus:
    """Read a NODE STATUS RESPONSE (RFC 1002 4.2.18), trusting no count or length in it.

    The answer record follows the header, as nmap and impacket read it; a wrong transaction
    id, a response bit that is not set or an answer that is not NBSTAT is a protocol
    mismatch, a non-zero RCODE a service error.
    """
    if len(data) < NS_HEADER.size:
        raise _mismatch(f"a {len(data)}-byte datagram, shorter than the 12-byte header")
    answer_id, flags, _, answers, _, _ = NS_HEADER.unpack_from(data)
    if request and data == request:
        raise _mismatch("the request came back unchanged (an echo service?)")
    if not flags & FLAG_RESPONSE:
        raise _mismatch(f"the response bit is not set (flags {flags:#06x})")
    if answer_id != transaction_id:
        raise _mismatch(
            f"it answers transaction {answer_id:#06x}, the request was {transaction_id:#06x}"
        )
    opcode = (flags >> 11) & 0xF
    if opcode != 0:
        raise _mismatch(f"opcode {opcode}, not a query (0)")
    rcode = flags & 0xF
    if rcode:
        words = _RCODES.get(rcode, "an error code RFC 1002 does not define")
        raise CheckFailure(
            Result.SERVICE_ERROR,
            f"the name service answered the node status request with RCODE {rcode}: {words}",
        )
    if answers < 1:
        raise _mismatch("no answer record")
    offset = _skip_name(data, NS_HEADER.size)
    if offset + RR_FIXED.size > len(data):
        raise _mismatch(f"truncated in the answer record ({len(data)} bytes)")
    rr_type, rr_class, _, rdlength = RR_FIXED.unpack_from(data, offset)
    offset += RR_FIXED.size
    if rr_type != TYPE_NBSTAT or rr_class != CLASS_IN:
        raise _mismatch(
            f"answer of type {rr_type:#06x} class {rr_class:#06x}, not NBSTAT (0x0021, IN)"
        )
    if rdlength < 1 or offset + rdlength > len(data):
        raise _mismatch(f"RDLENGTH {rdlength}, but {len(data) - offset} bytes follow (truncated)")
    rdata = data[offset : offset + rdlength]
    count = rdata[0]
    table_end = 1 + count * NODE_NAME.size
    if table_end > len(rdata):
        raise _mismatch(f"NUM_NAMES {count} needs {table_end} bytes, RDATA has {len(rdata)}")
    names = tuple(
        NodeName(_printable_name(raw), suffix, name_flags)
        for raw, suffix, name_flags in (
            NODE_NAME.unpack_from(rdata, 1 + index * NODE_NAME.size) for index in range(count)
        )
    )
    statistics = rdata[table_end:]
    unit_id = statistics[:UNIT_ID_BYTES] if len(statistics) >= UNIT_ID_BYTES else None
    return NodeStatus(names=names, unit_id=unit_id)


def describe_node(status: NodeStatus) -> tuple[PeerInfo, str]:
    """The peer info (machine name; workgroup and MAC) and the detail of an answered request."""
    machine = status.machine_name
    workgroup = status.workgroup
    mac = status.mac
    facts = []
    if workgroup:
        facts.append(f"workgroup/domain {workgroup}")
    if mac:
        facts.append(f"MAC {mac}")
    elif status.unit_id is None:
        facts.append("no MAC (the answer has no statistics)")
    else:
        facts.append("no MAC (all zeros, as Samba answers)")
    parts = [machine or "no unique name", *facts]
    dc = status.domain_controller_of
    if dc:
        parts.append(f"domain controller of {dc}")
    parts.append(
        f"{len(status.names)} names"
        + (", file server <20> registered" if status.file_server else ", no file server <20>")
    )
    version = ", ".join(
        part
        for part in (f"workgroup {workgroup}" if workgroup else "", f"MAC {mac}" if mac else "")
        if part
    )
    return PeerInfo(product=machine or "NetBIOS node", version=version), ", ".join(parts)


async def run_name_service(
    target: Target, settings: NetbiosNsSettings, context: CheckContext
) -> CheckResult:
    """Ask the node for its name table (NBSTAT) and report who it says it is."""
    transaction_id = secrets.randbits(16)
    request = build_node_status_request(transaction_id)
    reply = await exchange_datagram(
        context,
        Target(target.host, target.port or NAME_SERVICE_PORT),
        request,
        max_reply_bytes=MAX_NODE_STATUS_REPLY_BYTES,
        retransmissions=settings.retransmissions,
    )
    status = parse_node_status(reply.data, transaction_id, request)
    context.debug("name table", names=" ".join(str(name) for name in status.names) or "-")
    context.peer, detail = describe_node(status)
    if reply.requests_sent > 1:
        detail += f" (answered after {reply.requests_sent} requests)"
    return context.ok(detail)


async def _read_session_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The first answer to a session request, keep-alives skipped: its type and trailer."""
    for _ in range(MAX_KEEP_ALIVES + 1):
        try:
            header = await reader.readexactly(SESSION_HEADER.size)
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            partial = exc.partial if isinstance(exc, asyncio.IncompleteReadError) else b""
            if partial[:1] and partial[0] in _TRAILER_BYTES and partial[1:2] in (b"", b"\0"):
                # the start of a session packet header (RFC 1002 4.3.1): type, then flags 0
                raise CheckFailure(
                    Result.SERVICE_ERROR,
                    f"connection closed after {len(partial)} of the {SESSION_HEADER.size} "
                    "bytes of a session packet header",
                ) from exc
            if partial:
                raise CheckFailure(
                    Result.PROTOCOL_MISMATCH,
                    f"not a NetBIOS session service: it sent {quote_peer(partial)}",
                ) from exc
            raise CheckFailure(
                Result.SERVICE_ERROR,
                "connection closed without an answer to the NetBIOS session request",
            ) from exc
        kind, flags, length = SESSION_HEADER.unpack(header)
        expected = _TRAILER_BYTES.get(kind)
        if expected is None or flags != 0 or length != expected:
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH,
                f"not a NetBIOS session service: it sent {quote_peer(header)} "
                f"({header.hex(' ')}), no answer to a session request",
            )
        trailer = await reader.readexactly(length) if length else b""
        if kind != KEEP_ALIVE:
            return kind, trailer
    raise CheckFailure(
        Result.PROTOCOL_MISMATCH,
        f"{MAX_KEEP_ALIVES + 1} keep-alives and no answer to the NetBIOS session request",
    )


async def run_session_service(
    target: Target, settings: NetbiosSsnSettings, context: CheckContext
) -> CheckResult:
    """Request a session for the called name and classify the answer (RFC 1002 4.3.2 to 4.3.5)."""
    called = f"{settings.called_name}<{FILE_SERVER_SUFFIX:02x}>"
    reader, writer = await open_stream(
        context, Target(target.host, target.port or SESSION_SERVICE_PORT)
    )
    try:
        with context.phase(Phase.HANDSHAKE):
            writer.write(build_session_request(settings.called_name))
            kind, trailer = await _read_session_answer(reader)
    finally:
        await close_stream(writer)
    context.debug("session answer", type=f"{kind:#04x}", trailer=trailer.hex() or "-")
    if kind == POSITIVE_RESPONSE:
        return context.ok(f"positive session response: sessions to {called} are accepted")
    if kind == RETARGET_RESPONSE:
        address = socket.inet_ntoa(trailer[:4])
        (port,) = struct.unpack_from(">H", trailer, 4)
        return context.ok(
            f"retarget session response: callers of {called} are sent to {address}:{port}"
        )
    code = trailer[0]
    words = _NEGATIVE_WORDS.get(code, "an error code RFC 1002 does not define")
    said = f"negative session response for {called}: {words} ({code:#04x})"
    if code == CALLED_NAME_NOT_PRESENT:
        return context.ok(f"{said}; the session service answers, the host goes by another name")
    raise CheckFailure(Result.SERVICE_ERROR, said)


NS_SPEC = CheckSpec(
    "netbios_ns",
    NetbiosNsSettings,
    run_name_service,
    "NetBIOS node status (RFC 1002 4.2.17 NBSTAT on UDP 137): machine name, workgroup, MAC",
    transport="udp",
)
SSN_SPEC = CheckSpec(
    "netbios_ssn",
    NetbiosSsnSettings,
    run_session_service,
    "NetBIOS session request (RFC 1002 4.3.2 on TCP 139): positive, negative or retarget",
)
