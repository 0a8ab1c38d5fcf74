"""`tcp` check against a real sshd, closed ports, a bad name and a filtered network namespace."""

from __future__ import annotations

from exporter.checks import CHECKS, Target
from exporter.checks.tcp import TcpSettings
from exporter.result import CheckResult, Phase, Result
from exporter.runner import run_check
from tests.peers.netns import IsolatedHost
from tests.peers.ports import free_tcp_port
from tests.peers.sshd import Sshd

NAMESPACE_PORT = 8080
DNS_TIMEOUT_S = 20.0
SHORT_TIMEOUT_S = 1.0


async def _tcp(host: str, port: int, timeout_seconds: float = 5.0) -> CheckResult:
    outcome = await run_check(CHECKS["tcp"], Target(host, port), TcpSettings(), timeout_seconds)
    return outcome.result


async def test_ok_against_listening_port(sshd: Sshd) -> None:
    """A connect to a listening port is ok, timed as `connect`, with the kernel RTT and address."""
    result = await _tcp(sshd.host, sshd.port)
    assert result.result is Result.OK
    assert result.address == "127.0.0.1"
    assert Phase.CONNECT in result.phases
    assert Phase.RESOLVE not in result.phases  # an IP literal is not resolved
    assert isinstance(result.tcp_rtt_seconds, float)
    assert result.tcp_rtt_seconds >= 0
    assert result.detail == f"TCP connection to 127.0.0.1:{sshd.port} accepted"


async def test_refused_on_closed_port() -> None:
    """A connect to a closed loopback port is classified as refused."""
    result = await _tcp("127.0.0.1", free_tcp_port())
    assert result.result is Result.REFUSED
    assert "connection refused" in result.detail
    assert result.address == "127.0.0.1"
    assert result.tcp_rtt_seconds is None


async def test_dns_error_for_unknown_name() -> None:
    """A name that cannot resolve is a dns_error, timed as `resolve`, with no address."""
    result = await _tcp("nonexistent.invalid", 80, DNS_TIMEOUT_S)
    assert result.result is Result.DNS_ERROR
    assert result.detail.startswith("name resolution failed")
    assert Phase.RESOLVE in result.phases
    assert Phase.CONNECT not in result.phases
    assert result.address == ""


async def test_timeout_when_syn_is_dropped(isolated_host: IsolatedHost) -> None:
    """A firewall that silently drops the SYN makes the check time out during connect."""
    isolated_host.tcp_listener(NAMESPACE_PORT)
    isolated_host.drop_all_tcp_to(NAMESPACE_PORT)
    result = await _tcp(isolated_host.address, NAMESPACE_PORT, SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert "connect" in result.detail
    assert result.address == isolated_host.address


async def test_unreachable_when_rejected_admin_prohibited(isolated_host: IsolatedHost) -> None:
    """An ICMP admin-prohibited reject is classified as unreachable, not refused or timeout."""
    isolated_host.tcp_listener(NAMESPACE_PORT)
    isolated_host.reject_admin_prohibited(NAMESPACE_PORT)
    result = await _tcp(isolated_host.address, NAMESPACE_PORT)
    assert result.result is Result.UNREACHABLE
    assert "rejected by a firewall" in result.detail
    assert "during connect" in result.detail
    assert result.address == isolated_host.address


async def test_ok_through_veth_to_namespace(isolated_host: IsolatedHost) -> None:
    """Without filter rules the namespace listener accepts, proving the fault tests' baseline."""
    isolated_host.tcp_listener(NAMESPACE_PORT)
    result = await _tcp(isolated_host.address, NAMESPACE_PORT)
    assert result.result is Result.OK
    assert result.address == isolated_host.address
    assert Phase.CONNECT in result.phases
