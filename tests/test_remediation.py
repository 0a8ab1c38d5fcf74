"""Remediation: every result class over TCP, UDP and ICMP flows names the flow, the port, the
protocol, the direction, and for network faults the firewall rule to request."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from exporter.blocking import BlockingPool
from exporter.catalogue import FLOWS_BY_ID, Flow, Role, Transport, VantagePoint
from exporter.checks import CHECKS, Target
from exporter.config import parse_config
from exporter.remediation import (
    DESTINATION_NAMES,
    SOURCE_NAMES,
    FirewallRule,
    FlowFacts,
    Remediation,
    merge_rules,
    remediate,
    remediate_pair,
)
from exporter.result import CheckResult, Phase, Result
from exporter.runner import run_check
from tests.peers.netns import IsolatedHost

HOST = "db1.example.test"


@dataclass(frozen=True, slots=True)
class Transported:
    """A catalogue flow standing for one transport, and how its opening is spelled."""

    flow: Flow
    port: int | None
    opening: str


TRANSPORTS: Mapping[Transport, Transported] = {
    Transport.TCP: Transported(FLOWS_BY_ID["mssql_app_db"], 1433, "TCP 1433"),
    Transport.UDP: Transported(FLOWS_BY_ID["snmp_endpoints"], 161, "UDP 161"),
    Transport.ICMP: Transported(FLOWS_BY_ID["icmp_endpoints"], None, "ICMP echo"),
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One row: a result as a check reports it, whether it needs a firewall rule (per transport)
    and the words the summary must hold."""

    name: str
    result: Result
    detail: str
    rule: frozenset[Transport]
    words: tuple[str, ...]
    phases: tuple[Phase, ...] = ()
    connected: bool = False

    def check_result(self) -> CheckResult:
        """The result a check gives for this fault."""
        phases = {phase: 0.01 for phase in self.phases}
        rtt = 0.0002 if self.connected else None
        return CheckResult(self.result, 0.5, self.detail, phases, tcp_rtt_seconds=rtt)


ALL = frozenset(Transport)
NONE: frozenset[Transport] = frozenset()
FAULTS = (
    Fault(
        "dns",
        Result.DNS_ERROR,
        "name resolution failed: Name or service not known",
        NONE,
        ("does not resolve", "add its DNS record"),
        (Phase.RESOLVE,),
    ),
    Fault(
        "refused",
        Result.REFUSED,
        "connection refused (port closed or reset by a firewall)",
        ALL,
        ("connection is refused", "nothing listens", "firewall rejects it", "must allow"),
        (Phase.CONNECT,),
    ),
    Fault(
        "unreachable",
        Result.UNREACHABLE,
        "no route to host (ICMP host unreachable)",
        ALL,
        ("router or firewall reports it unreachable", "a route must exist", "must allow"),
        (Phase.CONNECT,),
    ),
    Fault(
        "dropped",
        Result.TIMEOUT,
        "no answer within 5s during connect",
        ALL,
        ("silently dropped", "must allow"),
        (Phase.CONNECT,),
    ),
    Fault(
        "silent after connect",
        Result.TIMEOUT,
        "no answer within 5s during handshake",
        frozenset({Transport.UDP, Transport.ICMP}),  # over UDP/ICMP silence is the network's
        (),
        (Phase.CONNECT, Phase.HANDSHAKE),
        connected=True,
    ),
    Fault(
        "connect inside the handshake, dropped",
        Result.TIMEOUT,
        "no answer within 5s during connect",
        ALL,
        ("silently dropped", "must allow"),
        (Phase.HANDSHAKE, Phase.CONNECT),
    ),
    Fault(
        "wrong service",
        Result.PROTOCOL_MISMATCH,
        "peer does not speak TDS (got 'SSH-2.0-OpenSSH_9.2')",
        NONE,
        ("answers, but not as", "another service listens"),
        (Phase.CONNECT, Phase.HANDSHAKE),
        connected=True,
    ),
    Fault(
        "tls",
        Result.TLS_ERROR,
        "certificate rejected: certificate has expired",
        NONE,
        ("fails TLS", "renew the service's certificate"),
        (Phase.CONNECT, Phase.TLS),
        connected=True,
    ),
    Fault(
        "auth",
        Result.AUTH_FAILED,
        "login failed (error 18456)",
        NONE,
        ("refused the login", "check the"),
        (Phase.CONNECT, Phase.AUTH),
        connected=True,
    ),
    Fault(
        "service",
        Result.SERVICE_ERROR,
        "the service answered an error",
        NONE,
        ("is up but refuses the request",),
        (Phase.CONNECT, Phase.HANDSHAKE),
        connected=True,
    ),
    Fault(
        "exporter",
        Result.EXPORTER_ERROR,
        "too many open files (raise the exporter's open-file limit)",
        NONE,
        ("exporter could not run the check", "open-file limit", "untested"),
    ),
)


