"""`smb`: an SMB2/3 server answers, says what it is, and optionally lets an account in.

Steps and phases:

- `connect`: our own TCP connection to the target (direct TCP transport, MS-SMB2 2.1: every
  message behind a zero byte and a 24-bit length; port 445). NetBIOS session service framing
  (port 139) is the `netbios_ssn` check's.
- `handshake`: NEGOTIATE (MS-SMB2 2.2.3/2.2.4) offering 2.0.2, 2.1, 3.0, 3.0.2 and 3.1.1 with
  the SMB2_PREAUTH_INTEGRITY_CAPABILITIES context 3.1.1 requires (2.2.3.1.1), so the dialect
  reported is the highest the server speaks; then one SESSION_SETUP (2.2.5) carrying a
  SPNEGO-wrapped NTLMSSP NEGOTIATE (MS-NLMP 2.2.1.1). The server's CHALLENGE (2.2.1.2) names
  it: the VERSION structure (2.2.2.10: major, minor, build) and the target info AV pairs
  (2.2.2.1: NetBIOS and DNS computer and domain names, DNS tree name) — the facts Certero's
  discovery reads. The exchange stops there: no AUTHENTICATE message, so no credential and no
  anonymous logon reaches the server (its security log records no logon).
- `auth` (with `username` and `password`): on a second connection, an NTLM login and a tree
  connect to `share` (`ADMIN$` by default, what agent deployment needs).

Why two implementations. The unauthenticated exchange is written here, on asyncio, because
every sweep runs it against every endpoint: it must not take a worker thread per host, and
impacket's and smbprotocol's logins never stop after the challenge (they always send the
AUTHENTICATE message, an anonymous logon on the server). aiosmb's `fake_login` does stop there,
on asyncio, but brings its author's own authentication, socket and crypto packages for what
is two request/response pairs here. The login is NTLMv2 with session keys,
signing and, for 3.1.1, the pre-authentication hash: that is impacket's, on the exporter's
blocking pool behind `_TreeConnect`, with the socket timeout taken from the deadline before each
step. impacket rather than smbprotocol: impacket runs a request and its reply on the calling
thread, reads a reply as it arrives within its 24-bit framing (16 MiB at most), and takes a new
timeout before each step; smbprotocol starts a receiving thread per connection and allocates
whatever length the peer announces (up to 4 GiB) before reading it. By the login, the peer has
already answered the NEGOTIATE and the challenge of the exchange above as an SMB server.

Outcomes: a peer that is not SMB is `protocol_mismatch`; an SMB2 server that refuses the
NEGOTIATE or the anonymous NTLM negotiate is `service_error` with the NTSTATUS name. A server
that speaks SMB1 only (NT LM 0.12) drops an SMB2 NEGOTIATE; the check then asks once more on a
second connection, offering SMB1 alone, and reports such a host as `service_error` "SMB1 only":
current Windows neither serves nor uses SMB1 by default, so discovery and agent deployment
cannot reach it. A refused login or a share the account may not use is `auth_failed`, a share
that does not exist `service_error`, each with the NTSTATUS name.

Samba answers with NTLM VERSION 6.1 build 0 whatever its own version is (no SMB2 message
carries a software version); Windows never reports build 0, so that pair is named Samba.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

from impacket import nmb, nt_errors
from pydantic import Field, model_validator

from exporter.blocking import Deadline
from exporter.checks.base import CheckContext, CheckSettings, CheckSpec, Target, quote_peer
from exporter.checks.net import close_stream, open_stream
from exporter.errors import CheckFailure
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.secrets import Secret, reveal

# --- wire constants ---------------------------------------------------------------------------

SMB2_MAGIC = b"\xfeSMB"
SMB1_MAGIC = b"\xffSMB"
MAX_MESSAGE_BYTES = 64 * 1024  # a NEGOTIATE or challenge answer is a few hundred bytes
MAX_INTERIM_ANSWERS = 4  # STATUS_PENDING interim answers skipped before the real one
_FIRST_READ_BYTES = 64  # the first read takes what the peer sent first, to quote a non-SMB peer
_QUOTED_CHARS = 60
_quote = functools.partial(quote_peer, limit=_QUOTED_CHARS)

# MS-SMB2 2.2.1.2: the sync packet header (the async one differs only in bytes 32-39).
_HEADER = struct.Struct("<4sHHIHHIIQIIQ16s")
_NEGOTIATE = 0x0000
_SESSION_SETUP = 0x0001
_FLAG_SERVER_TO_REDIR = 0x00000001
_CLIENT_PROCESS_ID = 0xFEFF
# MS-SMB2 2.2.3: NEGOTIATE request body up to the dialect list (3.1.1 layout).
_NEGOTIATE_REQUEST = struct.Struct("<HHHHI16sIHH")
# MS-SMB2 2.2.4: NEGOTIATE response body up to its buffer.
_NEGOTIATE_RESPONSE = struct.Struct("<HHHH16sIIIIQQHHI")
# MS-SMB2 2.2.5 / 2.2.6: SESSION_SETUP request and response bodies up to their buffers.
_SESSION_SETUP_REQUEST = struct.Struct("<HBBIIHHQ")
_SESSION_SETUP_RESPONSE = struct.Struct("<HHHH")
_SIGNING_ENABLED = 0x0001
_SIGNING_REQUIRED = 0x0002

DIALECTS: dict[int, str] = {
    0x0202: "2.0.2",
    0x0210: "2.1",
    0x0300: "3.0",
    0x0302: "3.0.2",
    0x0311: "3.1.1",
}
_PREAUTH_INTEGRITY_CAPABILITIES = 0x0001  # MS-SMB2 2.2.3.1.1
_SHA_512 = 0x0001

STATUS_SUCCESS = 0x00000000
STATUS_PENDING = 0x00000103
STATUS_MORE_PROCESSING_REQUIRED = 0xC0000016
STATUS_LOGON_FAILURE = 0xC000006D
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_BAD_NETWORK_NAME = 0xC00000CC
STATUS_NETWORK_ACCESS_DENIED = 0xC00000CA

# MS-CIFS 2.2.3.1 / 2.2.4.52: an SMB1 NEGOTIATE offering NT LM 0.12 alone.
_SMB1_NEGOTIATE_COMMAND = 0x72
_SMB1_FLAGS2 = 0xC801  # unicode, NT status codes, extended security, long names
_SMB1_DIALECT = b"NT LM 0.12"
_SMB1_NO_DIALECT = 0xFFFF
SMB1_SHARE_OF_TIME = 0.5  # of the time left, for asking an SMB2-deaf server about SMB1
SMB1_TIME_CAP_SECONDS = 1.0

# MS-NLMP 2.2.1.1 / 2.2.1.2 / 2.2.2.1 / 2.2.2.10.
NTLMSSP_SIGNATURE = b"NTLMSSP\x00"
_NTLM_NEGOTIATE_FLAGS = (
    0x00000001  # NEGOTIATE_UNICODE
    | 0x00000002  # NEGOTIATE_OEM
    | 0x00000004  # REQUEST_TARGET
    | 0x00000200  # NEGOTIATE_NTLM
    | 0x00008000  # NEGOTIATE_ALWAYS_SIGN
    | 0x00080000  # NEGOTIATE_EXTENDED_SESSIONSECURITY
    | 0x00800000  # NEGOTIATE_TARGET_INFO
    | 0x02000000  # NEGOTIATE_VERSION: ask the server for its VERSION structure
    | 0x20000000  # NEGOTIATE_128
    | 0x80000000  # NEGOTIATE_56
)
_NTLM_NEGOTIATE_VERSION_FLAG = 0x02000000
_NTLM_CHALLENGE_FIXED_BYTES = 48  # up to and including TargetInfoFields
_NTLM_VERSION_BYTES = 8
_MAX_AV_PAIRS = 32
_AV_EOL = 0
_AV_NAMES = {
    1: "netbios_computer",
    2: "netbios_domain",
    3: "dns_computer",
    4: "dns_domain",
    5: "dns_tree",
}
_MAX_NAME_CHARS = 255  # a DNS name; longer text from a peer is cut
# SPNEGO (RFC 4178) and NTLMSSP object identifiers, DER-encoded.
_SPNEGO_OID = bytes.fromhex("06062b0601050502")  # 1.3.6.1.5.5.2
_NTLMSSP_OID = bytes.fromhex("060a2b06010401823702020a")  # 1.3.6.1.4.1.311.2.2.10

# NTLM VERSION → Windows release (MS-NLMP 2.2.2.10 names the major/minor pairs; 10.0 builds as
# Microsoft publishes them). Samba's fixed answer is recognised separately.
_WINDOWS_FAMILIES: dict[tuple[int, int], str] = {
    (5, 0): "Windows 2000",
    (5, 1): "Windows XP",
    (5, 2): "Windows XP x64/Server 2003",
    (6, 0): "Windows Vista/Server 2008",
    (6, 1): "Windows 7/Server 2008 R2",
    (6, 2): "Windows 8/Server 2012",
    (6, 3): "Windows 8.1/Server 2012 R2",
    (10, 0): "Windows 10/Server 2016+",
}
_WINDOWS_10_BUILDS: dict[int, str] = {
    10240: "Windows 10 1507",
    10586: "Windows 10 1511",
    14393: "Windows 10 1607/Server 2016",
    15063: "Windows 10 1703",
    16299: "Windows 10 1709",
    17134: "Windows 10 1803",
    17763: "Windows 10 1809/Server 2019",
    18362: "Windows 10 1903",
    18363: "Windows 10 1909",
    19041: "Windows 10 2004",
    19042: "Windows 10 20H2",
    19043: "Windows 10 21H1",
    19044: "Windows 10 21H2",
    19045: "Windows 10 22H2",
    20348: "Windows Server 2022",
    22000: "Windows 11 21H2",
    22621: "Windows 11 22H2",
    22631: "Windows 11 23H2",
    26100: "Windows 11 24H2/Server 2025",
}
_FIRST_WINDOWS_11_BUILD = 22000  # later unlisted 10.0 builds are Windows 11 or Server 2025+
_SAMBA_VERSION = (6, 1, 0)

# NTSTATUS codes of a refused login: fix the account or its password.
_LOGON_REFUSALS: dict[int, str] = {
    STATUS_LOGON_FAILURE: "unknown user or wrong password",
    0xC000006A: "wrong password",  # STATUS_WRONG_PASSWORD
    0xC0000064: "no such user",  # STATUS_NO_SUCH_USER
    0xC000006E: "account restriction",  # STATUS_ACCOUNT_RESTRICTION
    0xC000006F: "logon not permitted at this time",  # STATUS_INVALID_LOGON_HOURS
    0xC0000070: "logon not permitted from this workstation",  # STATUS_INVALID_WORKSTATION
    0xC0000071: "password expired",  # STATUS_PASSWORD_EXPIRED
    0xC0000072: "account disabled",  # STATUS_ACCOUNT_DISABLED
    0xC0000193: "account expired",  # STATUS_ACCOUNT_EXPIRED
    0xC0000224: "the user must change the password",  # STATUS_PASSWORD_MUST_CHANGE
    0xC0000234: "account locked out",  # STATUS_ACCOUNT_LOCKED_OUT
    0xC000015B: "the account may not log on over the network",  # STATUS_LOGON_TYPE_NOT_GRANTED
    STATUS_ACCESS_DENIED: "access denied",
}
# NTSTATUS codes of a refused tree connect that are about the account, not the share.
_SHARE_REFUSALS: dict[int, str] = {
    STATUS_ACCESS_DENIED: "the account may not use this share",
    STATUS_NETWORK_ACCESS_DENIED: "the account may not use this share",
}


def status_name(code: int) -> str:
    """`STATUS_LOGON_FAILURE (0xC000006D)`: the NTSTATUS name (MS-ERREF 2.3) and its code."""
    known = nt_errors.ERROR_MESSAGES.get(code)
    name = known[0] if known else "NTSTATUS"
    return f"{name} (0x{code:08X})"


# --- settings ---------------------------------------------------------------------------------


class SmbSettings(CheckSettings):
    """Options of the `smb` check (TCP 445)."""

    username: str | None = Field(
        default=None,
        description="Account for the tree connect: `user`, `DOMAIN\\user` or `user@domain`.",
    )
    password: Secret | None = Field(default=None, description="The account's password (secret).")
    domain: str = Field(
        default="",
        description="NTLM domain of the account; empty: the server's own accounts.",
    )
    share: str = Field(
        default="ADMIN$",
        description="Share the account must be able to connect to (agent deployment: ADMIN$).",
    )

    @model_validator(mode="after")
    def _account_is_whole(self) -> SmbSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.username == "":
            raise ValueError("username must not be empty")
        if self.username is not None and "\\" in self.username and self.domain:
            raise ValueError("give the domain either in username (DOMAIN\\user) or in domain")
        if not self.share or len(self.share) > 80 or any(c in self.share for c in "\\/"):
            raise ValueError("share is a share name of 1 to 80 characters, without \\ or /")
        return self

    def account(self) -> tuple[str, str]:
        """The user name and NTLM domain to log in with (`DOMAIN\\user` split in two)."""
        user = self.username or ""
        domain, backslash, name = user.partition("\\")
        return (name, domain) if backslash else (user, self.domain)


# --- what the server said ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The server's NEGOTIATE answer (MS-SMB2 2.2.4)."""

    dialect: int
    security_mode: int
    capabilities: int
    server_guid: bytes

    @property
    def dialect_name(self) -> str:
        """`3.1.1` and the like."""
        return DIALECTS.get(self.dialect, f"0x{self.dialect:04X}")

    @property
    def signing_required(self) -> bool:
        """SMB2_NEGOTIATE_SIGNING_REQUIRED in the server's SecurityMode."""
        return bool(self.security_mode & _SIGNING_REQUIRED)


