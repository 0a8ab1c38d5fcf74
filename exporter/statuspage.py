"""The status page at `/`: the port table as seen from this vantage point, with history.

For the operator after installation: which flows of Certero's port table are open now (the
matrix of source x destination role, coloured by the worst result), every (flow, target) pair
with its class and detail (on hover, and expanded on a tap), and per pair its recent history
from `exporter.history`: the last results as a strip, the uptime over 1 h and 24 h and a
latency sparkline. Swept networks stay one row each, with counts.

Everything is rendered on the server into one self-contained document: inline CSS and inline
SVG, no script, no font, image or stylesheet from elsewhere, so the page works on an isolated
network and on a phone (the tables fold into cards on narrow screens).
"""

from __future__ import annotations

import html
import itertools
import time
from collections.abc import Iterable, Iterator, Sequence

from exporter import __version__
from exporter.catalogue import Role
from exporter.config import Config
from exporter.history import Recent
from exporter.remediation import remediate_pair
from exporter.result import Result
from exporter.store import Entry, ResultStore, SweepEntry

CUSTOM = "custom"  # the destination of extra flows, which the port table does not name
# Worst first: the order a group's colour and a row's sort follow. A flow the exporter could
# not check is not known to be broken, so it ranks after every real failure.
SEVERITY: dict[Result, int] = {
    Result.DNS_ERROR: 0,
    Result.UNREACHABLE: 0,
    Result.TIMEOUT: 0,
    Result.REFUSED: 0,
    Result.TLS_ERROR: 1,
    Result.AUTH_FAILED: 1,
    Result.PROTOCOL_MISMATCH: 1,
    Result.SERVICE_ERROR: 1,
    Result.EXPORTER_ERROR: 2,
    Result.OK: 3,
}
SPARK_WIDTH = 120
MARK_WIDTH = 3  # pixels per result in the strip: RING_SIZE results fit in 180 px
# A page of every pair would grow with the config (10,000 pairs, tens of MB); the worst pairs
# are listed, the matrix counts them all.
LISTED_PAIRS = 1000
ROWS_PER_PART = 100
SPARK_HEIGHT = 24


def explanation(config: Config, entry: Entry) -> str:
    """The line a failing pair shows on hover and when expanded: what went wrong, and what to
    change (the firewall rule to open, or what to check on the service)."""
    remedy = remediate_pair(config, entry.job, entry.result).summary
    return f"{entry.result.detail} — {remedy}"


def render_status_page(config: Config, store: ResultStore, now: float | None = None) -> str:
    """The whole page at once (for tests and one-shot use)."""
    return "".join(status_page_parts(config, store, now))


def status_page_parts(
    config: Config, store: ResultStore, now: float | None = None
) -> Iterator[str]:
    """The page in parts of at most ROWS_PER_PART pair rows, so that a server can yield to
    its event loop between them; at most LISTED_PAIRS pairs are listed, worst first."""
    now = time.time() if now is None else now
    entries = list(store.entries())
    sweeps = store.sweep_entries()
    pending = len(config.jobs) - len(store) + len(config.sweeps) - len(sweeps)
    failing = sum(1 for entry in entries if not entry.result.ok)
    source = config.source.value
    listed = sorted(entries, key=_rank)[:LISTED_PAIRS]
    unlisted = len(entries) - len(listed)
    yield _HEAD.format(
        version=html.escape(__version__),
        source=html.escape(source),
        origin=html.escape(config.origin),
        pairs=len(config.jobs),
        networks=len(config.sweeps),
        pending=pending,
        failing=failing,
        checked=len(entries),
        matrix=_matrix(source, _by_destination(entries), sweeps),
        listed=(
            f"<p>The {len(listed)} worst of {len(entries)} checked pairs are listed; "
            f"{unlisted} more are counted in the matrix above.</p>"
            if unlisted
            else ""
        ),
    )
    rows: list[str] = []
    for role, group in _by_destination(listed):
        rows.append(_heading(source, role))
        for entry in group:
            rows.append(_pair_row(config, source, role, entry, now))
            if len(rows) >= ROWS_PER_PART:
                yield "".join(rows)
                rows = []
    if not listed:
        rows.append("<tr><td colspan='11'>no pair checked yet</td></tr>")
    yield "".join(rows)
    skipped = "".join(
        f"<li>{html.escape(flow_id)}: {html.escape(reason)}</li>"
        for flow_id, reason in sorted(config.skipped_flows.items())
    )
    yield _TAIL.format(
        network_rows="".join(_network_row(entry, now) for entry in sweeps)
        or "<tr><td colspan='8'>no sweep completed yet</td></tr>",
        skipped=skipped or "<li>none</li>",
    )


def _rank(entry: Entry) -> tuple[int, str, str]:
    """Worst class first, then by flow and target."""
    return SEVERITY[entry.result.result], entry.job.flow_id, str(entry.job.target)


def _destination(entry: Entry) -> str:
    flow = entry.job.catalogue_flow
    return flow.destination.value if flow is not None else CUSTOM