def _facts(flow: Flow) -> FlowFacts:
    return FlowFacts.of(flow.id, flow.check, flow, flow.source)


def test_every_result_class_has_a_row() -> None:
    """The table covers every failing result class."""
    assert {fault.result for fault in FAULTS} == set(Result) - {Result.OK}


@pytest.mark.parametrize("transport", list(Transport), ids=lambda t: t.value)
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_remediation_names_flow_port_protocol_direction(fault: Fault, transport: Transport) -> None:
    """Each fault's line names the flow, host, protocol and port, source and destination; a
    network fault carries the rule with the table's reason, a service fault none."""
    case = TRANSPORTS[transport]
    flow = case.flow
    remediation = remediate(_facts(flow), HOST, case.port, fault.check_result())
    summary = remediation.summary
    assert "\n" not in summary
    assert summary.startswith(f"{flow.id}")
    for words in (HOST, case.opening, SOURCE_NAMES[flow.source], *fault.words):
        assert words in summary, (words, summary)
    if transport in fault.rule:
        assert remediation.rule == FirewallRule(
            transport,
            case.port,
            flow.source.value,
            flow.destination.value,
            flow.reason,
            (HOST,),
            (flow.id,),
        )
        assert (
            f"allow {case.opening} from {SOURCE_NAMES[flow.source]} to "
            f"{DESTINATION_NAMES[flow.destination]} (port table: '{flow.reason}')"
        ) in summary
    else:
        assert remediation.rule is None
        assert DESTINATION_NAMES[flow.destination] in summary
        assert "must allow" not in summary


def test_the_issue_example_is_spelled_out() -> None:
    """The issue's own sentence: the Application Server, TCP 1433 dropped, the table's reason."""
    flow = FLOWS_BY_ID["mssql_app_db"]
    dropped = CheckResult(Result.TIMEOUT, 5.0, "no answer within 5s during connect",
                          {Phase.CONNECT: 5.0})  # fmt: skip
    summary = remediate(_facts(flow), "db1", 1433, dropped).summary
    assert summary == (
        "mssql_app_db: the Application Server cannot reach the database (SQL Server) at db1 "
        "(TCP 1433): packets are silently dropped — a firewall between them must allow TCP 1433 "
        "from the Application Server to the Database Server (port table: 'Communication between "
        "the Certero Application Server and the Database Server for access to the database')"
    )


def test_slow_tcp_service_is_not_a_firewall_rule() -> None:
    """A TCP connection that opened and then went silent points at the service, not the path."""
    flow = FLOWS_BY_ID["ldap_dc"]
    slow = CheckResult(
        Result.TIMEOUT, 5.0, "no answer within 5s during handshake",
        {Phase.CONNECT: 0.001, Phase.HANDSHAKE: 5.0}, tcp_rtt_seconds=0.0001,
    )  # fmt: skip
    remediation = remediate(_facts(flow), "dc1", 389, slow)
    assert remediation.rule is None
    assert "accepted the connection but did not answer in time" in remediation.summary
    assert "the directory (LDAP) at dc1 (TCP 389)" in remediation.summary


