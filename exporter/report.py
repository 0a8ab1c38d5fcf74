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
from exporter.config import Job
from exporter.result import CheckResult


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


def to_json(reports: Sequence[FlowReport]) -> str:
    """A JSON document: summary plus one object per pair."""
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
    }
    return json.dumps(document, indent=2)


def to_junit(reports: Sequence[FlowReport]) -> str:
    """JUnit XML: one test case per pair, failures carry the result class and detail."""
    failures = sum(not report.result.ok for report in reports)
    total_time = sum(report.result.duration_seconds for report in reports)
    suites = ET.Element("testsuites", name="certero-flow-exporter")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="certero-flows",
        tests=str(len(reports)),
        failures=str(failures),
        errors="0",
        time=f"{total_time:.6f}",
    )
    for report in reports:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{report.source}.{report.job.flow_id}",
            name=f"{report.job.flow_id} {report.job.target} ({report.job.check})",
            time=f"{report.result.duration_seconds:.6f}",
        )
        if not report.result.ok:
            failure = ET.SubElement(
                case, "failure", type=report.result.result.value, message=report.result.detail
            )
            failure.text = f"{report.source} -> {report.destination}: {report.result.detail}"
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


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


def print_table(reports: Sequence[FlowReport], console: Console) -> None:
    """Print the table and a one-line summary."""
    console.print(results_table(reports))
    failed = sum(not report.result.ok for report in reports)
    summary = f"{len(reports) - failed}/{len(reports)} flows ok"
    console.print(
        f"[green]{summary}[/green]" if not failed else f"[red]{summary}, {failed} failing[/red]"
    )