@dataclass(frozen=True, slots=True)
class NtlmChallenge:
    """What an NTLM CHALLENGE message (MS-NLMP 2.2.1.2) says about the server."""

    version: tuple[int, int, int] | None  # major, minor, build (2.2.2.10)
    netbios_computer: str = ""
    netbios_domain: str = ""
    dns_computer: str = ""
    dns_domain: str = ""
    dns_tree: str = ""

    def operating_system(self) -> str:
        """The server's OS as its VERSION structure names it ("" without one)."""
        if self.version is None:
            return ""
        major, minor, build = self.version
        if self.version == _SAMBA_VERSION:
            return "Samba"
        if build == 0:
            return f"non-Windows SMB server (NTLM version {major}.{minor})"
        if (major, minor) == (10, 0) and build in _WINDOWS_10_BUILDS:
            family = _WINDOWS_10_BUILDS[build]
        elif (major, minor) == (10, 0) and build >= _FIRST_WINDOWS_11_BUILD:
            family = "Windows 11/Server 2025+"
        else:
            family = _WINDOWS_FAMILIES.get((major, minor), f"Windows {major}.{minor}")
        return f"{family} build {build}"

    def version_text(self) -> str:
        """`10.0.17763` ("" without a VERSION structure)."""
        return "" if self.version is None else ".".join(str(part) for part in self.version)

    def names(self) -> str:
        """NetBIOS and DNS names, as a short phrase for the detail ("" when none was sent)."""
        parts = []
        if self.netbios_computer:
            netbios = f"NetBIOS {_quote(self.netbios_computer)}"
            if self.netbios_domain:
                netbios += f" in {_quote(self.netbios_domain)}"
            parts.append(netbios)
        if self.dns_computer:
            parts.append(f"DNS {_quote(self.dns_computer)}")
        if self.dns_domain and not self.dns_computer.lower().endswith(self.dns_domain.lower()):
            parts.append(f"DNS domain {_quote(self.dns_domain)}")
        if self.dns_tree and self.dns_tree.lower() != self.dns_domain.lower():
            parts.append(f"forest {_quote(self.dns_tree)}")
        return ", ".join(parts)


