"""An SMB2 server stand-in written from MS-SMB2 and MS-NLMP: a Windows host as discovery sees it.

It answers, over direct TCP (MS-SMB2 2.1), what a client sends up to and including a login:
- an SMB1 NEGOTIATE offering "SMB 2.???" (the multi-protocol negotiate, MS-SMB2 3.3.5.3.1)
  with an SMB2 NEGOTIATE response choosing the wildcard dialect 0x02FF;
- SMB2 NEGOTIATE (2.2.3) with a NEGOTIATE response (2.2.4): the configured dialect, security
  mode (signing required by default) and an empty security buffer (the client's default
  mechanism is then NTLM, 3.2.5.2);
- SESSION_SETUP (2.2.5) carrying an NTLMSSP NEGOTIATE (raw or inside SPNEGO) with
  STATUS_MORE_PROCESSING_REQUIRED and a SPNEGO NegTokenResp (RFC 4178 4.2.2) holding an NTLM
  CHALLENGE (MS-NLMP 2.2.1.2): flags, TargetName, TargetInfo AV pairs (2.2.2.1) and the VERSION
  structure (2.2.2.10) of Windows Server 2019 by default;
- SESSION_SETUP carrying the AUTHENTICATE message with STATUS_LOGON_FAILURE: the fake has no
  accounts, it only shows what a server tells before a login.

Knobs make it misbehave the ways the check must survive: refusals by NTSTATUS, answers with
the wrong message id, interim STATUS_PENDING answers, a challenge whose target info points
outside it, silence from a given connection on. Every request is recorded (command, NTLM
message type), so a test can show the check never sends an AUTHENTICATE.

impacket's SMBConnection proves it (tests/checks/test_smb.py): it negotiates, reads the same
OS version and names from the challenge, and is refused at its login.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

from tests.checks.fakes import Handler, wait_for_client_to_leave

SMB2_MAGIC = b"\xfeSMB"
SMB1_MAGIC = b"\xffSMB"
HEADER = struct.Struct("<4sHHIHHIIQIIQ16s")  # MS-SMB2 2.2.1.2
NEGOTIATE = 0x0000
SESSION_SETUP = 0x0001
STATUS_SUCCESS = 0x00000000
STATUS_PENDING = 0x00000103
STATUS_MORE_PROCESSING_REQUIRED = 0xC0000016
STATUS_LOGON_FAILURE = 0xC000006D
STATUS_NOT_SUPPORTED = 0xC00000BB
STATUS_ACCESS_DENIED = 0xC0000022
DIALECT_WILDCARD = 0x02FF
MAX_REQUEST_BYTES = 64 * 1024
MAX_REQUESTS = 16  # per connection: a client under test sends three at most
SESSION_ID = 0x0000_4400_0000_0011
NTLMSSP = b"NTLMSSP\x00"
NTLMSSP_OID = bytes.fromhex("060a2b06010401823702020a")  # 1.3.6.1.4.1.311.2.2.10
# MS-NLMP 2.2.2.5: UNICODE, REQUEST_TARGET, NTLM, ALWAYS_SIGN, TARGET_TYPE_DOMAIN,
# EXTENDED_SESSIONSECURITY, TARGET_INFO, VERSION, 128, KEY_EXCH, 56
CHALLENGE_FLAGS = 0xE28A8215

WINDOWS_2019_VERSION = bytes([10, 0]) + struct.pack("<H", 17763) + bytes(3) + b"\x0f"
CORP_NAMES: dict[int, str] = {
    2: "CORP",  # MsvAvNbDomainName
    1: "DC1",  # MsvAvNbComputerName
    4: "corp.example",  # MsvAvDnsDomainName
    3: "dc1.corp.example",  # MsvAvDnsComputerName
    5: "corp.example",  # MsvAvDnsTreeName
}


def der(tag: int, content: bytes) -> bytes:
    """One DER TLV with a short or long form length (X.690 8.1.3)."""
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    length = len(content).to_bytes((len(content).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def av_pairs(names: dict[int, str], timestamp: int = 0x01DB_0000_0000_0000) -> bytes:
    """TargetInfo: the names, MsvAvTimestamp and MsvAvEOL (MS-NLMP 2.2.2.1)."""
    pairs = b""
    for av_id, text in names.items():
        value = text.encode("utf-16-le")
        pairs += struct.pack("<HH", av_id, len(value)) + value
    pairs += struct.pack("<HHQ", 7, 8, timestamp)
    return pairs + struct.pack("<HH", 0, 0)


def challenge_message(
    names: dict[int, str], version: bytes | None, *, info_offset_shift: int = 0
) -> bytes:
    """An NTLM CHALLENGE (MS-NLMP 2.2.1.2) naming the server; `version` None: no VERSION."""
    target_name = names.get(2, "").encode("utf-16-le")
    info = av_pairs(names)
    flags = CHALLENGE_FLAGS if version is not None else CHALLENGE_FLAGS & ~0x02000000
    payload_offset = 56 if version is not None else 48
    name_offset = payload_offset
    info_offset = name_offset + len(target_name) + info_offset_shift
    return (
        NTLMSSP
        + struct.pack("<I", 2)
        + struct.pack("<HHI", len(target_name), len(target_name), name_offset)
        + struct.pack("<I", flags)
        + bytes.fromhex("0123456789abcdef")  # ServerChallenge
        + bytes(8)
        + struct.pack("<HHI", len(info), len(info), info_offset)
        + (version or b"")
        + target_name
        + info
    )


def neg_token_resp(token: bytes) -> bytes:
    """SPNEGO NegTokenResp (RFC 4178 4.2.2): accept-incomplete, NTLMSSP, the token."""
    state = der(0xA0, bytes([0x0A, 0x01, 0x01]))
    mech = der(0xA1, NTLMSSP_OID)
    response = der(0xA2, der(0x04, token))
    return der(0xA1, der(0x30, state + mech + response))


@dataclass
class Smb2Fake:
    """How the fake answers; `requests` records (connection, command, NTLM message type)."""

    dialect: int = 0x0302
    security_mode: int = 0x0003  # signing enabled and required
    negotiate_status: int = STATUS_SUCCESS
    session_setup_status: int = STATUS_MORE_PROCESSING_REQUIRED
    version: bytes | None = WINDOWS_2019_VERSION
    names: dict[int, str] = field(default_factory=lambda: dict(CORP_NAMES))
    message_id_shift: int = 0  # added to the message id of every answer
    interim_answers: int = 0  # STATUS_PENDING answers sent before each real one
    info_offset_shift: int = 0  # moves the challenge's target info past its end when large
    silent_from_connection: int | None = None  # this connection and later ones get no answer
    connections: int = 0
    requests: list[tuple[int, int, int]] = field(default_factory=list)

    def handler(self) -> Handler:
        """The connection handler to serve with `tests.checks.fakes.fake_server`."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            number = self.connections
            if self.silent_from_connection is not None and number >= self.silent_from_connection:
                await wait_for_client_to_leave(reader)
                return
            for _ in range(MAX_REQUESTS):
                header = await reader.readexactly(4)
                length = int.from_bytes(header[1:], "big")
                if header[0] != 0 or length > MAX_REQUEST_BYTES:
                    return
                request = await reader.readexactly(length)
                for answer in self.answers(number, request):
                    writer.write(len(answer).to_bytes(4, "big") + answer)
                await writer.drain()

        return handle

    def answers(self, connection: int, request: bytes) -> list[bytes]:
        """The messages that answer one request (interim ones first)."""
        if request.startswith(SMB1_MAGIC) and request[4] == 0x72:
            self.requests.append((connection, -1, 0))
            return [self._negotiate_answer(0, DIALECT_WILDCARD)]
        if not request.startswith(SMB2_MAGIC) or len(request) < HEADER.size:
            return []
        command = struct.unpack_from("<H", request, 12)[0]
        (message_id,) = struct.unpack_from("<Q", request, 24)
        if command == NEGOTIATE:
            self.requests.append((connection, command, 0))
            return [self._negotiate_answer(message_id, self.dialect)]
        if command == SESSION_SETUP:
            ntlm_type = _ntlm_message_type(request)
            self.requests.append((connection, command, ntlm_type))
            interim = [
                self._header(SESSION_SETUP, STATUS_PENDING, message_id, flags=0x3)
                + struct.pack("<HBBIB", 9, 0, 0, 0, 0)
                for _ in range(self.interim_answers)
            ]
            if ntlm_type == 1 and self.session_setup_status == STATUS_MORE_PROCESSING_REQUIRED:
                return [*interim, self._challenge_answer(message_id)]
            status = self.session_setup_status if ntlm_type == 1 else STATUS_LOGON_FAILURE
            return [*interim, self._error(SESSION_SETUP, status, message_id)]
        self.requests.append((connection, command, 0))
        return [self._error(command, STATUS_NOT_SUPPORTED, message_id)]

    def _header(
        self, command: int, status: int, message_id: int, *, flags: int = 0x1, session: int = 0
    ) -> bytes:
        return HEADER.pack(
            SMB2_MAGIC,
            64,
            1,  # CreditCharge
            status,
            command,
            1,  # CreditResponse
            flags,  # SERVER_TO_REDIR (and ASYNC for an interim answer)
            0,
            message_id + self.message_id_shift,
            0xFEFF,
            0,
            session,
            bytes(16),
        )

    def _error(self, command: int, status: int, message_id: int) -> bytes:
        """An error response (MS-SMB2 2.2.2): StructureSize 9 and one byte of ErrorData."""
        return self._header(command, status, message_id) + struct.pack("<HBBIB", 9, 0, 0, 0, 0)

    def _negotiate_answer(self, message_id: int, dialect: int) -> bytes:
        if self.negotiate_status != STATUS_SUCCESS:
            return self._error(NEGOTIATE, self.negotiate_status, message_id)
        body = struct.pack(
            "<HHHH16sIIIIQQHHI",
            65,
            self.security_mode,
            dialect,
            0,  # NegotiateContextCount
            b"fake-smb2-server",  # ServerGuid
            0x0000002F,  # DFS, LEASING, LARGE_MTU, MULTI_CHANNEL, DIRECTORY_LEASING
            65536,
            65536,
            65536,
            0x01DB_0000_0000_0000,  # SystemTime
            0,  # ServerStartTime
            128,  # SecurityBufferOffset
            0,  # SecurityBufferLength: the client picks its default mechanism
            0,  # NegotiateContextOffset
        )
        return self._header(NEGOTIATE, STATUS_SUCCESS, message_id) + body

    def _challenge_answer(self, message_id: int) -> bytes:
        token = challenge_message(
            self.names, self.version, info_offset_shift=self.info_offset_shift
        )
        blob = neg_token_resp(token)
        body = struct.pack("<HHHH", 9, 0, HEADER.size + 8, len(blob)) + blob
        header = self._header(
            SESSION_SETUP, STATUS_MORE_PROCESSING_REQUIRED, message_id, session=SESSION_ID
        )
        return header + body


def _ntlm_message_type(request: bytes) -> int:
    """The type of the NTLM message inside a SESSION_SETUP request (0: none found)."""
    start = request.find(NTLMSSP, HEADER.size)
    if start < 0 or start + 12 > len(request):
        return 0
    return int(struct.unpack_from("<I", request, start + 8)[0])
