"""Reports of a one-shot run: a rich table for people, JSON and JUnit XML for pipelines, and the
readiness report (Markdown, self-contained HTML, CSV of the firewall rules) for a change ticket.

Every failing pair and network carries its remediation (`exporter.remediation`); the readiness
formats lead with the rules to request from the network team, merged across targets so that one
opening is one line with the hosts it covers.
"""

from __future__ import annotations

import csv
import html
import io
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from exporter import __version__
from exporter.catalogue import VantagePoint
from exporter.config import Job, Sweep
from exporter.remediation import FirewallRule, FlowFacts, Remediation, merge_rules, remediate
from exporter.result import CheckResult, Result
from exporter.sweep import SweepTally


@dataclass(frozen=True, slots=True)
class FlowReport:
    """One (flow, target) pair with its result, as reports show it."""

    job: Job
    source: str
    result: CheckResult
    description: str = ""  # an extra flow's own description, its "reason" in remediations

    @property
    def destination(self) -> str:
        """The destination role, or `custom` for extra flows."""
        flow = self.job.catalogue_flow
        return flow.destination.value if flow is not None else "custom"

    @property
    def remediation(self) -> Remediation:
        """What to change for this pair (an empty summary when it is ok)."""
        job = self.job
        facts = FlowFacts.of(
            job.flow_id,
            job.check,
            job.catalogue_flow,
            VantagePoint(self.source),
            transport=job.spec.transport,
            description=self.description,
        )
        return remediate(facts, job.target.host, job.target.port, self.result)


@dataclass(frozen=True, slots=True)
class NetworkReport:
    """One swept network with its counts, as reports show it.

    A network passes when at least one of its hosts passed: endpoint networks always hold
    hosts that are switched off or run another system, and what a readiness run proves is
    that the flow is open into the network. The counts say how far.
    """

    sweep: Sweep
    source: str
    tally: SweepTally

    @property
    def ok(self) -> bool:
        """True when at least one host of the network passed."""
        return self.tally.ok > 0

    @property
    def remediation(self) -> Remediation:
        """What to change so that the flow reaches the network; its rule covers the label.

        The network is judged by its worst kept host that answered anything (its result has
        the phases that tell a dropped SYN from a silent service), else by its most common
        failing class.
        """
        sweep = self.sweep
        facts = FlowFacts.of(
            sweep.flow_id,
            sweep.check,
            sweep.template.catalogue_flow,
            VantagePoint(self.source),
            transport=sweep.template.spec.transport,
            description=sweep.template.description,
        )
        label = sweep.network.label
        if self.ok:
            return Remediation("")
        worst = self.tally.worst
        if worst:
            result = worst[0].result
        else:
            failing = [(n, r) for r, n in self.tally.counts.items() if n and r is not Result.OK]
            cls = max(failing, key=lambda item: item[0])[1] if failing else Result.TIMEOUT
            result = CheckResult(cls, self.tally.duration_seconds, self.summary)
        return remediate(facts, label, sweep.port, result)

    @property
    def summary(self) -> str:
        """`254 hosts: 200 ok, 40 refused; 10 no host, 4 filtered`."""
        tally = self.tally
        counts = ", ".join(
            f"{count} {result.value}" for result, count in tally.counts.items() if count
        )
        return (
            f"{tally.probed} hosts: {counts or 'none probed'}; "
            f"{tally.absent} no host, {tally.filtered} filtered"
        )


def network_json(report: NetworkReport, *, details: bool) -> dict[str, object]:
    """One network's object in the JSON report; the worst hosts only with `details`."""
    tally = report.tally
    document: dict[str, object] = {
        "flow": report.sweep.flow_id,
        "source": report.source,
        "network": report.sweep.network.label,
        "check": report.sweep.check,
        "shard": str(report.sweep.shard) if report.sweep.shard is not None else None,
        "ok": report.ok,
        "hosts_probed": tally.probed,
        "hosts": {result.value: count for result, count in tally.counts.items()},
        "hosts_absent": tally.absent,
        "hosts_filtered": tally.filtered,
        "duration_seconds": round(tally.duration_seconds, 6),
        "remediation": None if report.ok else report.remediation.as_dict(),
    }
    if details:
        document["worst_hosts"] = [
            {
                "host": host.host,
                "result": host.result.result.value,
                "present": host.present,
                "detail": host.result.detail,
            }
            for host in tally.worst
        ]
    return document