class NotSmbError(Exception):
    """The peer's answer is not an SMB message; `sent` is the start of what it sent."""

    def __init__(self, sent: bytes, reason: str = "") -> None:
        self.sent = sent
        self.reason = reason
        super().__init__("not an SMB answer")


class Smb1Answer(Exception):
    """The server answered an SMB2 request in SMB1 (MS-CIFS 2.2.3.1): it speaks no SMB2."""


class SmbStatusError(Exception):
    """The server refused an operation with an NTSTATUS code."""

    def __init__(self, operation: str, status: int) -> None:
        self.operation = operation
        self.status = status
        super().__init__(f"{operation}: {status_name(status)}")


class GuestSessionError(Exception):
    """The server let the account in as guest: it did not accept the credentials themselves."""


# --- direct TCP framing -----------------------------------------------------------------------


class _Wire:
    """Direct TCP transport (MS-SMB2 2.1) over the check's stream, every length bounded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending = b""
        self.received_any = False

    async def send(self, message: bytes) -> None:
        """Frame and send one message."""
        self._writer.write(len(message).to_bytes(4, "big") + message)
        await self._writer.drain()

    async def receive(self) -> bytes:
        """The next SMB2 or SMB1 message (its ProtocolId tells which).

        The first read returns whatever the peer sent first (at most 64 bytes), so that a peer
        speaking another protocol is quoted without waiting for more.
        """
        if not self._pending:
            self._pending = await self._reader.read(_FIRST_READ_BYTES)
            if not self._pending:
                raise asyncio.IncompleteReadError(b"", 4)
            self.received_any = True
        header = await self._take(4)
        if header[0] != 0:
            raise NotSmbError(header + self._pending)
        length = int.from_bytes(header[1:], "big")
        if length > MAX_MESSAGE_BYTES:
            raise NotSmbError(
                header + self._pending,
                f"announces a {length}-byte message, more than any answer to these requests",
            )
        start = await self._take(min(4, length))
        if start not in (SMB2_MAGIC, SMB1_MAGIC):
            raise NotSmbError(header + start + self._pending)
        return start + await self._take(length - len(start), already=len(start))

    async def _take(self, count: int, *, already: int = 0) -> bytes:
        """`count` more bytes of a message of which `already` bytes were read."""
        if len(self._pending) < count:
            missing = count - len(self._pending)
            try:
                self._pending += await self._reader.readexactly(missing)
            except asyncio.IncompleteReadError as exc:
                got = already + len(self._pending) + len(exc.partial)
                raise CheckFailure(
                    Result.SERVICE_ERROR,
                    "connection closed in the middle of an SMB message "
                    f"({got} of {already + count} bytes)",
                ) from exc
        data, self._pending = self._pending[:count], self._pending[count:]
        return data


def _header(command: int, message_id: int, *, credit_charge: int = 0) -> bytes:
    """An SMB2 sync request header (MS-SMB2 2.2.1.2), unsigned, no session yet."""
    return _HEADER.pack(
        SMB2_MAGIC,
        64,
        credit_charge,
        STATUS_SUCCESS,
        command,
        1,  # CreditRequest
        0,  # Flags
        0,  # NextCommand
        message_id,
        _CLIENT_PROCESS_ID,
        0,  # TreeId
        0,  # SessionId
        bytes(16),
    )


@dataclass(frozen=True, slots=True)
class _Answer:
    """One SMB2 answer: its NTSTATUS, its body and the whole message (offsets count from it)."""

    status: int
    body: bytes
    message: bytes


async def _exchange(wire: _Wire, request: bytes, command: int, message_id: int) -> _Answer:
    """Send one request and return its answer, skipping interim STATUS_PENDING answers."""
    await wire.send(request)
    for _ in range(MAX_INTERIM_ANSWERS + 1):
        message = await wire.receive()
        if message.startswith(SMB1_MAGIC):
            raise Smb1Answer
        if len(message) < _HEADER.size:
            raise NotSmbError(
                message[:_FIRST_READ_BYTES], "an SMB2 message shorter than its header"
            )
        (_, size, _, status, answered, _, flags, _, answered_id, *_rest) = _HEADER.unpack_from(
            message
        )
        if size != _HEADER.size or not flags & _FLAG_SERVER_TO_REDIR:
            raise NotSmbError(message[:_FIRST_READ_BYTES], "an SMB2 header that is no answer")
        if answered != command or answered_id != message_id:
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH,
                f"SMB2 answer to command {answered} message {answered_id}, "
                f"not to the request sent (command {command} message {message_id})",
            )
        if status != STATUS_PENDING:
            return _Answer(status, message[_HEADER.size :], message)
    raise CheckFailure(
        Result.SERVICE_ERROR, f"more than {MAX_INTERIM_ANSWERS} interim (pending) SMB2 answers"
    )


# --- NEGOTIATE --------------------------------------------------------------------------------


def negotiate_request() -> bytes:
    """SMB2 NEGOTIATE offering every SMB2/3 dialect (MS-SMB2 2.2.3, 2.2.3.1.1)."""
    dialects = b"".join(struct.pack("<H", dialect) for dialect in DIALECTS)
    fixed = _HEADER.size + _NEGOTIATE_REQUEST.size + len(dialects)
    padding = bytes(-fixed % 8)  # the context list starts 8-byte aligned
    salt = os.urandom(32)
    preauth = struct.pack("<HHH", 1, len(salt), _SHA_512) + salt
    context = struct.pack("<HHI", _PREAUTH_INTEGRITY_CAPABILITIES, len(preauth), 0) + preauth
    body = _NEGOTIATE_REQUEST.pack(
        36,  # StructureSize
        len(DIALECTS),
        _SIGNING_ENABLED,
        0,  # Reserved
        0,  # Capabilities
        os.urandom(16),  # ClientGuid
        fixed + len(padding),  # NegotiateContextOffset
        1,  # NegotiateContextCount
        0,  # Reserved2
    )
    return _header(_NEGOTIATE, 0) + body + dialects + padding + context


def parse_negotiate_response(answer: _Answer) -> Negotiated:
    """The NEGOTIATE answer's facts; a refusal is `service_error` with its NTSTATUS name."""
    if answer.status != STATUS_SUCCESS:
        raise CheckFailure(
            Result.SERVICE_ERROR,
            f"SMB2 NEGOTIATE refused: {status_name(answer.status)} "
            "(offered dialects 2.0.2 to 3.1.1)",
        )
    if len(answer.body) < _NEGOTIATE_RESPONSE.size:
        raise NotSmbError(answer.message[:_FIRST_READ_BYTES], "a NEGOTIATE answer cut short")
    size, security_mode, dialect, _, guid, capabilities, *_rest = _NEGOTIATE_RESPONSE.unpack_from(
        answer.body
    )
    if size != 65:
        raise NotSmbError(answer.message[:_FIRST_READ_BYTES], "a malformed NEGOTIATE answer")
    if dialect not in DIALECTS:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"the server chose dialect 0x{dialect:04X}, which was not offered",
        )
    return Negotiated(dialect, security_mode, capabilities, guid)


