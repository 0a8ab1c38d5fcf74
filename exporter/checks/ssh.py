"""`ssh`: the port answers with an SSH identification string (RFC 4253 §4.2).

We send our own identification first (allowed by the RFC) so that a peer which waits for the
client, such as an HTTP server, answers with something that is visibly not SSH instead of
keeping silent. Optionally the host key is read (on a second connection, through asyncssh's key
exchange) and compared with expected fingerprints, which proves it is the *right* SSH server.
"""

from __future__ import annotations

import asyncio
import re

from pydantic import Field

from exporter import __version__
from exporter.checks.base import CheckContext, CheckSettings, CheckSpec, Target, quote_peer
from exporter.checks.net import close_stream, open_stream
from exporter.errors import CheckFailure
from exporter.result import CheckResult, PeerInfo, Phase, Result

CLIENT_IDENTIFICATION = f"SSH-2.0-CerteroFlowExporter_{__version__.split('+')[0]}"
MAX_LINE_BYTES = 255  # RFC 4253: the identification line including CR LF
MAX_PRELUDE_LINES = 32  # lines a server may send before its identification
_IDENTIFICATION = re.compile(rb"^SSH-(\d+\.\d+)-([!-~]+)(?: ([ -~]*))?\r?\n$")


class SshSettings(CheckSettings):
    """Options of the SSH check."""

    host_key_fingerprints: list[str] = Field(
        default_factory=list,
        description='Accepted host key fingerprints ("SHA256:..." as ssh-keygen -l prints them).',
    )


async def run(target: Target, settings: SshSettings, context: CheckContext) -> CheckResult:
    """Exchange identification strings and, if configured, verify the host key."""
    reader, writer = await open_stream(context, target)
    try:
        with context.phase(Phase.HANDSHAKE):
            writer.write(CLIENT_IDENTIFICATION.encode() + b"\r\n")
            protocol, software, comments = await _read_identification(reader, context)
    finally:
        await close_stream(writer)
    product, _, version = software.partition("_")
    context.peer = PeerInfo(product=product, version=version)
    if protocol not in ("2.0", "1.99"):
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"server speaks SSH protocol {protocol} only ({software})"
        )
    detail = f"SSH-{protocol} {software}" + (f" {comments}" if comments else "")
    if settings.host_key_fingerprints:
        fingerprint = await _host_key_fingerprint(context, target)
        if fingerprint not in settings.host_key_fingerprints:
            raise CheckFailure(
                Result.AUTH_FAILED, f"host key {fingerprint} is not one of the expected keys"
            )
        detail += f", host key {fingerprint} verified"
    return context.ok(detail)


async def _read_identification(
    reader: asyncio.StreamReader, context: CheckContext
) -> tuple[str, str, str]:
    first_line = b""
    for _ in range(MAX_PRELUDE_LINES):
        try:
            line = await reader.readline()
        except ValueError as exc:  # the stream limit: a line of tens of kilobytes
            raise CheckFailure(Result.PROTOCOL_MISMATCH, "not an SSH server: endless line") from exc
        if not line:
            break
        context.debug("received line", length=len(line), text=quote_peer(line))
        first_line = first_line or line
        if line.startswith(b"SSH-"):
            return _parse_identification(line)
        if len(line) > MAX_LINE_BYTES or not line.endswith(b"\n"):
            break
    if not first_line:
        raise CheckFailure(
            Result.SERVICE_ERROR, "connection closed before the SSH identification string"
        )
    raise CheckFailure(
        Result.PROTOCOL_MISMATCH, f"not an SSH server: it sent {quote_peer(first_line)}"
    )


def _parse_identification(line: bytes) -> tuple[str, str, str]:
    match = _IDENTIFICATION.match(line)
    if match is None or len(line) > MAX_LINE_BYTES:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"malformed SSH identification string {quote_peer(line)}"
        )
    protocol, software, comments = match.groups()
    return protocol.decode(), software.decode(), (comments or b"").decode()


async def _host_key_fingerprint(context: CheckContext, target: Target) -> str:
    """Run a key exchange with asyncssh and return the server key's SHA256 fingerprint."""
    import asyncssh  # noqa: PLC0415 - 0.12 s to import; only needed when fingerprints are set

    with context.phase(Phase.HANDSHAKE):
        try:
            key = await asyncssh.get_server_host_key(
                context.address or target.host,
                target.port or 22,
                client_version=CLIENT_IDENTIFICATION.removeprefix("SSH-2.0-"),
                options=asyncssh.SSHClientConnectionOptions(connect_timeout=context.remaining()),
            )
        except (asyncssh.Error, ValueError) as exc:
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH, f"SSH key exchange failed: {type(exc).__name__}"
            ) from exc
    if key is None:
        raise CheckFailure(Result.SERVICE_ERROR, "server offered no host key")
    return str(key.get_fingerprint("sha256"))


SPEC = CheckSpec("ssh", SshSettings, run, "SSH identification exchange (RFC 4253), host key")