@pytest.mark.parametrize(
    ("detail", "advice"),
    [
        ("certificate rejected: certificate has expired", "renew the service's certificate"),
        ("certificate rejected: self-signed certificate", "self-signed: replace it"),
        (
            "certificate rejected: unable to get local issuer certificate",
            "install the intermediate",
        ),
        (
            "certificate rejected: Hostname mismatch, certificate is not valid for 'dc1'",
            "does not name the host",
        ),
        ("TLS handshake failed: unsupported protocol", "TLS versions"),
    ],
)
def test_tls_advice_follows_the_failure(detail: str, advice: str) -> None:
    """Expired, self-signed, missing intermediate and wrong name each get their own fix."""
    flow = FLOWS_BY_ID["ldaps_dc"]
    result = CheckResult(Result.TLS_ERROR, 0.1, detail, {Phase.TLS: 0.1}, tcp_rtt_seconds=0.001)
    assert advice in remediate(_facts(flow), "dc1", 636, result).summary


@pytest.mark.parametrize(
    ("flow_id", "port", "account_words"),
    [
        ("ldap_dc", 389, "bind DN"),
        ("mssql_app_db", 1433, "SQL Server login"),
        ("ssh_hmc", 22, "SSH user"),
        ("snmp_endpoints", 161, "community"),
        ("smb_endpoints", 445, "Windows account"),
        ("https_vsphere", 443, "vCenter/ESXi account"),
    ],
)
def test_auth_advice_speaks_each_protocol(flow_id: str, port: int, account_words: str) -> None:
    """A refused login says which account to check, in the protocol's own terms."""
    flow = FLOWS_BY_ID[flow_id]
    result = CheckResult(Result.AUTH_FAILED, 0.1, "login refused", {Phase.AUTH: 0.1})
    summary = remediate(_facts(flow), "h1", port, result).summary
    assert account_words in summary
    assert "locked" in summary or "access" in summary


@pytest.mark.parametrize(
    ("flow_id", "port", "service_words"),
    [
        ("oracle_tns", 1521, "service name is registered with the listener"),
        ("smb_endpoints", 445, "SMB2/3 is enabled (not SMB1 only), the share exists"),
    ],
)
def test_service_advice_speaks_each_protocol(flow_id: str, port: int, service_words: str) -> None:
    """A service that is up but refuses says what to check on that service."""
    flow = FLOWS_BY_ID[flow_id]
    result = CheckResult(Result.SERVICE_ERROR, 0.1, "refused", {Phase.HANDSHAKE: 0.1})
    assert service_words in remediate(_facts(flow), "h1", port, result).summary


def test_udp_silence_names_the_service_side_too() -> None:
    """UDP silence cannot tell a firewall from an SNMP agent ignoring a wrong community: the
    line asks for the rule and names the agent's side as well."""
    flow = FLOWS_BY_ID["snmp_endpoints"]
    silence = CheckResult(Result.TIMEOUT, 5.0, "no UDP reply", {Phase.HANDSHAKE: 5.0})
    summary = remediate(_facts(flow), "switch1", 161, silence).summary
    assert "must allow UDP 161 from the Endpoint Server to the endpoint networks" in summary
    assert summary.endswith("check the community and the agent's access list if the firewall "
                            "is known to be open")  # fmt: skip


def test_custom_flow_takes_transport_and_description() -> None:
    """An extra flow's rule uses its check's transport and its own description as the reason."""
    facts = FlowFacts.of(
        "syslog_relay",
        "udp_echo",
        None,
        VantagePoint.ENDPOINT_SERVER,
        transport="udp",
        description="syslog to the collector",
    )
    result = CheckResult(Result.REFUSED, 0.1, "UDP port 514 unreachable", {})
    remediation = remediate(facts, "10.0.0.9", 514, result)
    assert remediation.rule is not None
    assert remediation.rule.key == ("udp", 514, "endpoint_server", "custom")
    assert "(port table: 'syslog to the collector')" in remediation.summary


def test_ok_result_needs_nothing() -> None:
    """An ok result has an empty remediation and no rule."""
    flow = FLOWS_BY_ID["ssh_hmc"]
    assert remediate(_facts(flow), "h", 22, CheckResult(Result.OK, 0.1, "ok")) == Remediation("")