def to_json(
    reports: Sequence[FlowReport],
    networks: Sequence[NetworkReport] = (),
    *,
    details: bool = False,
) -> str:
    """A JSON document: summary plus one object per pair and one per swept network."""
    document = {
        "exporter_version": __version__,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "summary": {
            "total": len(reports),
            "ok": sum(report.result.ok for report in reports),
            "failed": sum(not report.result.ok for report in reports),
        },
        "flows": [
            {
                "flow": report.job.flow_id,
                "source": report.source,
                "destination": report.destination,
                "target": str(report.job.target),
                "check": report.job.check,
                "result": report.result.result.value,
                "ok": report.result.ok,
                "duration_seconds": round(report.result.duration_seconds, 6),
                "phases": {p.value: round(s, 6) for p, s in report.result.phases.items()},
                "address": report.result.address,
                "peer": (
                    {"product": report.result.peer.product, "version": report.result.peer.version}
                    if report.result.peer
                    else None
                ),
                "tls_cert_expiry_seconds": report.result.tls_cert_expiry_seconds,
                "tls_chain_expiry_seconds": report.result.tls_chain_expiry_seconds,
                "detail": report.result.detail,
                "reason": report.job.catalogue_flow.reason if report.job.catalogue_flow else "",
                "remediation": None if report.result.ok else report.remediation.as_dict(),
            }
            for report in reports
        ],
        "networks": [network_json(network, details=details) for network in networks],
        "rules": [rule.as_dict() for rule in readiness_rules(reports, networks)],
    }
    return json.dumps(document, indent=2)


def to_junit(reports: Sequence[FlowReport], networks: Sequence[NetworkReport] = ()) -> str:
    """JUnit XML: one test case per pair and per network; failures carry class and detail."""
    failures = sum(not report.result.ok for report in reports)
    failures += sum(not network.ok for network in networks)
    total_time = sum(report.result.duration_seconds for report in reports)
    suites = ET.Element("testsuites", name="certero-flow-exporter")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="certero-flows",
        tests=str(len(reports) + len(networks)),
        failures=str(failures),
        errors="0",
        time=f"{total_time:.6f}",
    )
    for report in reports:
        result = report.result
        _test_case(
            suite,
            f"{report.source}.{report.job.flow_id}",
            f"{report.job.flow_id} {report.job.target} ({report.job.check})",
            result.duration_seconds,
            None
            if result.ok
            else (
                result.result.value,
                result.detail,
                f"{report.source} -> {report.destination}: {result.detail}\n"
                f"{report.remediation.summary}",
            ),
        )
    for network in networks:
        sweep = network.sweep
        _test_case(
            suite,
            f"{network.source}.{sweep.flow_id}",
            f"{sweep.flow_id} {sweep.network.label} ({sweep.check})",
            network.tally.duration_seconds,
            None
            if network.ok
            else (
                "network",
                network.summary,
                f"{network.source} -> {sweep.network.label}: no host passed\n"
                f"{network.remediation.summary}",
            ),
        )
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _test_case(
    suite: ET.Element,
    classname: str,
    name: str,
    seconds: float,
    failure: tuple[str, str, str] | None,
) -> None:
    """One JUnit test case; `failure` is (type, message, text) when it failed."""
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time=f"{seconds:.6f}")
    if failure is not None:
        kind, message, text = failure
        ET.SubElement(case, "failure", type=kind, message=message).text = text


def results_table(reports: Sequence[FlowReport]) -> Table:
    """The human table: failing pairs first."""
    sources = sorted({report.source for report in reports})
    table = Table(title=f"Certero flows from {', '.join(sources)}", show_lines=False)
    for column in ("Flow", "Target", "Check", "Result"):
        table.add_column(column, no_wrap=True)
    for column in ("Destination", "Latency", "Detail"):
        table.add_column(column, overflow="fold")
    for report in sorted(reports, key=lambda r: (r.result.ok, r.job.flow_id, str(r.job.target))):
        style = "green" if report.result.ok else "red"
        table.add_row(
            report.job.flow_id,
            str(report.job.target),
            report.job.check,
            f"[{style}]{report.result.result.value}[/{style}]",
            report.destination,
            f"{report.result.duration_seconds * 1000:.1f} ms",
            report.result.detail,
        )
    return table


