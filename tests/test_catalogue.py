"""The built-in catalogue pins every row of Certero's published port table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from exporter.catalogue import FLOWS, FLOWS_BY_ID, FOOTNOTES, TABLE, Role, Transport, VantagePoint
from exporter.checks import CHECKS
from exporter.config import parse_config
from tests.peers.exporter import run_cli

SEED = Path(__file__).parent / "testdata" / "certero-port-table.txt"
PROTOCOLS = {"TCP", "UDP", "ICMP v4", "ICMP", "HTTPS", "HTTP", "HTTP S"}


def _published_rows() -> tuple[list[tuple[str, str, str, str, str]], dict[str, str]]:
    """Parse the published table: blank-line separated fields, rows start with a protocol."""
    paragraphs = [p.strip(" \n") for p in SEED.read_text(encoding="utf-8").split("\n\n")]
    start = paragraphs.index("Reason") + 1
    rows: list[tuple[str, str, str, str, str]] = []
    footnotes: dict[str, str] = {}
    index = start
    while index < len(paragraphs):
        field = paragraphs[index]
        note = re.fullmatch(r"(\*+)(\S.*)", field, re.DOTALL)
        if note:
            footnotes[note.group(1)] = note.group(2)
            index += 1
            continue
        assert field in PROTOCOLS, f"unexpected field {field!r}"
        port = paragraphs[index + 1]
        index += 2
        if re.fullmatch(r"\*+", paragraphs[index]):
            port = f"{port} {paragraphs[index]}"
            index += 1
        source, destination, reason = paragraphs[index : index + 3]
        # Non-breaking spaces of the web page become plain spaces; an empty cell stays empty.
        reason = reason.replace("\xa0", " ")
        rows.append((field, port, source, destination.strip("\xa0 "), reason))
        index += 3
    return rows, footnotes


def test_every_published_row_is_in_the_table_verbatim() -> None:
    """All 27 rows of the seed table appear, in order and word for word, in TABLE."""
    rows, _ = _published_rows()
    assert len(rows) == 27
    assert len(TABLE) == 27
    for number, (published, ours) in enumerate(zip(rows, TABLE, strict=True), start=1):
        assert ours.number == number
        assert (ours.protocol, ours.port, ours.source, ours.destination, ours.reason) == published


def test_footnotes_are_verbatim() -> None:
    """The five footnotes are kept word for word."""
    _, footnotes = _published_rows()
    assert footnotes == dict(FOOTNOTES)


def test_every_row_belongs_to_exactly_one_flow() -> None:
    """27 rows map onto 26 flows: the two ICMP rows are one flow with both reasons."""
    numbers = [row.number for flow in FLOWS for row in flow.rows]
    assert sorted(numbers) == list(range(1, 28))
    assert len(FLOWS) == 26
    icmp = FLOWS_BY_ID["icmp_endpoints"]
    assert [row.number for row in icmp.rows] == [6, 11]
    assert "Windows remote inventory" in icmp.reason
    assert "do not respond to NetBIOS or SNMP" in icmp.reason


@pytest.mark.parametrize(
    ("flow_id", "transport", "port", "source", "destination", "check"),
    [
        ("ssh_endpoints", Transport.TCP, 22, VantagePoint.ENDPOINT_SERVER, Role.ENDPOINT_NETWORKS, "ssh"),
        ("ssh_hmc", Transport.TCP, 22, VantagePoint.ENDPOINT_SERVER, Role.IBM_HMC, "ssh"),
        ("snmp_endpoints", Transport.UDP, 161, VantagePoint.ENDPOINT_SERVER, Role.ENDPOINT_NETWORKS, "snmp"),
        ("netbios_ns_endpoints", Transport.UDP, 137, VantagePoint.ENDPOINT_SERVER, Role.ENDPOINT_NETWORKS, "netbios_ns"),
        ("smb_endpoints", Transport.TCP, 445, VantagePoint.ENDPOINT_SERVER, Role.ENDPOINT_NETWORKS, "smb"),
        ("icmp_endpoints", Transport.ICMP, None, VantagePoint.ENDPOINT_SERVER, Role.ENDPOINT_NETWORKS, "icmp"),
        ("netbios_ssn_endpoints", Transport.TCP, 139, VantagePoint.ENDPOINT_SERVER, Role.ENDPOINT_NETWORKS, "netbios_ssn"),
        ("ldap_dc", Transport.TCP, 389, VantagePoint.ENDPOINT_SERVER, Role.DOMAIN_CONTROLLERS, "ldap"),
        ("ldaps_dc", Transport.TCP, 636, VantagePoint.ENDPOINT_SERVER, Role.DOMAIN_CONTROLLERS, "ldaps"),
        ("ldaps_gc", Transport.TCP, 3269, VantagePoint.ENDPOINT_SERVER, Role.DOMAIN_CONTROLLERS, "ldaps"),
        ("https_app_relay", Transport.TCP, 443, VantagePoint.ENDPOINT_SERVER, Role.APPLICATION_SERVER, "https"),
        ("https_vsphere", Transport.TCP, 443, VantagePoint.ENDPOINT_SERVER, Role.VSPHERE, "vsphere"),
        ("http_xenserver", Transport.TCP, 80, VantagePoint.ENDPOINT_SERVER, Role.XENSERVER, "xenapi"),
        ("oracle_tns", Transport.TCP, 1521, VantagePoint.ENDPOINT_SERVER, Role.ORACLE_DATABASES, "oracle_tns"),
        ("https_agent_upload", Transport.TCP, 443, VantagePoint.CLIENT, Role.ENDPOINT_SERVER, "https"),
        ("https_web_ui", Transport.TCP, 443, VantagePoint.CLIENT, Role.APPLICATION_SERVER, "https"),
        ("mssql_app_db", Transport.TCP, 1433, VantagePoint.APPLICATION_SERVER, Role.DATABASE_SERVER, "mssql"),
        ("mssql_browser_app_db", Transport.UDP, 1434, VantagePoint.APPLICATION_SERVER, Role.DATABASE_SERVER, "mssql_browser"),
        ("mssql_reporting", Transport.TCP, 1433, VantagePoint.CLIENT, Role.DATABASE_SERVER, "mssql"),
        ("sap_systems", Transport.TCP, 3200, VantagePoint.ENDPOINT_SERVER, Role.SAP_SYSTEMS, "sap"),
        ("db2_ilmt", Transport.TCP, 50000, VantagePoint.ENDPOINT_SERVER, Role.ILMT_DB2, "db2"),
        ("mssql_ilmt", Transport.TCP, 1433, VantagePoint.ENDPOINT_SERVER, Role.ILMT_SQL, "mssql"),
        ("db2_bigfix", Transport.TCP, 50000, VantagePoint.ENDPOINT_SERVER, Role.BIGFIX_DB2, "db2"),
        ("mssql_bigfix", Transport.TCP, 1433, VantagePoint.ENDPOINT_SERVER, Role.BIGFIX_SQL, "mssql"),
        ("mssql_sccm", Transport.TCP, 1433, VantagePoint.ENDPOINT_SERVER, Role.SCCM_SQL, "mssql"),
        ("https_customer_centre", Transport.TCP, 443, VantagePoint.APPLICATION_SERVER, Role.CUSTOMER_CENTRE, "https"),
    ],
)  # fmt: skip
def test_flow_ids_and_shapes(
    flow_id: str,
    *,
    transport: Transport,
    port: int | None,
    source: VantagePoint,
    destination: Role,
    check: str,
) -> None:
    """Each flow id keeps its transport, port, roles and check (ids are a public contract)."""
    flow = FLOWS_BY_ID[flow_id]
    assert (flow.transport, flow.port, flow.source, flow.destination, flow.check) == (
        transport,
        port,
        source,
        destination,
        check,
    )


def test_errata_are_corrected_and_stated() -> None:
    """The table's known errata are corrected in the data and said in the flow's erratum."""
    browser = FLOWS_BY_ID["mssql_browser_app_db"]
    assert browser.rows[0].protocol == "TCP"  # as published
    assert browser.transport is Transport.UDP
    assert "UDP 1434" in browser.erratum
    sap = FLOWS_BY_ID["sap_systems"]
    assert sap.port_range == (3200, 3299)
    assert "32NN" in sap.footnote
    assert "Oracle" in sap.erratum
    bigfix = FLOWS_BY_ID["mssql_bigfix"]
    assert "ILMT" in bigfix.rows[0].destination
    assert "BigFix" in bigfix.reason
    assert bigfix.destination is Role.BIGFIX_SQL
    assert "BigFix" in bigfix.erratum
    assert FLOWS_BY_ID["https_agent_upload"].rows[0].protocol == "HTTP S"
    assert "HTTPS" in FLOWS_BY_ID["https_agent_upload"].erratum
    assert FLOWS_BY_ID["icmp_endpoints"].erratum


def test_optional_flows() -> None:
    """The reporting and Customer Centre flows are the table's optional ones."""
    assert {flow.id for flow in FLOWS if flow.optional} == {
        "mssql_reporting",
        "https_customer_centre",
    }


def test_no_flow_falls_back() -> None:
    """Every one of the 26 flows runs its own protocol-aware check: none is a bare TCP connect
    or TLS handshake standing in for a protocol that can be spoken."""
    assert len(FLOWS) == 26
    for flow in FLOWS:
        assert flow.check in CHECKS, flow.id
        assert flow.check not in {"tcp", "tls"}, flow.id
    for source in VantagePoint:
        config = parse_config(
            f"source: {source.value}\ntargets:\n"
            + "".join(f"  {role.value}: [127.0.0.1]\n" for role in Role),
            "all.yaml",
        )
        for job in config.jobs:
            assert job.catalogue_flow is not None
            assert job.check == job.catalogue_flow.check
        assert not [warning for warning in config.warnings if "instead" in warning]


def test_catalogue_command_shows_the_check_of_every_flow() -> None:
    """`catalogue --format json` names each flow's own check, one of the registered ones."""
    run = run_cli("catalogue", "--format", "json")
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    assert len(document) == 26
    assert all(entry["check"] in CHECKS for entry in document)
    assert "check_in_this_version" not in document[0]