# --- SESSION_SETUP with an NTLMSSP NEGOTIATE --------------------------------------------------


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV (X.690 8.1.3: short or long form length)."""
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(encoded)]) + encoded + content


def ntlm_negotiate_message() -> bytes:
    """An NTLMSSP NEGOTIATE (MS-NLMP 2.2.1.1) naming no domain or workstation."""
    empty_field = struct.pack("<HHI", 0, 0, 0)
    version = bytes([10, 0]) + struct.pack("<H", 0) + bytes(3) + bytes([0x0F])
    return (
        NTLMSSP_SIGNATURE
        + struct.pack("<II", 1, _NTLM_NEGOTIATE_FLAGS)
        + empty_field
        + empty_field
        + version
    )


def spnego_init(mech_token: bytes) -> bytes:
    """A SPNEGO NegTokenInit (RFC 4178 4.2.1) offering NTLMSSP with its first token."""
    mech_types = _der(0xA0, _der(0x30, _NTLMSSP_OID))
    token = _der(0xA2, _der(0x04, mech_token))
    neg_token_init = _der(0xA0, _der(0x30, mech_types + token))
    return _der(0x60, _SPNEGO_OID + neg_token_init)


def session_setup_request(negotiated: Negotiated) -> bytes:
    """SESSION_SETUP (MS-SMB2 2.2.5) carrying the SPNEGO-wrapped NTLMSSP NEGOTIATE."""
    blob = spnego_init(ntlm_negotiate_message())
    body = _SESSION_SETUP_REQUEST.pack(
        25,  # StructureSize
        0,  # Flags
        _SIGNING_ENABLED,
        0,  # Capabilities
        0,  # Channel
        _HEADER.size + _SESSION_SETUP_REQUEST.size,  # SecurityBufferOffset
        len(blob),
        0,  # PreviousSessionId
    )
    # MS-SMB2 3.2.4.1.5: CreditCharge is 0 for 2.0.2 and at least 1 for the dialects after it
    charge = 0 if negotiated.dialect == 0x0202 else 1
    return _header(_SESSION_SETUP, 1, credit_charge=charge) + body + blob


def security_buffer(answer: _Answer) -> bytes:
    """The SESSION_SETUP answer's security buffer, its offset and length checked."""
    if answer.status != STATUS_MORE_PROCESSING_REQUIRED:
        raise CheckFailure(
            Result.SERVICE_ERROR,
            f"the server refused the anonymous NTLM negotiate: {status_name(answer.status)} "
            "(discovery cannot read the OS and names)",
        )
    if len(answer.body) < _SESSION_SETUP_RESPONSE.size:
        raise NotSmbError(answer.message[:_FIRST_READ_BYTES], "a SESSION_SETUP answer cut short")
    _, _, offset, length = _SESSION_SETUP_RESPONSE.unpack_from(answer.body)
    if offset < _HEADER.size + _SESSION_SETUP_RESPONSE.size or offset + length > len(
        answer.message
    ):
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"SESSION_SETUP security buffer ({length} bytes at {offset}) lies outside "
            f"its {len(answer.message)}-byte message",
        )
    return answer.message[offset : offset + length]


