"""Renders cached check results in the Prometheus text format.

A result changes only when its check finishes, so each (flow, target) pair's lines are rendered
once, then (by `render_pair`) and kept; a scrape joins the kept bytes family by family. This keeps
`/metrics` for 10,000 pairs in milliseconds, where building metric families anew on every scrape
(prometheus_client's collector API) costs about 20 µs per series and blocks the event loop.
The collector reads results only: it never awaits and never does I/O.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from exporter.catalogue import FLOWS, Flow
from exporter.result import CheckResult, Phase, Result

HISTOGRAM_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RENDER_SLICE_PAIRS = 1000  # pairs per yielded part: bounds how long one part blocks the loop


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: name, type and the HELP text users read in Prometheus."""

    name: str
    type: str
    help: str
    cached: bool = True  # served from the scheduler's cache (False: counts since start)

    def header(self, *, from_cache: bool = True) -> bytes:
        """The HELP and TYPE lines; `/metrics` says its values are cached, `/probe` does not."""
        help_text = f"{self.help} {CACHED}" if self.cached and from_cache else self.help
        return f"# HELP {self.name} {help_text}\n# TYPE {self.name} {self.type}\n".encode()


CACHED = "Cached from the last background check (see certero_flow_last_check_timestamp_seconds)."
UP = Family("certero_flow_up", "gauge", "1 if the flow is open and answered by the right service.")
RESULT = Family(
    "certero_flow_result",
    "gauge",
    "Outcome class of the last check: exactly one result is 1.",
)
DURATION = Family("certero_flow_duration_seconds", "gauge", "Duration of the last check.")
PHASE = Family(
    "certero_flow_phase_duration_seconds",
    "gauge",
    "Duration of each phase of the last check.",
)
HISTOGRAM = Family(
    "certero_flow_check_duration_seconds",
    "histogram",
    "Durations of all checks of the pair since the exporter started (flows with histograms: true).",
    cached=False,
)
FLOW_LATENCY = Family(
    "certero_flow_latency_seconds",
    "histogram",
    "Durations of all checks of the flow across its targets (swept hosts included) since the "
    "exporter started.",
    cached=False,
)
FLOW_INFO = Family(
    "certero_flow_info",
    "gauge",
    "Each flow this exporter runs: its port table row, how hard it pages and whether it is "
    "optional; join on (flow, source).",
    cached=False,
)
FLOW_INTERVAL = Family(
    "certero_flow_interval_seconds",
    "gauge",
    "Seconds between two checks of each pair of the flow (or two sweeps of its networks).",
    cached=False,
)
LAST_CHECK = Family(
    "certero_flow_last_check_timestamp_seconds",
    "gauge",
    "Unix time when the last check of the flow finished.",
    cached=False,
)
CERT_EXPIRY = Family(
    "certero_flow_tls_cert_expiry_timestamp_seconds",
    "gauge",
    "Unix time when the peer's TLS leaf certificate expires, reported even when verification "
    "failed.",
)
CHAIN_EXPIRY = Family(
    "certero_flow_tls_chain_expiry_timestamp_seconds",
    "gauge",
    "Unix time when the first certificate of the chain the peer presented (leaf or "
    "intermediate) expires.",
)
PEER_INFO = Family(
    "certero_flow_peer_info",
    "gauge",
    "What the peer reported about itself (product, version).",
)
TCP_RTT = Family(
    "certero_flow_tcp_rtt_seconds",
    "gauge",
    "Kernel round-trip time estimate of the check's TCP connection (Linux TCP_INFO), free of "
    "exporter queueing.",
)
CATALOGUE_INFO = Family(
    "certero_flow_catalogue_info",
    "gauge",
    "The port table row behind each flow, to join on in dashboards.",
    cached=False,
)
PAIR_FAMILIES: tuple[Family, ...] = (
    UP,
    RESULT,
    DURATION,
    PHASE,
    HISTOGRAM,
    LAST_CHECK,
    CERT_EXPIRY,
    CHAIN_EXPIRY,
    PEER_INFO,
    TCP_RTT,
)


def escape_label_value(value: str) -> str:
    """Escape a label value per the text exposition format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@functools.lru_cache(maxsize=65536)
def label_text(labels: tuple[tuple[str, str], ...]) -> str:
    """`{a="x",b="y"}` from name/value pairs (cached: a pair's labels rarely change)."""
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels) + "}"


def number(value: float) -> str:
    """A sample value as Prometheus expects it."""
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


