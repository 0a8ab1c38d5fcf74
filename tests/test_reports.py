"""Readiness reports: Markdown, self-contained HTML and CSV lead with the firewall rules to request,
merged across targets; JSON, JUnit and the table carry each failing pair's remediation."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from exporter.catalogue import FLOWS_BY_ID
from exporter.cli import run_once
from exporter.config import parse_config
from exporter.report import (
    CSV_COLUMNS,
    FlowReport,
    NetworkReport,
    to_csv,
    to_html,
    to_json,
    to_markdown,
)
from tests.peers import chromium
from tests.peers.exporter import run_cli
from tests.peers.ports import free_tcp_port

# Characters each format must quote: a Markdown pipe, CSV's quote and comma, HTML's angle brackets.
DESCRIPTION = 'syslog | "relay", <b>collector</b>'
NETWORK = "127.0.0.8/30"


@dataclass(frozen=True, slots=True)
class Run:
    """One readiness run over loopback: closed ports refuse, one listener accepts."""

    config: Path
    ldap_port: int  # closed on 127.0.0.1 and 127.0.0.2: one rule covering both hosts
    ssh_port: int  # closed across the swept network: one rule covering its label
    syslog_port: int  # closed: a custom flow's rule, its description as the reason
    open_port: int  # listening: an ok pair, no rule
    reports: list[FlowReport]
    networks: list[NetworkReport]


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    """A TCP listener the kernel accepts connections for (nothing is read)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


@pytest.fixture(scope="module")
def readiness(tmp_path_factory: pytest.TempPathFactory, listener: socket.socket) -> Run:
    """The config, run once in-process; the CLI tests run the same config again."""
    ldap_port, ssh_port, syslog_port = free_tcp_port(), free_tcp_port(), free_tcp_port()
    open_port = listener.getsockname()[1]
    off = ("ldaps_dc", "ldaps_gc", "snmp_endpoints", "netbios_ns_endpoints", "smb_endpoints",
           "netbios_ssn_endpoints")  # fmt: skip
    flows = "".join(f"  {flow}: {{enabled: false}}\n" for flow in off)
    text = f"""
source: endpoint_server
defaults: {{timeout: 2s}}
targets:
  domain_controllers: ["127.0.0.1:{ldap_port}", "127.0.0.2:{ldap_port}"]
  endpoint_networks: ["{NETWORK}"]
flows:
{flows}  ssh_endpoints: {{port: {ssh_port}}}
extra_flows:
  - id: syslog_relay
    check: tcp
    target: "127.0.0.1:{syslog_port}"
    description: {json.dumps(DESCRIPTION)}
  - {{id: portal, check: tcp, target: "127.0.0.1:{open_port}"}}
"""
    path = tmp_path_factory.mktemp("readiness") / "flows.yaml"
    path.write_text(text, encoding="utf-8")
    config = parse_config(text, str(path))
    reports, networks = asyncio.run(
        run_once(config, list(config.jobs), list(config.sweeps), show_progress=False)
    )
    return Run(path, ldap_port, ssh_port, syslog_port, open_port, reports, networks)


def expected_rules(run: Run) -> list[dict[str, str]]:
    """The three openings the failing pairs and network need, as CSV rows."""
    return [
        {
            "protocol": "tcp",
            "port": str(run.ldap_port),
            "source_role": "endpoint_server",
            "destination_role": "domain_controllers",
            "hosts": "127.0.0.1 127.0.0.2",
            "flows": "ldap_dc",
            "reason": FLOWS_BY_ID["ldap_dc"].reason,
        },
        {
            "protocol": "tcp",
            "port": str(run.syslog_port),
            "source_role": "endpoint_server",
            "destination_role": "custom",
            "hosts": "127.0.0.1",
            "flows": "syslog_relay",
            "reason": DESCRIPTION,
        },
        {
            "protocol": "tcp",
            "port": str(run.ssh_port),
            "source_role": "endpoint_server",
            "destination_role": "endpoint_networks",
            "hosts": NETWORK,
            "flows": "ssh_endpoints",
            "reason": FLOWS_BY_ID["ssh_endpoints"].reason,
        },
    ]