def parse_ntlm_challenge(blob: bytes) -> NtlmChallenge:
    """The CHALLENGE (MS-NLMP 2.2.1.2) inside a SPNEGO NegTokenResp or on its own.

    The NTLMSSP signature is searched for, as nmap's smbauth does: the message's own offsets
    are relative to it, and each one is checked against the end of the security buffer.
    """
    start = blob.find(NTLMSSP_SIGNATURE)
    if start < 0:
        raise CheckFailure(
            Result.SERVICE_ERROR,
            "the SESSION_SETUP answer holds no NTLM challenge (NTLM may be disabled)",
        )
    message = blob[start:]
    if len(message) < _NTLM_CHALLENGE_FIXED_BYTES:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"NTLM challenge cut short ({len(message)} bytes)"
        )
    (message_type,) = struct.unpack_from("<I", message, 8)
    if message_type != 2:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"NTLM message type {message_type}, not a CHALLENGE (2)"
        )
    (flags,) = struct.unpack_from("<I", message, 20)
    info_length, _, info_offset = struct.unpack_from("<HHI", message, 40)
    version = None
    version_end = _NTLM_CHALLENGE_FIXED_BYTES + _NTLM_VERSION_BYTES
    # VERSION sits before the payload: a target info starting earlier means there is none
    version_fits = len(message) >= version_end and (not info_length or info_offset >= version_end)
    if flags & _NTLM_NEGOTIATE_VERSION_FLAG and version_fits:
        major, minor, build = struct.unpack_from("<BBH", message, 48)
        version = (major, minor, build)
    names: dict[str, str] = {}
    if info_length:
        if info_offset + info_length > len(message):
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH,
                f"NTLM target info ({info_length} bytes at {info_offset}) lies outside "
                f"the {len(message)}-byte challenge",
            )
        names = _av_pair_names(message[info_offset : info_offset + info_length])
    return NtlmChallenge(version=version, **names)