@dataclass(slots=True)
class History:
    """Histogram state of one pair across checks."""

    bucket_counts: list[int]
    total: float = 0.0
    count: int = 0

    @classmethod
    def empty(cls) -> History:
        """A histogram with no observations."""
        return cls([0] * len(HISTOGRAM_BUCKETS))

    def merge(self, other: History) -> None:
        """Add another histogram's observations (a sweep's hosts into its flow's)."""
        for index, count in enumerate(other.bucket_counts):
            self.bucket_counts[index] += count
        self.total += other.total
        self.count += other.count

    def observe(self, seconds: float) -> None:
        """Add one check duration."""
        for index, bound in enumerate(HISTOGRAM_BUCKETS):
            if seconds <= bound:
                self.bucket_counts[index] += 1
                break
        self.total += seconds
        self.count += 1


def render_pair(
    labels: tuple[tuple[str, str], ...],
    result: CheckResult,
    finished_at: float,
    history: History | None,
) -> tuple[bytes, ...]:
    """All series of one (flow, target) pair, one bytes chunk per family in PAIR_FAMILIES."""
    base = label_text(labels)
    inner = base[1:-1]
    up = f"{UP.name}{base} {1 if result.ok else 0}\n"
    state_prefix = f'{RESULT.name}{{{inner},result="'
    states = "".join(state_prefix + suffix for suffix in _STATE_SUFFIXES[result.result])
    duration = f"{DURATION.name}{base} {number(result.duration_seconds)}\n"
    phases = "".join(
        f'{PHASE.name}{{{inner},phase="{phase.value}"}} {number(result.phases[phase])}\n'
        for phase in Phase
        if phase in result.phases
    )
    histogram = _render_history(inner, history) if history is not None else ""
    last = f"{LAST_CHECK.name}{base} {number(finished_at)}\n"
    expiry = (
        f"{CERT_EXPIRY.name}{base} {number(result.tls_cert_expiry_seconds)}\n"
        if result.tls_cert_expiry_seconds is not None
        else ""
    )
    chain_expiry = (
        f"{CHAIN_EXPIRY.name}{base} {number(result.tls_chain_expiry_seconds)}\n"
        if result.tls_chain_expiry_seconds is not None
        else ""
    )
    peer = ""
    if result.peer is not None:
        peer_labels = label_text(
            (*labels, ("product", result.peer.product), ("version", result.peer.version))
        )
        peer = f"{PEER_INFO.name}{peer_labels} 1\n"
    rtt = (
        f"{TCP_RTT.name}{base} {number(result.tcp_rtt_seconds)}\n"
        if result.tcp_rtt_seconds is not None
        else ""
    )
    return tuple(
        text.encode()
        for text in (up, states, duration, phases, histogram, last, expiry, chain_expiry, peer, rtt)
    )


# Everything after the pair's own labels is fixed per result class / bucket: built once here,
# since render_pair runs for every finished check.
_STATE_SUFFIXES: dict[Result, tuple[str, ...]] = {
    current: tuple(f'{cls.value}"}} {1 if cls is current else 0}\n' for cls in Result)
    for current in Result
}
_BUCKET_SUFFIXES = tuple(f'le="{bound}"}} ' for bound in HISTOGRAM_BUCKETS)


def _render_history(inner: str, history: History, family: Family = HISTOGRAM) -> str:
    prefix = f"{family.name}_bucket{{{inner},"
    lines = [
        f"{prefix}{suffix}{cumulative}\n"
        for suffix, cumulative in zip(
            _BUCKET_SUFFIXES, itertools.accumulate(history.bucket_counts), strict=True
        )
    ]
    lines.append(f'{prefix}le="+Inf"}} {history.count}\n')
    lines.append(f"{family.name}_sum{{{inner}}} {number(history.total)}\n")
    lines.append(f"{family.name}_count{{{inner}}} {history.count}\n")
    return "".join(lines)


def render_flow_latency(
    histograms: Iterable[tuple[tuple[tuple[str, str], ...], History]],
) -> bytes:
    """`certero_flow_latency_seconds`: one histogram per flow (labels flow, source, check)."""
    body = "".join(
        _render_history(label_text(labels)[1:-1], history, FLOW_LATENCY)
        for labels, history in histograms
    )
    return FLOW_LATENCY.header() + body.encode() if body else b""


@dataclass(frozen=True, slots=True)
class FlowFacts:
    """What `certero_flow_info` and `certero_flow_interval_seconds` say of one flow."""

    flow: str
    check: str
    protocol: str
    port: str
    source: str
    destination: str
    reason: str
    severity: str
    optional: bool
    interval_seconds: float