def networks_table(networks: Sequence[NetworkReport], *, details: bool) -> Table:
    """Swept networks, one row each; with `details`, the worst hosts under each."""
    table = Table(title="Swept networks", show_lines=details)
    for column in ("Flow", "Network", "Check", "Hosts", "OK"):
        table.add_column(column, no_wrap=True)
    table.add_column("Counts", overflow="fold")
    for network in networks:
        tally = network.tally
        counts = network.summary
        if details and tally.worst:
            counts += "".join(
                f"\n  {host.host}: {host.result.result.value}"
                f"{'' if host.present else ' (no host)'} {host.result.detail}"
                for host in tally.worst
            )
        style = "green" if network.ok else "red"
        table.add_row(
            network.sweep.flow_id,
            network.sweep.network.label,
            network.sweep.check,
            str(tally.probed),
            f"[{style}]{tally.ok}[/{style}]",
            counts,
        )
    return table


def print_table(
    reports: Sequence[FlowReport],
    console: Console,
    networks: Sequence[NetworkReport] = (),
    *,
    details: bool = False,
) -> None:
    """Print the tables and a one-line summary."""
    if reports:
        console.print(results_table(reports))
    if networks:
        console.print(networks_table(networks, details=details))
    failed = sum(not report.result.ok for report in reports)
    failed += sum(not network.ok for network in networks)
    total = len(reports) + len(networks)
    summary = f"{total - failed}/{total} flows ok"
    if networks:
        summary += f" ({len(networks)} swept networks, each ok when a host passed)"
    fixes = [r.remediation.summary for r in reports if not r.result.ok]
    fixes += [n.remediation.summary for n in networks if not n.ok]
    if fixes:
        console.print("What to change:", markup=False)
        for fix in fixes:
            console.print(f"  - {fix}", markup=False, highlight=False)
    rules = readiness_rules(reports, networks)
    if rules:
        console.print("Rules to request from the network team:", markup=False)
        for rule in rules:
            console.print(f"  - {rule_line(rule)}", markup=False, highlight=False)
    console.print(
        f"[green]{summary}[/green]" if not failed else f"[red]{summary}, {failed} failing[/red]"
    )


def readiness_rules(
    reports: Sequence[FlowReport], networks: Sequence[NetworkReport] = ()
) -> list[FirewallRule]:
    """The firewall rules the failing pairs and networks need, one per opening."""
    remediations = [r.remediation for r in reports if not r.result.ok]
    remediations += [n.remediation for n in networks if not n.ok]
    return merge_rules(remediations)


def rule_line(rule: FirewallRule) -> str:
    """`allow TCP 1433 from application_server to database_server: db1, db2 (flows: ...)`."""
    return (
        f"allow {rule.service} from {rule.source} to {rule.destination}: "
        f"{', '.join(rule.hosts)} (flows: {', '.join(rule.flows)}; reason: {rule.reason})"
    )


CSV_COLUMNS = ("protocol", "port", "source_role", "destination_role", "hosts", "flows", "reason")


def to_csv(reports: Sequence[FlowReport], networks: Sequence[NetworkReport] = ()) -> str:
    """The rule list for a firewall team's spreadsheet: one row per rule, hosts space-separated.

    ICMP rules have an empty port (echo request and reply). RFC 4180 quoting, CRLF line ends.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for rule in readiness_rules(reports, networks):
        writer.writerow(
            (
                rule.protocol.value,
                "" if rule.port is None else rule.port,
                rule.source,
                rule.destination,
                " ".join(rule.hosts),
                " ".join(rule.flows),
                rule.reason,
            )
        )
    return buffer.getvalue()


def _md(text: str) -> str:
    """A Markdown table cell: pipes escaped, line breaks flattened."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _counts(reports: Sequence[FlowReport], networks: Sequence[NetworkReport]) -> tuple[int, int]:
    """(total, failing) over pairs and networks."""
    failed = sum(not r.result.ok for r in reports) + sum(not n.ok for n in networks)
    return len(reports) + len(networks), failed