def test_the_run_fails_where_expected(readiness: Run) -> None:
    """The premise: three pairs refused, one ok; the ssh network failed, the ICMP one passed."""
    results = {(r.job.flow_id, r.job.target.host): r.result.result.value for r in readiness.reports}
    assert results == {
        ("ldap_dc", "127.0.0.1"): "refused",
        ("ldap_dc", "127.0.0.2"): "refused",
        ("syslog_relay", "127.0.0.1"): "refused",
        ("portal", "127.0.0.1"): "ok",
    }
    assert {(n.sweep.flow_id, n.ok) for n in readiness.networks} == {
        ("ssh_endpoints", False),
        ("icmp_endpoints", True),
    }


def test_csv_is_the_deduplicated_rule_list(readiness: Run) -> None:
    """One CSV row per opening with every host it covers, quoted so a spreadsheet reads it."""
    text = to_csv(readiness.reports, readiness.networks)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    assert list(reader) == expected_rules(readiness)


def test_markdown_has_the_rule_table(readiness: Run) -> None:
    """The Markdown report's rule table has one row per rule, pipes in text escaped."""
    text = to_markdown(readiness.reports, readiness.networks)
    lines = text.splitlines()
    start = lines.index("## Rules to request from the network team")
    header = "| Protocol | Port | From | To | Hosts | Flows | Reason |"
    assert lines[start + 2] == header
    rows = lines[start + 4 : start + 7]
    assert lines[start + 7] == ""
    assert rows[0].startswith(
        f"| TCP | {readiness.ldap_port} | endpoint_server | domain_controllers "
        "| 127.0.0.1, 127.0.0.2 | ldap_dc |"
    )
    assert rows[1].endswith(r"| syslog_relay | syslog \| " + '"relay", <b>collector</b> |')
    assert f"| endpoint_networks | {NETWORK} | ssh_endpoints |" in rows[2]
    for row in rows:  # every row has the header's 8 cell borders once escaped pipes are removed
        assert row.replace(r"\|", "").count("|") == header.count("|")
    assert "## What to change" in text
    assert f"- **127.0.0.1:{readiness.ldap_port}**: ldap_dc (" not in text
    assert f"- **127.0.0.1:{readiness.ldap_port}**: ldap_dc: the Endpoint Server" in text
    assert "the connection is refused" in text
    assert f"| icmp_endpoints | {NETWORK} | icmp |" in text


class PageParser(HTMLParser):
    """Collects tags, URLs in attributes and table cells of the report page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "action", "srcset")]
        if tag == "table":
            self._table = values.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr":
            self.tables[self._table].append([])
        elif tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_html_is_self_contained_with_the_rule_table(readiness: Run) -> None:
    """The HTML page parses, requests nothing from outside, and its rule table holds each rule
    with its hosts; a description's markup stays text."""
    text = to_html(readiness.reports, readiness.networks)
    page = PageParser()
    page.feed(text)
    page.close()
    assert page.urls == []
    assert not {"script", "link", "img", "iframe", "object"} & set(page.tags)
    assert "://" not in text
    assert "@import" not in text
    assert "b" not in page.tags  # the description's <b> is escaped, not markup
    rules = [row for row in page.tables["rules"] if row]
    assert [(r[0], r[1], r[4], r[5], r[6]) for r in rules] == [
        ("TCP", str(rule["port"]), rule["hosts"].replace(" ", ", "), rule["flows"], rule["reason"])
        for rule in expected_rules(readiness)
    ]
    flows = {row[0] + " " + row[1]: row for row in page.tables["flows"] if row}
    refused = flows[f"ldap_dc 127.0.0.2:{readiness.ldap_port}"]
    assert refused[3] == "refused"
    assert "must allow TCP" in refused[6]
    assert flows[f"portal 127.0.0.1:{readiness.open_port}"][6] == ""
    networks = {row[0]: row for row in page.tables["networks"] if row}
    assert f"at {NETWORK} (TCP {readiness.ssh_port})" in networks["ssh_endpoints"][5]