def _av_pair_names(info: bytes) -> dict[str, str]:
    """Names among the target info's AV pairs (MS-NLMP 2.2.2.1), at most 32 pairs read."""
    names: dict[str, str] = {}
    position = 0
    for _ in range(_MAX_AV_PAIRS):
        if position + 4 > len(info):
            break
        av_id, av_length = struct.unpack_from("<HH", info, position)
        position += 4
        if av_id == _AV_EOL or position + av_length > len(info):
            break
        field = _AV_NAMES.get(av_id)
        if field is not None:
            text = info[position : position + av_length].decode("utf-16-le", errors="replace")
            names[field] = "".join(c for c in text if c.isprintable())[:_MAX_NAME_CHARS]
        position += av_length
    return names


# --- SMB1 only? -------------------------------------------------------------------------------


def smb1_negotiate_request() -> bytes:
    """An SMB1 NEGOTIATE (MS-CIFS 2.2.4.52.1) offering NT LM 0.12 alone."""
    header = SMB1_MAGIC + struct.pack(
        "<BIBHH8sHHHHH",
        _SMB1_NEGOTIATE_COMMAND,
        0,  # Status
        0x18,  # Flags: case-insensitive paths, canonicalised paths
        _SMB1_FLAGS2,
        0,  # PIDHigh
        bytes(8),  # SecurityFeatures
        0,  # Reserved
        0xFFFF,  # TID
        _CLIENT_PROCESS_ID,
        0,  # UID
        0,  # MID
    )
    dialects = b"\x02" + _SMB1_DIALECT + b"\x00"
    return header + b"\x00" + struct.pack("<H", len(dialects)) + dialects