def to_markdown(reports: Sequence[FlowReport], networks: Sequence[NetworkReport] = ()) -> str:
    """The readiness report in Markdown, for a change ticket: rules first, then every flow."""
    total, failed = _counts(reports, networks)
    sources = ", ".join(sorted({r.source for r in reports} | {n.source for n in networks}))
    lines = [
        f"# Certero flow readiness from {sources}",
        "",
        f"{total - failed}/{total} flows ok, {failed} failing. Generated "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by certero-flow-exporter "
        f"{__version__}.",
        "",
        "## Rules to request from the network team",
        "",
    ]
    rules = readiness_rules(reports, networks)
    if rules:
        lines += [
            "| Protocol | Port | From | To | Hosts | Flows | Reason |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {rule.protocol.value.upper()} | {'echo' if rule.port is None else rule.port} "
            f"| {rule.source} | {rule.destination} | {_md(', '.join(rule.hosts))} "
            f"| {_md(', '.join(rule.flows))} | {_md(rule.reason)} |"
            for rule in rules
        ]
    else:
        lines.append("None: no failing flow needs a firewall change.")
    fixes = [(str(r.job.target), r.remediation) for r in reports if not r.result.ok]
    fixes += [(n.sweep.network.label, n.remediation) for n in networks if not n.ok]
    lines += ["", "## What to change", ""]
    lines += [f"- **{_md(name)}**: {_md(fix.summary)}" for name, fix in fixes] or ["Nothing."]
    lines += [
        "",
        "## Flows",
        "",
        "| Flow | Target | Check | Result | Latency | Detail |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for report in sorted(reports, key=lambda r: (r.result.ok, r.job.flow_id, str(r.job.target))):
        result = report.result
        lines.append(
            f"| {report.job.flow_id} | {_md(str(report.job.target))} | {report.job.check} "
            f"| {result.result.value} | {result.duration_seconds * 1000:.1f} ms "
            f"| {_md(result.detail)} |"
        )
    if networks:
        lines += [
            "",
            "## Swept networks",
            "",
            "| Flow | Network | Check | OK hosts | Counts |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {n.sweep.flow_id} | {_md(n.sweep.network.label)} | {n.sweep.check} "
            f"| {n.tally.ok} | {_md(n.summary)} |"
            for n in networks
        ]
    return "\n".join(lines) + "\n"


_HTML_STYLE = """
body{font-family:system-ui,sans-serif;margin:1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;width:100%}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f0f0}.ok{color:#176b1c}.fail{color:#a11;font-weight:bold}
td{overflow-wrap:anywhere}
"""


def to_html(reports: Sequence[FlowReport], networks: Sequence[NetworkReport] = ()) -> str:
    """The readiness report as one self-contained HTML page: inline style, no external URL."""
    total, failed = _counts(reports, networks)
    sources = ", ".join(sorted({r.source for r in reports} | {n.source for n in networks}))
    e = html.escape

    def row(cells: Sequence[str], css: str = "") -> str:
        attr = f' class="{css}"' if css else ""
        return f"<tr{attr}>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>"

    def head(cells: Sequence[str]) -> str:
        return "<tr>" + "".join(f"<th>{e(c)}</th>" for c in cells) + "</tr>"

    rules = readiness_rules(reports, networks)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Certero flow readiness from {e(sources)}</title>",
        f"<style>{_HTML_STYLE}</style></head><body>",
        f"<h1>Certero flow readiness from {e(sources)}</h1>",
        f"<p>{total - failed}/{total} flows ok, {failed} failing. Generated "
        f"{e(time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))} by certero-flow-exporter "
        f"{e(__version__)}.</p>",
        "<h2>Rules to request from the network team</h2>",
    ]
    if rules:
        parts.append('<table id="rules">')
        parts.append(head(("Protocol", "Port", "From", "To", "Hosts", "Flows", "Reason")))
        parts += [
            row(
                (
                    rule.protocol.value.upper(),
                    "echo" if rule.port is None else str(rule.port),
                    rule.source,
                    rule.destination,
                    ", ".join(rule.hosts),
                    ", ".join(rule.flows),
                    rule.reason,
                )
            )
            for rule in rules
        ]
        parts.append("</table>")
    else:
        parts.append("<p>None: no failing flow needs a firewall change.</p>")
    parts.append('<h2>Flows</h2><table id="flows">')
    parts.append(head(("Flow", "Target", "Check", "Result", "Latency", "Detail", "What to change")))
    for report in sorted(reports, key=lambda r: (r.result.ok, r.job.flow_id, str(r.job.target))):
        result = report.result
        parts.append(
            row(
                (
                    report.job.flow_id,
                    str(report.job.target),
                    report.job.check,
                    result.result.value,
                    f"{result.duration_seconds * 1000:.1f} ms",
                    result.detail,
                    report.remediation.summary,
                ),
                "ok" if result.ok else "fail",
            )
        )
    parts.append("</table>")
    if networks:
        parts.append('<h2>Swept networks</h2><table id="networks">')
        parts.append(head(("Flow", "Network", "Check", "OK hosts", "Counts", "What to change")))
        parts += [
            row(
                (
                    n.sweep.flow_id,
                    n.sweep.network.label,
                    n.sweep.check,
                    str(n.tally.ok),
                    n.summary,
                    n.remediation.summary,
                ),
                "ok" if n.ok else "fail",
            )
            for n in networks
        ]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