def test_json_carries_remediation_and_rules(readiness: Run) -> None:
    """Each failing pair and network has a remediation object; the rules list is merged."""
    document = json.loads(to_json(readiness.reports, readiness.networks))
    flows = {(f["flow"], f["target"]): f for f in document["flows"]}
    refused = flows[("ldap_dc", f"127.0.0.1:{readiness.ldap_port}")]["remediation"]
    assert refused["rule"] == {
        "protocol": "tcp",
        "port": readiness.ldap_port,
        "source_role": "endpoint_server",
        "destination_role": "domain_controllers",
        "hosts": ["127.0.0.1"],
        "flows": ["ldap_dc"],
        "reason": FLOWS_BY_ID["ldap_dc"].reason,
    }
    assert "the Endpoint Server cannot reach the directory (LDAP)" in refused["summary"]
    assert flows[("portal", f"127.0.0.1:{readiness.open_port}")]["remediation"] is None
    assert [rule["hosts"] for rule in document["rules"]] == [
        ["127.0.0.1", "127.0.0.2"],
        ["127.0.0.1"],
        [NETWORK],
    ]
    networks = {n["flow"]: n for n in document["networks"]}
    assert networks["icmp_endpoints"]["remediation"] is None
    assert networks["ssh_endpoints"]["remediation"]["rule"]["hosts"] == [NETWORK]


def test_check_writes_the_report_file_and_shows_the_table(readiness: Run, tmp_path: Path) -> None:
    """`--report FILE` writes the chosen format to FILE; stdout shows the table, the remediation
    lines and the rules; the exit code still says a flow failed."""
    report = tmp_path / "rules.csv"
    run = run_cli(
        "check", "--config", str(readiness.config), "--format", "csv", "--report", str(report),
        "--no-progress",
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    with report.open(newline="", encoding="utf-8") as handle:
        assert list(csv.DictReader(handle)) == expected_rules(readiness)
    assert "What to change:" in run.stdout
    assert "Rules to request from the network team:" in run.stdout
    assert (
        f"allow TCP {readiness.ldap_port} from endpoint_server to domain_controllers: "
        "127.0.0.1, 127.0.0.2 (flows: ldap_dc;"
    ) in run.stdout
    assert "protocol,port,source_role" not in run.stdout


@pytest.mark.parametrize("fmt", ["markdown", "html", "junit"])
def test_check_formats_on_stdout(readiness: Run, fmt: str) -> None:
    """Each readiness format is printed on stdout without `--report`, remediations included."""
    run = run_cli("check", "--config", str(readiness.config), "--format", fmt, "--no-progress")
    assert run.returncode == 1, run.stderr
    if fmt == "junit":
        root = ET.fromstring(run.stdout)
        texts = [failure.text or "" for failure in root.iter("failure")]
        assert len(texts) == 4  # three pairs and the ssh network
        assert all("must allow TCP" in text for text in texts)
    else:
        assert "Rules to request from the network team" in run.stdout
        assert "127.0.0.1, 127.0.0.2" in run.stdout


def test_chromium_renders_the_html_report(readiness: Run, tmp_path: Path) -> None:
    """Headless Chromium loads the HTML report from a file: the rule table and the failing
    pair's remediation are in the rendered DOM; a screenshot is kept as a test artifact."""
    report = tmp_path / "readiness.html"
    report.write_text(to_html(readiness.reports, readiness.networks), encoding="utf-8")
    dom = chromium.dump_dom(report.as_uri(), tmp_path)
    assert "Rules to request from the network team" in dom
    assert "must allow TCP" in dom
    assert f"127.0.0.2:{readiness.ldap_port}" in dom
    chromium.screenshot(report.as_uri(), tmp_path / "readiness.png", 1200, 1600)