def _by_destination(entries: Iterable[Entry]) -> list[tuple[str, list[Entry]]]:
    """Pairs grouped by destination role in the port table's order (custom last), worst first."""
    order = {role.value: index for index, role in enumerate(Role)}
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(_destination(entry), []).append(entry)
    for group in groups.values():
        group.sort(key=lambda e: (SEVERITY[e.result.result], e.job.flow_id, str(e.job.target)))
    return sorted(groups.items(), key=lambda item: order.get(item[0], len(order)))


def _worst(results: Iterable[Result]) -> Result:
    return min(results, key=lambda result: SEVERITY[result], default=Result.OK)


def _matrix(
    source: str, groups: Sequence[tuple[str, list[Entry]]], sweeps: Sequence[SweepEntry]
) -> str:
    """Source x destination role: one cell per role, coloured by its worst pair."""
    if not groups and not sweeps:
        return "<p>No result yet.</p>"
    cells = []
    for role, group in groups:
        worst = _worst(entry.result.result for entry in group)
        ok = sum(1 for entry in group if entry.result.ok)
        cells.append(
            f"<td class='r-{worst.value}' data-role='{html.escape(role)}'>"
            f"<a href='#to-{html.escape(role)}'>{html.escape(role)}</a><br>"
            f"{ok}/{len(group)} ok{'' if worst is Result.OK else f', {worst.value}'}</td>"
        )
    for sweep in sweeps:
        tally = sweep.tally
        colour = "ok" if tally.ok == tally.probed else "refused"
        cells.append(
            f"<td class='r-{colour}' data-role='network'><a href='#networks'>"
            f"{html.escape(sweep.sweep.network.label)}</a><br>{tally.ok}/{tally.probed} ok</td>"
        )
    return (
        "<div class='scroll'><table class='matrix'><tr><th>From \\ to</th>"
        f"<th colspan='{len(cells)}'>destination role</th></tr>"
        f"<tr><th>{html.escape(source)}</th>{''.join(cells)}</tr></table></div>"
    )


def _heading(source: str, role: str) -> str:
    return (
        f"<tr class='role' id='to-{html.escape(role)}'>"
        f"<th colspan='11'>{html.escape(source)} → {html.escape(role)}</th></tr>"
    )


def _pair_row(config: Config, source: str, role: str, entry: Entry, now: float) -> str:
    """One pair: the port table's columns, the state now, and its recent history."""
    job = entry.job
    result = entry.result
    flow = job.catalogue_flow
    protocol = flow.transport.value if flow is not None else job.spec.transport
    port = flow.port_text if flow is not None else "-"
    if job.target.port is not None:
        port = str(job.target.port)
    reason = flow.reason if flow is not None else ""
    recent = list(entry.recent.recent())
    if result.ok:
        state = f"<span class='badge'>{result.result.value}</span>"
    else:
        line = html.escape(explanation(config, entry))
        state = (
            f"<details title='{line}'><summary class='badge'>{result.result.value}</summary>"
            f"<p class='why'>{line}</p></details>"
        )
    cells = (
        ("Flow", f"<span title='{html.escape(reason)}'>{html.escape(job.flow_id)}</span>"),
        ("From → to", f"{html.escape(source)} → {html.escape(role)}"),
        ("Port", f"{html.escape(protocol)} {html.escape(port)}"),
        ("Target", html.escape(str(job.target))),
        ("Check", html.escape(job.check)),
        ("Result", state),
        ("Latency", f"{result.duration_seconds * 1000:.1f} ms"),
        ("Checked", f"{now - entry.finished_at:.0f} s ago"),
        ("History", _strip(recent)),
        (
            "Uptime 1 h / 24 h",
            f"{_percent(entry.recent.uptime_1h(now))} / {_percent(entry.recent.uptime_24h(now))}",
        ),
        ("Latency trend", _sparkline(recent)),
    )
    tds = "".join(f"<td data-label='{label}'>{content}</td>" for label, content in cells)
    return (
        f"<tr class='pair r-{result.result.value}' data-flow='{html.escape(job.flow_id)}' "
        f"data-target='{html.escape(str(job.target))}' data-result='{result.result.value}'>"
        f"{tds}</tr>"
    )


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f} %"


def _strip(recent: Sequence[Recent]) -> str:
    """The last results, oldest left: one coloured mark per run of the same class, as wide as
    the run is long (its count, class and times on hover), so a steady flow costs one mark."""
    marks = []
    for result, run in itertools.groupby(recent, key=lambda item: item.result):
        items = list(run)
        first = time.strftime("%H:%M:%S", time.gmtime(items[0].finished_at))
        last = time.strftime("%H:%M:%S", time.gmtime(items[-1].finished_at))
        marks.append(
            f"<i class='r-{result.value}' data-result='{result.value}' "
            f"data-count='{len(items)}' style='width:{len(items) * MARK_WIDTH}px' "
            f"title='{len(items)} x {result.value}, {first}-{last} UTC'></i>"
        )
    return f"<span class='strip'>{''.join(marks)}</span>"