def smb1_dialect_accepted(message: bytes) -> bool:
    """True for an SMB1 NEGOTIATE answer (MS-CIFS 2.2.4.52.2) that chose NT LM 0.12."""
    if len(message) < 35 or not message.startswith(SMB1_MAGIC):
        return False
    command, status = struct.unpack_from("<BI", message, 4)
    word_count = message[32]
    (dialect_index,) = struct.unpack_from("<H", message, 33)
    return (
        command == _SMB1_NEGOTIATE_COMMAND
        and status == 0
        and word_count >= 1
        and (dialect_index != _SMB1_NO_DIALECT)
    )


async def speaks_smb1(context: CheckContext, target: Target) -> bool:
    """Ask once, on a new connection, whether the server speaks SMB1 (NT LM 0.12).

    Bounded like a certificate re-read: a share of the time left, at most a second, so that a
    silent server still gets the first answer reported (it closed the SMB2 NEGOTIATE).
    """
    budget = min(context.remaining() * SMB1_SHARE_OF_TIME, SMB1_TIME_CAP_SECONDS)
    try:
        async with asyncio.timeout(budget):
            reader, writer = await open_stream(context, Target(context.address, target.port))
            try:
                wire = _Wire(reader, writer)
                await wire.send(smb1_negotiate_request())
                answer = await wire.receive()
            finally:
                await close_stream(writer)
    except (OSError, EOFError, TimeoutError, NotSmbError, CheckFailure) as exc:
        context.debug("no SMB1 answer either", error=type(exc).__name__)
        return False
    accepted = smb1_dialect_accepted(answer)
    context.debug("smb1 answer", bytes=len(answer), accepted=accepted)
    return accepted


def smb1_only_failure(context: CheckContext) -> CheckFailure:
    """The result for a server that speaks SMB1 and no SMB2 dialect (recorded as its peer)."""
    context.peer = PeerInfo(product="SMB server", version="SMB 1 (NT LM 0.12) only")
    return CheckFailure(
        Result.SERVICE_ERROR,
        "the server speaks SMB1 only (NT LM 0.12) and dropped the SMB2 NEGOTIATE: current "
        "Windows neither serves nor uses SMB1 by default, so discovery and agent deployment "
        "cannot reach it",
    )


# --- the authenticated part, on the blocking pool ---------------------------------------------


@dataclass
class _TreeConnect:
    """impacket's SMBConnection for one login and tree connect; runs on the blocking pool.

    The worker closes the connection itself, whatever happens. `abandon`, called from the event
    loop when the check's deadline passed, shuts the socket down so that a worker blocked in the
    login or the tree connect returns at once; it leaves the NEGOTIATE alone, because impacket
    answers a connection lost there by opening another one.
    """

    target: Target
    address: str  # the address the unauthenticated exchange reached: no second resolution
    share: str
    connection: Any = None  # impacket.smbconnection.SMBConnection: untyped, kept in here
    negotiated: bool = False

    def run(self, deadline: Deadline, account: tuple[str, str], password: str) -> None:
        """Log in (NTLM) and connect to the share; raise what the server refused.

        impacket's SMB client is imported here, on the first login: the import costs a quarter
        of a second on a busy host, which every start of the exporter (`validate` included)
        would pay, and a sweep without an account never needs it.
        """
        from impacket.smbconnection import SessionError, SMBConnection  # noqa: PLC0415 - see above

        user, domain = account
        port = self.target.port or 445
        self.connection = SMBConnection(
            self.target.host,
            self.address,
            sess_port=port,
            timeout=deadline.timeout(),
            manualNegotiate=True,  # no traffic yet: the socket is ours to close from here on
        )
        try:
            try:
                self._negotiate()
            except SessionError as exc:
                raise SmbStatusError("NEGOTIATE", exc.getErrorCode()) from None
            self.negotiated = True
            self.connection.setTimeout(deadline.timeout())
            try:
                self.connection.login(user, password, domain)
            except SessionError as exc:
                raise SmbStatusError("session setup", exc.getErrorCode()) from None
            if self.connection.isGuestSession():
                raise GuestSessionError
            self.connection.setTimeout(deadline.timeout())
            try:
                self.connection.connectTree(self.share)
            except SessionError as exc:
                raise SmbStatusError(f"tree connect to {self.share}", exc.getErrorCode()) from None
        finally:
            session = self.connection.getNMBServer()
            if session is not None:
                session.close()

    def _negotiate(self) -> None:
        try:
            self.connection.negotiateSession()
        except OSError as exc:
            # impacket wraps a failed connect as OSError("Connection error (...)", cause)
            cause = exc.args[1] if len(exc.args) > 1 else None
            raise (cause if isinstance(cause, OSError) else exc) from None

    def abandon(self) -> None:
        """Wake a worker blocked in the login or the tree connect (the check gave up on it)."""
        if not self.negotiated or self.connection is None:
            return
        session = self.connection.getNMBServer()
        if session is not None:
            with contextlib.suppress(OSError):  # the worker may have closed it already
                session.get_socket().shutdown(socket.SHUT_RDWR)


# --- the check --------------------------------------------------------------------------------


