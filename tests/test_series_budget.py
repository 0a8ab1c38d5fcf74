"""Every check's worst-case series count per pair, pinned against the README's budget table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.checks import CHECKS
from exporter.collector import History, render_pair
from exporter.config import parse_config
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.store import ResultStore

README = Path(__file__).parent.parent / "README.md"
R, C, P, T, H, A = (
    Phase.RESOLVE,
    Phase.CONNECT,
    Phase.PROXY,
    Phase.TLS,
    Phase.HANDSHAKE,
    Phase.AUTH,
)
# The phases each check can record, whether it reports peer info, and whether it can speak TLS.
# A check recording a phase not listed here would exceed its budget: keep both in step.
WORST_CASE: dict[str, tuple[tuple[Phase, ...], bool, bool]] = {
    "tcp": ((R, C), False, False),
    "tls": ((R, C, T), True, True),
    "https": ((R, C, T, H), True, True),
    "http": ((R, C, H), True, False),
    "icmp": ((R, H), False, False),
    "ssh": ((R, C, H, A), True, False),
    "ldap": ((R, C, T, H, A), True, True),
    "ldaps": ((R, C, T, H, A), True, True),
    "mssql": ((R, C, T, H, A), True, True),
    "mssql_browser": ((R, H), True, False),
    "oracle_tns": ((R, C, H, A), True, False),
    "db2": ((R, C, H), True, False),
    "snmp": ((R, H, A), True, False),
    "netbios_ns": ((R, H), True, False),
    "netbios_ssn": ((R, C, H), True, False),
    "smb": ((R, C, H, A), True, False),
    "vsphere": ((R, C, T, H, A), True, True),
    "xenapi": ((R, C, T, H, A), True, True),
    "sap": ((R, C, H), True, False),
}
LABELS = (("flow", "f"), ("source", "endpoint_server"), ("target", "host:1"), ("check", "c"))


def worst_case(check: str, *, proxied: bool = False) -> CheckResult:
    """A failed run that reports everything the check can report."""
    phases, peer, tls = WORST_CASE[check]
    if proxied:
        phases = (*phases, P)
    return CheckResult(
        result=Result.TIMEOUT,
        duration_seconds=1.0,
        detail="worst case",
        phases=dict.fromkeys(phases, 0.1),
        peer=PeerInfo("product", "1.0") if peer else None,
        tls_cert_expiry_seconds=2e9 if tls else None,
        tls_chain_expiry_seconds=2e9 if tls else None,
        tcp_rtt_seconds=0.001 if CHECKS[check].transport == "tcp" else None,
    )


def series(result: CheckResult, history: History | None = None) -> int:
    """Sample lines a pair renders."""
    text = b"".join(render_pair(LABELS, result, 0.0, history)).decode()
    return len(text.splitlines())


def documented_budgets() -> dict[str, int]:
    """The README's table: check → series per pair at most."""
    section = README.read_text(encoding="utf-8").split("**Series budget.**", 1)[1]
    table = section.split("\n\n", 2)[1]
    budgets: dict[str, int] = {}
    for row in table.splitlines()[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        for check in re.findall(r"`([a-z_0-9]+)`", cells[0]):
            budgets[check] = int(cells[1].split()[0])
    return budgets


def test_every_check_has_a_documented_budget() -> None:
    """A new check cannot land without its line in the table and its worst case here."""
    assert set(documented_budgets()) == set(CHECKS) == set(WORST_CASE)


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_worst_case_renders_exactly_its_budget(check: str) -> None:
    """The worst case of each check is exactly what the README promises."""
    assert series(worst_case(check)) == documented_budgets()[check]


def test_tcp_by_address_and_proxy_and_opt_in_histogram() -> None:
    """The figures of the table's notes: TCP by address, HTTPS through a proxy, the opt-in
    per-pair histogram's 14 lines."""
    by_address = worst_case("tcp")
    by_address = CheckResult(
        by_address.result,
        by_address.duration_seconds,
        by_address.detail,
        {C: 0.1},
        tcp_rtt_seconds=0.001,
    )
    assert series(by_address) == 15
    assert series(worst_case("https", proxied=True)) == 22
    assert series(worst_case("tcp"), History.empty()) == 16 + 14


def test_flow_info_carries_severity_interval_and_the_table_row() -> None:
    """`certero_flow_info` and `certero_flow_interval_seconds`: catalogue severity, its
    override, an extra flow's own row; `histograms: true` reaches the flow's jobs."""
    config = parse_config(
        "targets: {ibm_hmc: [127.0.0.1], application_server: [127.0.0.1]}\n"
        "flows: {ssh_hmc: {severity: critical, histograms: true, interval: 2m}}\n"
        "extra_flows:\n"
        "  - {id: proxy_up, check: tcp, target: '127.0.0.1:3128', description: the proxy}\n",
        "inline.yaml",
    )
    store = ResultStore(config.source.value)
    store.describe_flows(config)
    text = store.render().decode()
    assert (
        'certero_flow_info{flow="ssh_hmc",source="endpoint_server",check="ssh",protocol="tcp",'
        'port="22",from="endpoint_server",to="ibm_hmc",reason="Communication between Endpoint '
        "server and IBM HMC about Physical Hosts, Virtual Machines and the relationships between "
        'them.",severity="critical",optional="false"} 1'
    ) in text
    assert 'certero_flow_interval_seconds{flow="ssh_hmc",source="endpoint_server"} 120.0' in text
    assert (
        'certero_flow_info{flow="https_app_relay",source="endpoint_server",check="https",'
        'protocol="tcp",port="443",from="endpoint_server",to="application_server"'
    ) in text
    assert 'severity="critical",optional="false"} 1' in text
    assert (
        'certero_flow_info{flow="proxy_up",source="endpoint_server",check="tcp",protocol="tcp",'
        'port="3128",from="endpoint_server",to="custom",reason="the proxy",severity="warning",'
        'optional="false"} 1'
    ) in text
    assert all(job.histograms for job in config.jobs if job.flow_id == "ssh_hmc")
    assert not any(job.histograms for job in config.jobs if job.flow_id != "ssh_hmc")