def _refused(flow_id: str, host: str, port: int | None) -> Remediation:
    flow = FLOWS_BY_ID[flow_id]
    result = CheckResult(Result.REFUSED, 0.1, "connection refused", {Phase.CONNECT: 0.1})
    return remediate(_facts(flow), host, port, result)


def test_rules_merge_across_targets_and_keep_openings_apart() -> None:
    """One opening is one rule with every host it covers (each once); another port, role or
    source is another rule; service faults add none."""
    auth = CheckResult(Result.AUTH_FAILED, 0.1, "login failed", {Phase.AUTH: 0.1})
    rules = merge_rules(
        [
            _refused("mssql_ilmt", "sql1", 1433),
            _refused("mssql_ilmt", "sql2", 1433),
            _refused("mssql_ilmt", "sql1", 1433),
            _refused("mssql_bigfix", "sql1", 1433),  # same port, another destination role
            _refused("ldap_dc", "dc1", 389),
            _refused("ldaps_dc", "dc1", 636),
            _refused("ldap_dc", "dc2", 389),
            remediate(_facts(FLOWS_BY_ID["ssh_hmc"]), "hmc", 22, auth),
        ]
    )
    covered = {(rule.key, rule.hosts, rule.flows) for rule in rules}
    assert covered == {
        (("tcp", 1433, "endpoint_server", Role.ILMT_SQL.value), ("sql1", "sql2"), ("mssql_ilmt",)),
        (("tcp", 1433, "endpoint_server", Role.BIGFIX_SQL.value), ("sql1",), ("mssql_bigfix",)),
        (("tcp", 389, "endpoint_server", "domain_controllers"), ("dc1", "dc2"), ("ldap_dc",)),
        (("tcp", 636, "endpoint_server", "domain_controllers"), ("dc1",), ("ldaps_dc",)),
    }
    assert len(rules) == 4


def test_two_flows_needing_one_opening_share_a_rule() -> None:
    """Two custom flows over the same opening merge into one rule naming both flows."""
    result = CheckResult(Result.TIMEOUT, 5.0, "no answer", {Phase.CONNECT: 5.0})
    remediations = [
        remediate(FlowFacts.of(name, "tcp", None, VantagePoint.CLIENT), host, 8443, result)
        for name, host in (("portal", "web1"), ("api", "web1"), ("api", "web2"))
    ]
    (rule,) = merge_rules(remediations)
    assert rule.hosts == ("web1", "web2")
    assert rule.flows == ("portal", "api")
    assert rule.service == "TCP 8443"


# One catalogue flow per TCP check, so every check's own way of connecting is exercised.
TCP_FLOWS = ("ssh_hmc", "smb_endpoints", "netbios_ssn_endpoints", "ldap_dc", "ldaps_dc",
             "https_app_relay", "https_vsphere", "http_xenserver", "oracle_tns", "mssql_app_db",
             "sap_systems", "db2_ilmt")  # fmt: skip
REAL_TIMEOUT_S = 1.5


async def _run_flow(
    flow: Flow, host: str, port: int, blocking: BlockingPool
) -> tuple[CheckResult, Remediation]:
    spec = CHECKS[flow.check]
    settings = spec.settings_model.model_validate(dict(flow.settings))
    outcome = await run_check(spec, Target(host, port), settings, REAL_TIMEOUT_S, blocking=blocking)
    return outcome.result, remediate(_facts(flow), host, port, outcome.result)


