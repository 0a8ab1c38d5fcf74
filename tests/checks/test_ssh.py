"""`ssh` check against a real OpenSSH server, nginx and small fake servers."""

from __future__ import annotations

from exporter.checks import CHECKS, Target
from exporter.checks.ssh import SshSettings
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.runner import run_check
from tests.checks.fakes import HOST, closes_at_once, fake_server, sends_then_waits, silent
from tests.peers.nginx import Nginx
from tests.peers.ports import free_tcp_port
from tests.peers.sshd import Sshd

SHORT_TIMEOUT_S = 1.0
WRONG_FINGERPRINT = "SHA256:" + "A" * 43
CHATTY_PRELUDE = b"".join(b"line %d of a chatty service\r\n" % n for n in range(40))


async def _ssh(
    port: int, settings: SshSettings | None = None, timeout_seconds: float = 5.0
) -> CheckResult:
    outcome = await run_check(
        CHECKS["ssh"], Target(HOST, port), settings or SshSettings(), timeout_seconds
    )
    return outcome.result


def _fingerprint(sshd: Sshd) -> str:
    (fingerprint,) = sshd.host_key_sha256_fingerprints.values()
    return fingerprint


async def test_ok_against_openssh(sshd: Sshd) -> None:
    """OpenSSH is ok; the peer is OpenSSH with its version and the detail quotes the banner."""
    result = await _ssh(sshd.port)
    assert result.result is Result.OK
    assert result.peer is not None
    assert result.peer.product == "OpenSSH"
    assert result.peer.version[:1].isdigit()
    assert result.detail.startswith("SSH-2.0 OpenSSH_")
    assert {Phase.CONNECT, Phase.HANDSHAKE} <= set(result.phases)
    assert result.address == "127.0.0.1"


async def test_host_key_verified(sshd: Sshd) -> None:
    """The server's real host key fingerprint is accepted and named as verified in the detail."""
    fingerprint = _fingerprint(sshd)
    result = await _ssh(sshd.port, SshSettings(host_key_fingerprints=[fingerprint]))
    assert result.result is Result.OK
    assert f"host key {fingerprint} verified" in result.detail


async def test_host_key_verified_among_several(sshd: Sshd) -> None:
    """The real fingerprint anywhere in the list of accepted keys is enough."""
    settings = SshSettings(host_key_fingerprints=[WRONG_FINGERPRINT, _fingerprint(sshd)])
    result = await _ssh(sshd.port, settings)
    assert result.result is Result.OK
    assert "verified" in result.detail


async def test_wrong_host_key_is_auth_failed(sshd: Sshd) -> None:
    """A host key that is not among the expected ones is auth_failed naming the key seen."""
    result = await _ssh(sshd.port, SshSettings(host_key_fingerprints=[WRONG_FINGERPRINT]))
    assert result.result is Result.AUTH_FAILED
    assert f"host key {_fingerprint(sshd)} is not one of the expected keys" in result.detail
    assert result.peer is not None
    assert result.peer.product == "OpenSSH"


async def test_http_server_is_protocol_mismatch(nginx: Nginx) -> None:
    """nginx answers our identification with an HTTP 400, which is a protocol_mismatch."""
    result = await _ssh(nginx.http_port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "not an SSH server" in result.detail
    assert "HTTP/1.1 400" in result.detail


async def test_ssh1_server_is_protocol_mismatch() -> None:
    """A server offering only SSH 1.5 is a protocol_mismatch naming the protocol version."""
    async with fake_server(sends_then_waits(b"SSH-1.5-Old\r\n")) as port:
        result = await _ssh(port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "SSH protocol 1.5" in result.detail
    assert result.peer == PeerInfo(product="Old", version="")


async def test_too_many_prelude_lines_is_protocol_mismatch() -> None:
    """A server sending 40 non-SSH lines is a protocol_mismatch quoting its first line."""
    async with fake_server(sends_then_waits(CHATTY_PRELUDE)) as port:
        result = await _ssh(port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "not an SSH server: it sent 'line 0 of a chatty service'" in result.detail


async def test_prelude_then_identification_is_ok() -> None:
    """Lines before the identification string are allowed (RFC 4253 section 4.2)."""
    banner = b"Welcome\r\nAuthorised use only\r\nSSH-2.0-Fake_1.0 test\r\n"
    async with fake_server(sends_then_waits(banner)) as port:
        result = await _ssh(port)
    assert result.result is Result.OK
    assert result.detail == "SSH-2.0 Fake_1.0 test"
    assert result.peer == PeerInfo(product="Fake", version="1.0")


async def test_endless_line_is_protocol_mismatch() -> None:
    """A line of 200 KiB without a newline is a protocol_mismatch, not a memory problem."""
    async with fake_server(sends_then_waits(b"x" * (200 * 1024))) as port:
        result = await _ssh(port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "endless line" in result.detail


async def test_overlong_identification_is_protocol_mismatch() -> None:
    """An identification line longer than 255 bytes is malformed: protocol_mismatch."""
    async with fake_server(sends_then_waits(b"SSH-2.0-" + b"x" * 300 + b"\r\n")) as port:
        result = await _ssh(port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "malformed SSH identification string" in result.detail


async def test_failed_key_exchange_is_protocol_mismatch() -> None:
    """A server with an SSH banner but garbage instead of a key exchange fails host-key checks."""
    garbage_after_banner = b"SSH-2.0-Fake_1.0\r\n" + b"\xff" * 64
    async with fake_server(sends_then_waits(garbage_after_banner)) as port:
        result = await _ssh(port, SshSettings(host_key_fingerprints=[WRONG_FINGERPRINT]))
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "SSH key exchange failed" in result.detail
    assert result.peer == PeerInfo(product="Fake", version="1.0")


async def test_closed_at_once_is_service_error() -> None:
    """A server that closes before any identification is a service_error about the close."""
    async with fake_server(closes_at_once) as port:
        result = await _ssh(port)
    assert result.result is Result.SERVICE_ERROR
    assert "closed" in result.detail
    assert Phase.HANDSHAKE in result.phases


async def test_silent_server_times_out() -> None:
    """A server that accepts and never sends its identification times out during handshake."""
    async with fake_server(silent) as port:
        result = await _ssh(port, timeout_seconds=SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert "during handshake" in result.detail


async def test_refused_on_closed_port() -> None:
    """A closed port is refused."""
    result = await _ssh(free_tcp_port())
    assert result.result is Result.REFUSED
    assert "connection refused" in result.detail
    assert Phase.HANDSHAKE not in result.phases
