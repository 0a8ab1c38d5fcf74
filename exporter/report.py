"""Reports of a one-shot run: a rich table for people, JSON and JUnit XML for pipelines."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from exporter import __version__
from exporter.config import Job, Sweep
from exporter.result import CheckResult
from exporter.sweep import SweepTally


@dataclass(frozen=True, slots=True)
class FlowReport:
    """One (flow, target) pair with its result, as reports show it."""

    job: Job
    source: str
    result: CheckResult

    @property
    def destination(self) -> str:
        """The destination role, or `custom` for extra flows."""
        flow = self.job.catalogue_flow
        return flow.destination.value if flow is not None else "custom"


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
            }
            for report in reports
        ],
        "networks": [network_json(network, details=details) for network in networks],
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
                f"{report.source} -> {report.destination}: {result.detail}",
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
                f"{network.source} -> {sweep.network.label}: no host passed",
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
    console.print(
        f"[green]{summary}[/green]" if not failed else f"[red]{summary}, {failed} failing[/red]"
    )