async def test_real_checks_tell_a_dropped_syn_from_a_silent_service(
    isolated_host: IsolatedHost,
) -> None:
    """Run for real, every TCP check behind a firewall that drops the SYN gets the firewall rule,
    and against a listener that accepts and says nothing gets the service advice instead."""
    flows = [FLOWS_BY_ID[flow_id] for flow_id in TCP_FLOWS]
    # SAP's check only accepts dispatcher ports 3200-3299
    silent, dropped = 3200, 3201
    isolated_host.tcp_listener(silent)
    isolated_host.drop_all_tcp_to(dropped)
    host = isolated_host.address
    with BlockingPool(2 * len(flows)) as blocking:
        outcomes = await asyncio.gather(
            *(_run_flow(flow, host, port, blocking) for flow in flows for port in (silent, dropped))
        )
    by_flow = {
        (flow.id, port): outcome
        for (flow, port), outcome in zip(
            ((f, p) for f in flows for p in (silent, dropped)), outcomes, strict=True
        )
    }
    wrong = {}
    for (flow_id, port), (result, remediation) in by_flow.items():
        expected_rule = port == dropped
        words = "silently dropped" if expected_rule else "accepted the connection but did not"
        if (
            result.result is not Result.TIMEOUT
            or (remediation.rule is not None) != expected_rule
            or words not in remediation.summary
        ):
            wrong[(flow_id, port)] = (result.result.value, list(result.phases), result.detail)
    assert wrong == {}


async def test_real_udp_and_icmp_faults_name_their_rule(isolated_host: IsolatedHost) -> None:
    """Run for real: dropped SNMP, NetBIOS and SQL Browser requests and dropped pings are
    silence with the rule to open; a UDP port answered with ICMP port unreachable is refused,
    and one answered with admin-prohibited unreachable, each with the rule."""
    dropped, closed, prohibited = 161, 162, 163
    isolated_host.drop_all_udp_to(dropped)
    isolated_host.reject_udp(prohibited, "icmp-admin-prohibited")
    isolated_host.drop_icmp_echo()
    host = isolated_host.address
    cases = [
        ("snmp_endpoints", dropped, Result.TIMEOUT, "UDP 161): no reply: packets are silently"),
        ("netbios_ns_endpoints", dropped, Result.TIMEOUT, "silently dropped"),
        ("mssql_browser_app_db", dropped, Result.TIMEOUT, "silently dropped"),
        ("snmp_endpoints", closed, Result.REFUSED, "the connection is refused"),
        ("snmp_endpoints", prohibited, Result.UNREACHABLE, "reports it unreachable"),
        ("icmp_endpoints", 0, Result.TIMEOUT, "(ICMP echo): no echo reply: ICMP is silently"),
    ]
    with BlockingPool(len(cases)) as blocking:
        outcomes = await asyncio.gather(
            *(
                _run_flow(FLOWS_BY_ID[flow_id], host, port, blocking)
                for flow_id, port, _, _ in cases
            )
        )
    for (flow_id, port, expected, words), (result, remediation) in zip(
        cases, outcomes, strict=True
    ):
        flow = FLOWS_BY_ID[flow_id]
        assert result.result is expected, (flow_id, port, result)
        assert words in remediation.summary, remediation.summary
        assert remediation.rule is not None
        assert remediation.rule.key == (
            flow.transport.value,
            None if flow.transport is Transport.ICMP else port,
            flow.source.value,
            flow.destination.value,
        )


def test_remediate_pair_reads_the_config() -> None:
    """A configured pair's remediation takes the config's vantage point, a catalogue flow's row,
    and an extra flow's check transport and description."""
    config = parse_config(
        "source: application_server\n"
        "targets:\n  database_server: ['db1:1533']\n"
        "extra_flows:\n"
        "  - {id: browser_tcp, check: tcp, target: 'db1:1434', description: 'Browser over TCP'}\n",
        "inline.yaml",
    )
    jobs = {job.flow_id: job for job in config.jobs}
    refused = CheckResult(Result.REFUSED, 0.1, "connection refused", {Phase.CONNECT: 0.1})
    sql = remediate_pair(config, jobs["mssql_app_db"], refused)
    assert sql.rule is not None
    assert sql.rule.key == ("tcp", 1533, "application_server", "database_server")
    custom = remediate_pair(config, jobs["browser_tcp"], refused)
    assert custom.rule is not None
    assert custom.rule.key == ("tcp", 1434, "application_server", "custom")
    assert custom.rule.reason == "Browser over TCP"
