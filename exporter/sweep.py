"""Sweeps: one flow checked on every host of a network, reported as per-network aggregates.

A Certero estate's endpoint networks are /24s to /16s. As (flow, target) pairs, a /16 would be
65,534 pairs of about 28 series each; a sweep instead keeps, per (flow, network), the hosts per
result class, how many hosts answered nothing at all, how many were up with the port filtered,
and the sweep's duration and completion time: 15 series however large the network.

**Presence rule** ("no host" versus "host up, port filtered"). A host is *present* when the
check got any answer from it: any result but `timeout`, `unreachable` and `exporter_error` (a
TCP reset, a TLS alert, a wrong protocol, a refused login all come from a live host). When the
check got none, an ICMP echo decides (flow setting `presence: icmp`, the default). The echo goes
out once the check has had no answer for `PRESENCE_GRACE_SHARE` of its timeout (or at once after
a quick ICMP error) and waits while the check waits, so it costs no wall time, and a host that
answers at once costs no echo. A present host whose check timed out is counted as *filtered*;
a host that answered neither is *absent* ("no host" — or a host that drops everything, which
nobody outside can tell apart). With `presence: none` (where ICMP is blocked on purpose) only
the check's own answers count.

**Memory** is bounded whatever the network size: counts, the `WORST_HOSTS_KEPT` worst hosts
(failing hosts that are present first, then absent ones, each in address order), and per-host
results only for flows with `per_host: true`, for at most `max_per_host_series` hosts (the
first ones in address order, so the set of series is stable between sweeps). Hosts are
produced lazily and at most as many checks run as the scheduler's slots allow.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.blocking import BlockingPool
from exporter.checks import CHECKS, Target
from exporter.collector import History
from exporter.config import PRESENCE_CHECK, Sweep
from exporter.result import CheckResult, Result
from exporter.runner import RunOutcome, run_check

WORST_HOSTS_KEPT = 20
# The echo of the presence rule goes out only when the check has had no answer for this share
# of its timeout: a host that answers at once (most of a live network) costs no echo.
PRESENCE_GRACE_SHARE = 0.05
_PRESENCE_SETTINGS = CHECKS[PRESENCE_CHECK].settings_model()
MIN_ECHO_SECONDS = 0.05  # an echo started at the check's deadline still gets a round trip
# Results that say nothing came back from the host itself.
SILENT_RESULTS = frozenset({Result.TIMEOUT, Result.UNREACHABLE, Result.EXPORTER_ERROR})


@dataclass(frozen=True, slots=True)
class HostOutcome:
    """One host's result in a sweep, and whether the host answered anything at all."""

    host: str
    result: CheckResult
    present: bool


@dataclass(slots=True)
class SweepTally:
    """What one sweep of one network found."""

    started_at: float
    counts: dict[Result, int] = field(default_factory=lambda: dict.fromkeys(Result, 0))
    probed: int = 0
    absent: int = 0
    filtered: int = 0
    finished_at: float = 0.0
    duration_seconds: float = 0.0
    per_host: dict[str, CheckResult] = field(default_factory=dict)
    durations: History = field(default_factory=History.empty)  # for the flow's latency histogram
    # A max-heap by (rank, index) through negated keys: the kept worst hosts.
    _worst: list[tuple[int, int, HostOutcome]] = field(default_factory=list)

    def add(self, index: int, outcome: HostOutcome, keep_per_host: bool) -> None:
        """Count one host's outcome; `index` is the host's place in address order."""
        result = outcome.result.result
        self.durations.observe(outcome.result.duration_seconds)
        self.probed += 1
        self.counts[result] += 1
        if not outcome.present:
            self.absent += 1
        elif result is Result.TIMEOUT:
            self.filtered += 1
        if keep_per_host:
            self.per_host[outcome.host] = outcome.result
        if result is Result.OK:
            return
        entry = (-(0 if outcome.present else 1), -index, outcome)
        if len(self._worst) < WORST_HOSTS_KEPT:
            heapq.heappush(self._worst, entry)
        elif entry[:2] > self._worst[0][:2]:
            heapq.heapreplace(self._worst, entry)

    @property
    def worst(self) -> list[HostOutcome]:
        """The kept failing hosts: present ones first, each group in address order."""
        return [entry[2] for entry in sorted(self._worst, key=lambda e: (-e[0], -e[1]))]

    @property
    def ok(self) -> int:
        """Hosts whose check succeeded."""
        return self.counts[Result.OK]


HostCallback = Callable[[RunOutcome], None]


async def run_sweep(
    sweep: Sweep,
    slots: asyncio.Semaphore,
    *,
    blocking: BlockingPool | None = None,
    on_host: HostCallback | None = None,
) -> SweepTally:
    """Check every host of the sweep's network (its shard's only), at most `slots` at a time.

    `on_host` sees every host's outcome (the scheduler counts checks and defects with it).
    Cancelling the sweep cancels the checks still running.
    """
    tally = SweepTally(started_at=time.time())
    began = time.perf_counter()
    keep = sweep.max_per_host_series if sweep.per_host else 0
    running: set[asyncio.Task[None]] = set()

    async def probe(index: int, host: str) -> None:
        try:
            outcome, present = await _probe_host(sweep, host, blocking)
            if on_host is not None:
                on_host(outcome)
            tally.add(index, HostOutcome(host, outcome.result, present), index < keep)
        finally:
            slots.release()

    try:
        for index, host in enumerate(sweep.network.hosts(sweep.shard)):
            await slots.acquire()
            task = asyncio.create_task(probe(index, host), name=f"sweep {sweep.key} {host}")
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    tally.finished_at = time.time()
    tally.duration_seconds = time.perf_counter() - began
    return tally


async def _probe_host(
    sweep: Sweep, host: str, blocking: BlockingPool | None
) -> tuple[RunOutcome, bool]:
    """The host's check, and whether the host answered anything (the presence rule)."""
    template = sweep.template
    started = time.perf_counter()
    check = asyncio.ensure_future(
        run_check(
            template.spec,
            Target(host, sweep.port),
            template.settings,
            sweep.timeout,
            blocking=blocking,
        )
    )
    echo: asyncio.Future[RunOutcome] | None = None
    wants_echo = sweep.presence and sweep.check != PRESENCE_CHECK
    try:
        if wants_echo:
            done, _ = await asyncio.wait({check}, timeout=sweep.timeout * PRESENCE_GRACE_SHARE)
            if not done:  # no answer yet: ask the host whether it is there at all
                echo = _echo(host, sweep.timeout - (time.perf_counter() - started))
        outcome = await check
        present = outcome.result.result not in SILENT_RESULTS
        if not present and wants_echo:
            # a quick ICMP error (admin-prohibited) needs the echo as much as silence does
            echo = echo or _echo(host, sweep.timeout - (time.perf_counter() - started))
            present = (await echo).result.ok
        return outcome, present
    finally:
        for pending in (check, echo):
            if pending is not None and not pending.done():
                pending.cancel()


def _echo(host: str, seconds: float) -> asyncio.Future[RunOutcome]:
    """The presence echo to `host`, given what is left of the check's time."""
    spec = CHECKS[PRESENCE_CHECK]
    return asyncio.ensure_future(
        run_check(spec, Target(host), _PRESENCE_SETTINGS, max(seconds, MIN_ECHO_SECONDS))
    )
