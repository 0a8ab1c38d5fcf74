"""`sap`: an SAP NI (Network Interface) peer answers on the dispatcher port 32NN.

The exchange is the lightest one every NI peer in message mode answers: the NI keep-alive.

    client → 00 00 00 08  4E 49 5F 50 49 4E 47 00     length 8, "NI_PING\\0"
    server ← 00 00 00 08  4E 49 5F 50 4F 4E 47 00     length 8, "NI_PONG\\0"

Sources of the answer format:

* SAP Library, "NI Keepalive" (help.sap.com, saphelp_snc700_ehp01 …/48/6a789a9d4b4e6ce10000000a
  421937): a request of 8 data bytes "NI_PING\\0" headed by a 4-byte length; a receiver in
  NI_MSG_IO mode detects it as a keep-alive request and replies with a response as long as the
  request containing "NI_PONG\\0". "Communication Modes" (…/48/6a29475bed4e6be10000000a421937):
  NI_MSG_IO is the mode SAP applications use between each other, every block headed by its
  4-byte length; only SAProuter (NI_ROUTE_IO) ignores keep-alives.
* Wireshark `epan/dissectors/packet-sapni.c` (`dissect_sap_protocol_message`): the 4-byte
  big-endian length excludes itself; a length of 8 with "NI_PING\\0" is the keep-alive request,
  "NI_PONG\\0" the keep-alive response (on a SAProuter conversation: "route accepted").
* pysap `pysap/SAPNI.py` (`SAPNI.SAPNI_PING`/`SAPNI_PONG`, `SAPNIStreamSocket.recv`): answers a
  peer's NI_PING with NI_PONG at the NI layer, before the application sees anything.

A peer may instead send an NI error message, whose payload starts "NI_RTERR\\0" (SAP Library
"NI Error Information"; pysap `SAPRouter.py`, `SAPRouterError`: NUL-terminated fields
`*ERR*`, counter, error text, return code, component, release, …): that is an SAP
NI peer reporting an error, `service_error` with its text and return code. Anything that does not
read as one NI frame (an HTTP status line, an SSH banner, a length no keep-alive answer has) is
`protocol_mismatch`.

No SAP server can be run here, so the test peer (`tests/peers/sap_ni_fake.py`) is written from
the sources above; no independent SAP NI client is packaged for Debian (nmap has no SAP script)
and pysap, the one on PyPI, pins a `cryptography` older than the exporter's.
"""

from __future__ import annotations

import asyncio
import struct

from pydantic import Field

from exporter.checks.base import CheckContext, CheckSettings, CheckSpec, Target, quote_peer
from exporter.checks.net import close_stream, open_stream
from exporter.errors import CheckFailure
from exporter.result import CheckResult, PeerInfo, Phase, Result

DISPATCHER_BASE_PORT = 3200  # 32NN: the dispatcher of instance NN
DISPATCHER_PORTS = (DISPATCHER_BASE_PORT, DISPATCHER_BASE_PORT + 99)
NI_LENGTH = struct.Struct("!I")  # big-endian payload length, the header excluded
NI_PING = b"NI_PING\x00"
NI_PONG = b"NI_PONG\x00"
NI_RTERR = b"NI_RTERR\x00"
# The longest NI frame read as an answer: an NI_PONG is 8 bytes and an NI error message a few
# hundred (its text fields are short); a longer announced length is no answer to a keep-alive.
MAX_ANSWER_BYTES = 4096
MAX_ERROR_FIELDS = 16


class SapSettings(CheckSettings):
    """Options of the SAP check."""

    instance: str | None = Field(
        default=None,
        pattern=r"^\d{2}$",
        description='Instance number "00"-"99": the dispatcher port 32NN (instead of a port).',
    )


def instance_port(settings: SapSettings) -> int | None:
    """The dispatcher port the `instance` setting names (None: no instance set)."""
    return None if settings.instance is None else DISPATCHER_BASE_PORT + int(settings.instance)