def render_flows(facts: Iterable[FlowFacts], source: str) -> bytes:
    """The per-flow info and interval series, rendered once per config."""
    info: list[str] = []
    intervals: list[str] = []
    for fact in facts:
        key = (("flow", fact.flow), ("source", source))
        labels = label_text(
            (
                *key,
                ("check", fact.check),
                ("protocol", fact.protocol),
                ("port", fact.port),
                ("from", fact.source),
                ("to", fact.destination),
                ("reason", fact.reason),
                ("severity", fact.severity),
                ("optional", "true" if fact.optional else "false"),
            )
        )
        info.append(f"{FLOW_INFO.name}{labels} 1\n")
        intervals.append(f"{FLOW_INTERVAL.name}{label_text(key)} {number(fact.interval_seconds)}\n")
    if not info:
        return b""
    return (
        FLOW_INFO.header().decode()
        + "".join(info)
        + FLOW_INTERVAL.header().decode()
        + "".join(intervals)
    ).encode()


def render_catalogue(flows: Iterable[Flow] = FLOWS) -> bytes:
    """`certero_flow_catalogue_info`: one series per built-in flow."""
    lines = [CATALOGUE_INFO.header().decode()]
    for flow in flows:
        labels = label_text(
            (
                ("flow", flow.id),
                ("protocol", flow.transport.value),
                ("port", flow.port_text),
                ("from", flow.source.value),
                ("to", flow.destination.value),
                ("check", flow.check),
                ("reason", flow.reason),
            )
        )
        lines.append(f"{CATALOGUE_INFO.name}{labels} 1\n")
    return "".join(lines).encode()


NETWORK_HOSTS = Family(
    "certero_flow_network_hosts",
    "gauge",
    "Hosts of the network per result class in the last completed sweep.",
)
NETWORK_PROBED = Family(
    "certero_flow_network_hosts_probed",
    "gauge",
    "Hosts the last completed sweep of the network probed (this shard's, when sharded).",
)
NETWORK_ABSENT = Family(
    "certero_flow_network_hosts_absent",
    "gauge",
    "Hosts that answered nothing at all, neither the check nor an ICMP echo: no host there "
    "(or one that drops everything).",
)
NETWORK_FILTERED = Family(
    "certero_flow_network_hosts_filtered",
    "gauge",
    "Hosts that are up (they answered something) but whose check got no answer: the port is "
    "filtered.",
)
NETWORK_DURATION = Family(
    "certero_flow_network_sweep_duration_seconds",
    "gauge",
    "Wall time of the last completed sweep of the network.",
)
NETWORK_COMPLETED = Family(
    "certero_flow_network_sweep_last_completion_timestamp_seconds",
    "gauge",
    "Unix time when the last sweep of the network completed.",
    cached=False,
)
NETWORK_FAMILIES: tuple[Family, ...] = (
    NETWORK_HOSTS,
    NETWORK_PROBED,
    NETWORK_ABSENT,
    NETWORK_FILTERED,
    NETWORK_DURATION,
    NETWORK_COMPLETED,
)


def render_network(
    labels: tuple[tuple[str, str], ...],
    counts: Mapping[Result, int],
    *,
    probed: int,
    absent: int,
    filtered: int,
    duration_seconds: float,
    finished_at: float,
) -> tuple[bytes, ...]:
    """The aggregate series of one swept network, one chunk per family in NETWORK_FAMILIES."""
    base = label_text(labels)
    inner = base[1:-1]
    hosts = "".join(
        f'{NETWORK_HOSTS.name}{{{inner},result="{cls.value}"}} {counts.get(cls, 0)}\n'
        for cls in Result
    )
    return tuple(
        text.encode()
        for text in (
            hosts,
            f"{NETWORK_PROBED.name}{base} {probed}\n",
            f"{NETWORK_ABSENT.name}{base} {absent}\n",
            f"{NETWORK_FILTERED.name}{base} {filtered}\n",
            f"{NETWORK_DURATION.name}{base} {number(duration_seconds)}\n",
            f"{NETWORK_COMPLETED.name}{base} {number(finished_at)}\n",
        )
    )


def iter_families(
    chunks_by_pair: Iterable[Sequence[bytes]],
    families: Sequence[Family] = PAIR_FAMILIES,
) -> Iterator[bytes]:
    """Join the kept chunks of every pair, family by family, headers first, in slices.

    Yielding slices of `RENDER_SLICE_PAIRS` pairs lets the web handler send each part and let
    the event loop run in between, instead of blocking it for the whole body.
    """
    pairs = list(chunks_by_pair)
    for index, family in enumerate(families):
        yield family.header()
        for start in range(0, len(pairs), RENDER_SLICE_PAIRS):
            yield b"".join(chunks[index] for chunks in pairs[start : start + RENDER_SLICE_PAIRS])
