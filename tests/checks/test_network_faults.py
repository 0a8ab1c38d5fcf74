"""Network faults are classified the same way by every TCP-based check.

The same four faults (closed port, unresolvable name, a firewall that drops the SYN, a firewall
that rejects with ICMP admin-prohibited) are run against each check, so that a new check cannot
classify the network differently from the others.
"""

from __future__ import annotations

import logging

import pytest

from exporter.checks import CHECKS, Target
from exporter.result import CheckResult, Phase, Result
from exporter.runner import run_check
from tests.peers.netns import IsolatedHost
from tests.peers.ports import free_tcp_port

TCP_CHECKS = ["tcp", "tls", "https", "http", "ssh"]
NAMESPACE_PORT = 8081
DNS_TIMEOUT_S = 20.0
DROP_TIMEOUT_S = 1.0


async def run(check: str, host: str, port: int, timeout_seconds: float = 5.0) -> CheckResult:
    spec = CHECKS[check]
    outcome = await run_check(spec, Target(host, port), spec.settings_model(), timeout_seconds)
    return outcome.result


@pytest.mark.parametrize("check", TCP_CHECKS)
async def test_closed_port_is_refused(check: str) -> None:
    """A closed port is refused, whatever protocol the check speaks."""
    result = await run(check, "127.0.0.1", free_tcp_port())
    assert result.result is Result.REFUSED
    assert Phase.CONNECT in result.phases


@pytest.mark.parametrize("check", TCP_CHECKS)
async def test_unresolvable_name_is_dns_error(check: str) -> None:
    """A name that does not resolve is a dns_error before any connection is tried."""
    result = await run(check, "nonexistent.invalid", 443, DNS_TIMEOUT_S)
    assert result.result is Result.DNS_ERROR
    assert Phase.RESOLVE in result.phases
    assert Phase.CONNECT not in result.phases


@pytest.mark.parametrize(
    ("host", "detail"),
    [
        ("a" * 64, f"for '{'a' * 64}': label 1 is 64 characters long (DNS allows at most 63)"),
        (
            "a" * 300 + ".example",
            f"for '{'a' * 60}…': the host name is 308 characters long (DNS allows at most 253)",
        ),
        (
            "a..example",
            "for 'a..example': the host name has an empty label (a leading dot or two dots in a row)",
        ),
        (
            "h\u2028st.example",
            "for 'h\\u2028st.example': character '\\u2028' is not allowed in a host name",
        ),
    ],
)
@pytest.mark.parametrize("check", TCP_CHECKS)
async def test_name_the_resolver_cannot_encode_is_dns_error(
    check: str, host: str, detail: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A name the resolver refuses to encode (as a redirect may bring) is a plain dns_error."""
    result = await run(check, host, 443)
    assert result.result is Result.DNS_ERROR
    assert result.detail == f"name resolution failed {detail}"
    assert Phase.CONNECT not in result.phases
    ours = [r for r in caplog.records if r.name.startswith("exporter")]
    assert not [r for r in ours if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("check", TCP_CHECKS)
async def test_dropped_syn_is_timeout_during_connect(
    check: str, isolated_host: IsolatedHost
) -> None:
    """A firewall dropping the SYN is a timeout, and the detail names the connect phase."""
    isolated_host.tcp_listener(NAMESPACE_PORT)
    isolated_host.drop_all_tcp_to(NAMESPACE_PORT)
    result = await run(check, isolated_host.address, NAMESPACE_PORT, DROP_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert result.detail == "no answer within 1s during connect"
    assert result.address == isolated_host.address


@pytest.mark.parametrize("check", TCP_CHECKS)
async def test_admin_prohibited_is_unreachable(check: str, isolated_host: IsolatedHost) -> None:
    """A firewall rejecting with ICMP admin-prohibited is unreachable, not refused."""
    isolated_host.tcp_listener(NAMESPACE_PORT)
    isolated_host.reject_admin_prohibited(NAMESPACE_PORT)
    result = await run(check, isolated_host.address, NAMESPACE_PORT)
    assert result.result is Result.UNREACHABLE
    assert "rejected by a firewall" in result.detail