async def run(target: Target, settings: SapSettings, context: CheckContext) -> CheckResult:
    """Send NI_PING in an NI frame and expect NI_PONG."""
    port = target.port or instance_port(settings) or DISPATCHER_BASE_PORT
    target = Target(target.host, port)
    reader, writer = await open_stream(context, target)
    try:
        with context.phase(Phase.HANDSHAKE):
            writer.write(NI_LENGTH.pack(len(NI_PING)) + NI_PING)
            context.debug("NI_PING sent", port=port)
            answer = await _read_frame(reader)
    finally:
        await close_stream(writer)
    context.debug("NI frame received", length=len(answer), payload=quote_peer(answer, 40))
    if answer == NI_PONG:
        context.peer = PeerInfo(product="SAP NI")
        return context.ok(f"SAP NI peer answered NI_PING with NI_PONG{_instance_note(port)}")
    if answer.startswith(NI_RTERR):
        context.peer = PeerInfo(product="SAP NI")
        raise CheckFailure(Result.SERVICE_ERROR, _error_detail(answer))
    raise CheckFailure(
        Result.PROTOCOL_MISMATCH,
        f"an NI frame of {len(answer)} bytes that is not NI_PONG: {quote_peer(answer, 40)}",
    )


def _instance_note(port: int) -> str:
    low, high = DISPATCHER_PORTS
    return f" (dispatcher port of instance {port - low:02d})" if low <= port <= high else ""


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    """One NI frame's payload, its announced length bounded by MAX_ANSWER_BYTES."""
    try:
        header = await reader.readexactly(NI_LENGTH.size)
    except ConnectionResetError as exc:
        raise CheckFailure(
            Result.SERVICE_ERROR, "connection closed before an answer to NI_PING"
        ) from exc
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise CheckFailure(
                Result.SERVICE_ERROR, "connection closed before an answer to NI_PING"
            ) from exc
        padded = exc.partial + bytes(NI_LENGTH.size - len(exc.partial))
        if NI_LENGTH.unpack(padded)[0] <= MAX_ANSWER_BYTES:  # the start of a plausible length
            raise CheckFailure(
                Result.SERVICE_ERROR,
                f"connection closed after {len(exc.partial)} of the {NI_LENGTH.size} bytes of "
                "an NI length",
            ) from exc
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"not an SAP NI peer: it sent {quote_peer(exc.partial)}"
        ) from exc
    (length,) = NI_LENGTH.unpack(header)
    if length > MAX_ANSWER_BYTES or length == 0:
        rest = await _excerpt(reader)
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"not an SAP NI peer: it sent {quote_peer(header + rest)}"
        )
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise CheckFailure(
            Result.SERVICE_ERROR,
            f"connection closed in the middle of an NI frame ({len(exc.partial)} of {length} "
            "bytes)",
        ) from exc


async def _excerpt(reader: asyncio.StreamReader) -> bytes:
    """What else the peer has already sent, for the detail; never waits for more."""
    try:
        async with asyncio.timeout(0):
            return await reader.read(56)
    except TimeoutError:
        return b""


def _error_detail(payload: bytes) -> str:
    """`NI_RTERR` payload → "SAP NI error: <text> (return code <rc>)".

    After the "NI_RTERR\\0" header come binary fields (NI version, operation code, return
    code, length) and the error text block: NUL-terminated strings `*ERR*`, counter, error
    text, return code, component, release, … (pysap SAPRouter.py, `SAPRouterError`; SAP Library
    "NI Error Information").
    """
    start = payload.find(b"*ERR*\x00")
    if start < 0:
        return f"SAP NI error message: {quote_peer(payload[len(NI_RTERR) :], 60)}"
    fields = payload[start:].split(b"\x00", MAX_ERROR_FIELDS)
    text = fields[2] if len(fields) > 2 else b""
    code = fields[3] if len(fields) > 3 else b""
    return f"SAP NI error: {quote_peer(text, 80)[1:-1]}" + (
        f" (return code {quote_peer(code, 10)[1:-1]})" if code else ""
    )


SPEC = CheckSpec(
    "sap",
    SapSettings,
    run,
    "SAP NI keep-alive (NI_PING/NI_PONG) on the dispatcher port 32NN",
    port_range=DISPATCHER_PORTS,
    settings_port=instance_port,
)