async def _discover(context: CheckContext, target: Target) -> tuple[Negotiated, NtlmChallenge]:
    """NEGOTIATE, then the NTLM challenge of an anonymous SESSION_SETUP (phase `handshake`)."""
    reader, writer = await open_stream(context, target)
    try:
        with context.phase(Phase.HANDSHAKE):
            wire = _Wire(reader, writer)
            try:
                answer = await _exchange(wire, negotiate_request(), _NEGOTIATE, 0)
            except Smb1Answer:
                raise smb1_only_failure(context) from None
            except (EOFError, ConnectionResetError) as exc:
                if wire.received_any:
                    raise
                if await speaks_smb1(context, target):
                    raise smb1_only_failure(context) from exc
                raise
            negotiated = parse_negotiate_response(answer)
            context.peer = PeerInfo(product="SMB server", version=_protocol(negotiated))
            context.debug(
                "negotiated",
                dialect=negotiated.dialect_name,
                security_mode=negotiated.security_mode,
                capabilities=f"0x{negotiated.capabilities:08x}",
                server_guid=negotiated.server_guid.hex(),
            )
            answer = await _exchange(wire, session_setup_request(negotiated), _SESSION_SETUP, 1)
            challenge = parse_ntlm_challenge(security_buffer(answer))
            context.debug(
                "ntlm challenge",
                version=challenge.version_text() or "none",
                netbios=challenge.netbios_computer,
                domain=challenge.netbios_domain,
                dns=challenge.dns_computer,
                dns_domain=challenge.dns_domain,
            )
    finally:
        await close_stream(writer)
    return negotiated, challenge


def _protocol(negotiated: Negotiated) -> str:
    signing = "signing required" if negotiated.signing_required else "signing not required"
    return f"SMB {negotiated.dialect_name}, {signing}"


def _describe(negotiated: Negotiated, challenge: NtlmChallenge) -> str:
    parts = [_protocol(negotiated)]
    system = challenge.operating_system()
    if system == "Samba":
        parts.append(f"Samba (NTLM version {challenge.version_text()})")
    elif system:
        parts.append(system)
    names = challenge.names()
    if names:
        parts.append(names)
    return "; ".join(parts)


async def run(target: Target, settings: SmbSettings, context: CheckContext) -> CheckResult:
    """NEGOTIATE and NTLM challenge; with an account, a login and a tree connect as well."""
    negotiated, challenge = await _discover(context, target)
    context.peer = PeerInfo(
        product=challenge.operating_system() or "SMB server", version=_protocol(negotiated)
    )
    detail = _describe(negotiated, challenge)
    if settings.username is not None and settings.password is not None:
        user, domain = settings.account()
        session = _TreeConnect(target, context.address or target.host, settings.share)
        with context.phase(Phase.AUTH):
            try:
                await context.run_blocking(session.run, (user, domain), reveal(settings.password))
            except asyncio.CancelledError:
                session.abandon()
                raise
        who = f"{domain}\\{user}" if domain else user
        detail += f"; tree connect to {settings.share} as {who}"
    return context.ok(detail)


def _refusal(exc: SmbStatusError) -> tuple[Result, str]:
    """A refused login or tree connect: the account's doing (`auth_failed`) or the server's."""
    share_refusal = exc.operation.startswith("tree connect")
    if share_refusal and exc.status == STATUS_BAD_NETWORK_NAME:
        return (
            Result.SERVICE_ERROR,
            f"{exc.operation} failed: {status_name(exc.status)}: no such share",
        )
    reasons: dict[int, str] = {}
    if share_refusal:
        reasons = _SHARE_REFUSALS
    elif exc.operation == "session setup":
        reasons = _LOGON_REFUSALS
    reason = reasons.get(exc.status)
    detail = f"{exc.operation} refused: {status_name(exc.status)}"
    if reason is None:
        return Result.SERVICE_ERROR, detail
    return Result.AUTH_FAILED, f"{detail}: {reason}"


def classify(exc: BaseException, phase: Phase | None) -> tuple[Result, str] | None:
    """NTSTATUS refusals, non-SMB peers and impacket's own errors → classes (None: not ours)."""
    if isinstance(exc, SmbStatusError):
        return _refusal(exc)
    if isinstance(exc, GuestSessionError):
        return (
            Result.AUTH_FAILED,
            "session setup gave a guest session: the server did not accept the account",
        )
    if isinstance(exc, NotSmbError):
        what = exc.reason or f"it sent {_quote(exc.sent)}"
        return Result.PROTOCOL_MISMATCH, f"not an SMB server: {what}"
    where = f" during {phase.value}" if phase is not None else ""
    if isinstance(exc, nmb.NetBIOSTimeout):
        return Result.TIMEOUT, f"no SMB answer{where}"
    if isinstance(exc, nmb.NetBIOSError):
        return Result.SERVICE_ERROR, f"connection closed by the server{where}"
    return None


SPEC = CheckSpec(
    "smb",
    SmbSettings,
    run,
    "SMB2 NEGOTIATE and NTLM challenge (dialect, signing, OS, names); login and tree connect",
    classify=classify,
)