def _sparkline(recent: Sequence[Recent]) -> str:
    """Total latency of the last results as an inline SVG polyline, scaled to its maximum."""
    if len(recent) < 2:
        return ""
    highest = max(item.latency_seconds for item in recent) or 1.0
    step = SPARK_WIDTH / (len(recent) - 1)
    scale = (SPARK_HEIGHT - 2) / highest
    points = " ".join(
        f"{index * step:.1f},{SPARK_HEIGHT - 1 - item.latency_seconds * scale:.1f}"
        for index, item in enumerate(recent)
    )
    return (
        f"<svg class='spark' width='{SPARK_WIDTH}' height='{SPARK_HEIGHT}' "
        f"viewBox='0 0 {SPARK_WIDTH} {SPARK_HEIGHT}' role='img' "
        f"aria-label='latency, highest {highest * 1000:.1f} ms'>"
        f"<title>highest {highest * 1000:.1f} ms</title>"
        f"<polyline fill='none' stroke='#1565c0' stroke-width='1.5' points='{points}'/></svg>"
    )


def _network_row(entry: SweepEntry, now: float) -> str:
    """One swept network as one row; its worst hosts folded under the failing counts."""
    tally = entry.tally
    failing = ", ".join(
        f"{count} {result.value}"
        for result, count in tally.counts.items()
        if count and result is not Result.OK
    )
    worst = "".join(
        f"<li>{html.escape(host.host)}: {html.escape(host.result.result.value)} "
        f"{html.escape(host.result.detail)}{'' if host.present else ' (no host)'}</li>"
        for host in tally.worst
    )
    details = f"<details><summary>{html.escape(failing)}</summary><ul>{worst}</ul></details>"
    return (
        "<tr class='{}'><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td>{} / {}</td><td>{:.1f} s, {:.0f} s ago</td></tr>".format(
            "r-ok" if tally.ok == tally.probed else "r-refused",
            html.escape(entry.sweep.flow_id),
            html.escape(entry.sweep.network.label),
            html.escape(entry.sweep.check),
            tally.probed,
            tally.ok,
            details if failing else "none",
            tally.absent,
            tally.filtered,
            tally.duration_seconds,
            now - tally.finished_at,
        )
    )


_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Certero flow exporter</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1em; color: #212121; }}
p {{ overflow-wrap: anywhere; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }}
.scroll {{ overflow-x: auto; }}
tr.role th {{ background: #eceff1; }}
.r-ok {{ background: #e8f5e9; }}
.r-dns_error, .r-unreachable, .r-timeout, .r-refused {{ background: #ffcdd2; }}
.r-tls_error, .r-auth_failed, .r-protocol_mismatch, .r-service_error {{ background: #ffe0b2; }}
.r-exporter_error {{ background: #e0e0e0; }}
.matrix td {{ text-align: center; min-width: 7em; }}
.badge {{ font-weight: bold; cursor: pointer; }}
.why {{ margin: 0.2em 0; max-width: 40em; }}
.strip {{ display: inline-flex; white-space: nowrap; }}
.strip i {{ display: inline-block; height: 14px; border-right: 1px solid #fff; }}
.strip i.r-ok {{ background: #43a047; }}
.strip i.r-dns_error, .strip i.r-unreachable, .strip i.r-timeout, .strip i.r-refused
  {{ background: #e53935; }}
.strip i.r-tls_error, .strip i.r-auth_failed, .strip i.r-protocol_mismatch,
.strip i.r-service_error {{ background: #fb8c00; }}
.strip i.r-exporter_error {{ background: #9e9e9e; }}
@media (max-width: 760px) {{
  body {{ margin: 0.5em; }}
  table.pairs, table.pairs tbody, table.pairs tr, table.pairs td {{ display: block; }}
  table.pairs tr.head {{ display: none; }}
  table.pairs tr.pair {{ margin: 0.5em 0; border: 1px solid #ccc; }}
  table.pairs td {{ border: none; display: flex; gap: 1em; justify-content: space-between; }}
  table.pairs td::before {{ content: attr(data-label); font-weight: bold; }}
  table.matrix tr {{ display: flex; flex-wrap: wrap; }}
  table.matrix th[colspan] {{ display: none; }}
}}
</style></head><body>
<h1>Certero flow exporter {version}</h1>
<p>Vantage point <b>{source}</b>, config {origin}: {pairs} (flow, target) pairs and
{networks} swept networks, {pending} not checked yet. {failing} of {checked} checked pairs
failing. <a href="/metrics">Metrics</a></p>
<h2>Port table</h2>
{matrix}
{listed}
<table class="pairs"><tr class="head"><th>Flow</th><th>Source → destination</th><th>Port</th>
<th>Target</th><th>Check</th><th>Result</th><th>Latency</th><th>Checked</th><th>History</th>
<th>Uptime 1 h / 24 h</th><th>Latency trend</th></tr>
"""

_TAIL = """</table>
<h2 id="networks">Swept networks</h2>
<div class="scroll"><table><tr><th>Flow</th><th>Network</th><th>Check</th><th>Hosts</th><th>OK</th>
<th>Failing</th><th>No host / filtered</th><th>Sweep</th></tr>
{network_rows}
</table></div>
<h2>Flows not checked from here</h2><ul>{skipped}</ul>
</body></html>
"""
