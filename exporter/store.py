"""Latest result of every (flow, target) pair, with its pre-rendered metric lines and its
recent history for the status page (`exporter.history`, a fixed size per pair).

Only the scheduler (or a one-shot run) writes; `/metrics`, the landing page and the CLI read.
Everything runs on one event loop, so no locks are needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from exporter.collector import (
    NETWORK_FAMILIES,
    FlowFacts,
    History,
    iter_families,
    render_flow_latency,
    render_flows,
    render_network,
    render_pair,
)
from exporter.config import Config, FlowTemplate, Job, Sweep
from exporter.history import PairHistory
from exporter.result import CheckResult, Result
from exporter.sweep import SweepTally


@dataclass(slots=True)
class Entry:
    """The cached state of one pair."""

    job: Job
    labels: tuple[tuple[str, str], ...]
    result: CheckResult
    finished_at: float
    history: History | None  # only for flows with `histograms: true`
    chunks: tuple[bytes, ...]
    recent: PairHistory  # the status page's strip, sparkline and uptime


@dataclass(slots=True)
class SweepEntry:
    """The last completed sweep of one network, with its rendered lines.

    `host_chunks` are the per-host pair lines of a `per_host` flow (no histogram: a sweep's
    hosts are many, and the network's own series carry its duration).
    """

    sweep: Sweep
    labels: tuple[tuple[str, str], ...]
    tally: SweepTally
    chunks: tuple[bytes, ...]
    host_chunks: tuple[tuple[bytes, ...], ...]


class ResultStore:
    """Latest results by job key; renders a pair's metric lines when its result changes."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._entries: dict[tuple[str, str], Entry] = {}
        self._sweeps: dict[tuple[str, str], SweepEntry] = {}
        # Per flow: its latency histogram across targets, keyed by flow id and check.
        self._latency: dict[tuple[str, str], History] = {}
        self._flows = b""  # certero_flow_info and certero_flow_interval_seconds of the config

    def describe_flows(self, config: Config) -> None:
        """Render the config's per-flow series; drop latency histograms of flows gone."""
        self.source = config.source.value
        facts = [_flow_facts(template, self.source) for template in config.templates.values()]
        self._flows = render_flows(facts, self.source)
        kept = {(fact.flow, fact.check) for fact in facts}
        for key in list(self._latency):
            if key not in kept:
                del self._latency[key]

    def _flow_latency(self, flow_id: str, check: str) -> History:
        """The flow's latency histogram, made on its first check."""
        latency = self._latency.get((flow_id, check))
        if latency is None:
            latency = self._latency[(flow_id, check)] = History.empty()
        return latency

    def record_sweep(self, sweep: Sweep, tally: SweepTally) -> None:
        """Keep a completed sweep in place of the previous one of its network."""
        self._flow_latency(sweep.flow_id, sweep.check).merge(tally.durations)
        labels = self.network_labels(sweep)
        self._sweeps[sweep.key] = SweepEntry(
            sweep, labels, tally, *self._render_sweep(sweep, labels, tally)
        )

    def _render_sweep(
        self, sweep: Sweep, labels: tuple[tuple[str, str], ...], tally: SweepTally
    ) -> tuple[tuple[bytes, ...], tuple[tuple[bytes, ...], ...]]:
        chunks = render_network(
            labels,
            tally.counts,
            probed=tally.probed,
            absent=tally.absent,
            filtered=tally.filtered,
            duration_seconds=tally.duration_seconds,
            finished_at=tally.finished_at,
        )
        hosts = tuple(
            render_pair(self.labels(sweep.job(host)), result, tally.finished_at, None)
            for host, result in sorted(tally.per_host.items())
        )
        return chunks, hosts

    def network_labels(self, sweep: Sweep) -> tuple[tuple[str, str], ...]:
        """The identifying labels of a swept network's series; `shard` only when sharded."""
        labels = (
            ("flow", sweep.flow_id),
            ("source", self.source),
            ("network", sweep.network.label),
            ("check", sweep.check),
        )
        return labels if sweep.shard is None else (*labels, ("shard", str(sweep.shard)))

    def retain_sweeps(self, wanted: Mapping[tuple[str, str], Sweep], source: str) -> None:
        """After a reload: drop networks no longer swept, re-render the rest if labels moved."""
        relabel = source != self.source
        self.source = source
        for key in list(self._sweeps):
            sweep = wanted.get(key)
            entry = self._sweeps[key]
            if sweep is None or sweep.check != entry.sweep.check:
                del self._sweeps[key]
                continue
            entry.sweep = sweep
            labels = self.network_labels(sweep)
            if relabel or labels != entry.labels:
                entry.labels = labels
                entry.chunks, entry.host_chunks = self._render_sweep(sweep, labels, entry.tally)

    def sweep_entries(self) -> list[SweepEntry]:
        """The last completed sweep of every network."""
        return list(self._sweeps.values())

    def record(self, job: Job, result: CheckResult, finished_at: float) -> Result | None:
        """Store a result; return the previous result class (None for the first one)."""
        entry = self._entries.get(job.key)
        history: History | None = None  # kept across runs, for opted-in flows only
        if job.histograms:
            history = entry.history if entry is not None and entry.history else History.empty()
            history.observe(result.duration_seconds)
        self._flow_latency(job.flow_id, job.check).observe(result.duration_seconds)
        labels = entry.labels if entry is not None and entry.job is job else self.labels(job)
        chunks = render_pair(labels, result, finished_at, history)
        recent = entry.recent if entry is not None else PairHistory()
        recent.record(result, finished_at)
        self._entries[job.key] = Entry(job, labels, result, finished_at, history, chunks, recent)
        return entry.result.result if entry is not None else None

    def labels(self, job: Job) -> tuple[tuple[str, str], ...]:
        """The identifying labels of a pair's series."""
        return (
            ("flow", job.flow_id),
            ("source", self.source),
            ("target", str(job.target)),
            ("check", job.check),
        )

    def retain(self, jobs: Iterable[Job], source: str) -> None:
        """After a reload: drop pairs no longer configured, re-label the rest."""
        wanted = {job.key: job for job in jobs}
        for _ in self.retain_in_steps(wanted, source, step=len(self._entries) + 1):
            pass

    def retain_in_steps(
        self, wanted: Mapping[tuple[str, str], Job], source: str, step: int
    ) -> Iterator[None]:
        """`retain` given the jobs by key, pausing after every `step` entries so an event loop
        can serve between.

        Each pause leaves a consistent store: an entry is either still the old pair or already
        the new one, and a scrape in between sees the old pairs not yet dropped.
        """
        relabel = source != self.source
        self.source = source
        for index, key in enumerate(list(self._entries)):
            if index % step == step - 1:
                yield
            job = wanted.get(key)
            entry = self._entries[key]  # only a retain deletes, and reloads run one at a time
            if job is None or job.check != entry.job.check:
                del self._entries[key]
            elif relabel:
                entry.job = job
                entry.labels = self.labels(job)
                entry.chunks = render_pair(
                    entry.labels, entry.result, entry.finished_at, entry.history
                )
            else:  # same key and check: same labels, so the rendered lines stand
                entry.job = job

    def entries(self) -> Iterator[Entry]:
        """All cached entries, in insertion order."""
        return iter(list(self._entries.values()))

    def get(self, key: tuple[str, str]) -> Entry | None:
        """One entry by job key."""
        return self._entries.get(key)

    def __len__(self) -> int:
        return len(self._entries)

    def render_parts(self) -> Iterator[bytes]:
        """The per-pair then per-network families for a scrape: joins of kept bytes."""
        pairs = [entry.chunks for entry in self._entries.values()]
        for sweep in self._sweeps.values():
            pairs.extend(sweep.host_chunks)
        yield from iter_families(pairs)
        if self._sweeps:
            networks = [sweep.chunks for sweep in self._sweeps.values()]
            yield from iter_families(networks, NETWORK_FAMILIES)
        yield self._flows
        yield render_flow_latency(
            (
                (("flow", flow_id), ("source", self.source), ("check", check)),
                history,
            )
            for (flow_id, check), history in self._latency.items()
        )

    def render(self) -> bytes:
        """The whole per-pair text at once (for tests and one-shot use)."""
        return b"".join(self.render_parts())


def _flow_facts(template: FlowTemplate, source: str) -> FlowFacts:
    """A flow's row for `certero_flow_info`: the catalogue's, or an extra flow's own."""
    flow = template.catalogue_flow
    if flow is not None:
        return FlowFacts(
            flow=template.flow_id,
            check=template.check,
            protocol=flow.transport.value,
            port=str(template.port) if template.port is not None else flow.port_text,
            source=flow.source.value,
            destination=flow.destination.value,
            reason=flow.reason,
            severity=template.severity,
            optional=flow.optional,
            interval_seconds=template.interval,
        )
    written = {endpoint.port for endpoint in template.endpoints if endpoint.port is not None}
    port = template.port if template.port is not None else (min(written) if written else None)
    return FlowFacts(
        flow=template.flow_id,
        check=template.check,
        protocol=template.spec.transport,
        # the flow's port, else the one its targets write (the lowest, when they differ)
        port=str(port) if port is not None else "-",
        source=source,
        destination="custom",
        reason=template.description,
        severity=template.severity,
        optional=False,
        interval_seconds=template.interval,
    )
