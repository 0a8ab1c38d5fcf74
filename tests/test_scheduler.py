"""The scheduler runs every pair on its interval within the global and per-host bounds."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from exporter.checks import CheckContext, CheckSpec, Target
from exporter.checks.tcp import TcpSettings
from exporter.config import Config, parse_config
from exporter.result import CheckResult, Result
from exporter.scheduler import Scheduler
from exporter.selfmetrics import ExporterMetrics
from exporter.store import ResultStore
from exporter.web import ExporterState
from exporter.web import _run_limited as run_probe_limited

DEADLINE = 10.0  # generous bound for conditions that hold within milliseconds


class FakeCheck:
    """A check that sends nothing: it counts runs and concurrency and waits to be released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.per_host: Counter[str] = Counter()
        self.max_per_host: Counter[str] = Counter()
        self.runs: Counter[str] = Counter()
        self.behaviour: Callable[[Target], Awaitable[None]] | None = None

    async def run(
        self, target: Target, settings: TcpSettings, context: CheckContext
    ) -> CheckResult:
        self.in_flight += 1
        self.per_host[target.host] += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_per_host[target.host] = max(
            self.max_per_host[target.host], self.per_host[target.host]
        )
        try:
            if self.behaviour is not None:
                await self.behaviour(target)
            await self.release.wait()
        finally:
            self.in_flight -= 1
            self.per_host[target.host] -= 1
        self.runs[str(target)] += 1
        return context.ok("fake ok")


def make_config(targets: list[str], fake: FakeCheck, **scheduler: object) -> Config:
    """A config of custom tcp flows whose jobs run the fake check instead of connecting."""
    settings = ", ".join(f"{key}: {value}" for key, value in scheduler.items())
    quoted = ", ".join(f'"{target}"' for target in targets)
    config = parse_config(
        f"scheduler: {{startup_spread: 1ms, {settings}}}\n"
        f"extra_flows:\n  - {{id: fake, check: tcp, interval: 30s, timeout: 5s, targets: [{quoted}]}}\n",
        "test.yaml",
    )
    spec = CheckSpec("tcp", TcpSettings, fake.run, "fake")
    jobs = tuple(dataclasses.replace(job, spec=spec) for job in config.jobs)
    return dataclasses.replace(config, jobs=jobs)


def with_jobs_changed(
    config: Config,
    *,
    interval: float | None = None,
    timeout: float | None = None,
    histograms: bool = False,
) -> Config:
    """The same config with the interval, timeout or histogram opt-in of every job changed."""
    jobs = tuple(
        dataclasses.replace(
            job,
            interval=job.interval if interval is None else interval,
            timeout=job.timeout if timeout is None else timeout,
            histograms=histograms,
        )
        for job in config.jobs
    )
    return dataclasses.replace(config, jobs=jobs)


async def wait_until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until the condition holds; fail after a generous deadline."""
    async with asyncio.timeout(DEADLINE):
        while not condition():  # noqa: ASYNC110 - the conditions are plain counters, not events
            await asyncio.sleep(0.001)


async def settle() -> None:
    """Let every ready task run so that nothing more would start."""
    for _ in range(200):
        await asyncio.sleep(0)


async def start(config: Config) -> tuple[Scheduler, ResultStore, asyncio.Task[None]]:
    store = ResultStore(config.source.value)
    scheduler = Scheduler(config, store, ExporterMetrics())
    return scheduler, store, asyncio.create_task(scheduler.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_global_concurrency_is_bounded() -> None:
    """No more checks run at once than scheduler.concurrency, and all eventually run."""
    fake = FakeCheck()
    config = make_config([f"10.0.0.{n}:1" for n in range(1, 11)], fake, concurrency=3)
    _, store, task = await start(config)
    await wait_until(lambda: fake.in_flight == 3)
    await settle()
    assert fake.max_in_flight == 3
    fake.release.set()
    await wait_until(lambda: len(store) == 10)
    await stop(task)
    assert fake.max_in_flight == 3
    assert all(entry.result.ok for entry in store.entries())


async def test_per_host_concurrency_is_bounded() -> None:
    """Pairs on one host never exceed scheduler.per_host_concurrency at once."""
    fake = FakeCheck()
    targets = [f"10.0.0.1:{port}" for port in range(1, 7)] + ["10.0.0.2:1"]
    config = make_config(targets, fake, concurrency=10, per_host_concurrency=2)
    _, store, task = await start(config)
    await wait_until(lambda: fake.in_flight == 3)
    await settle()
    assert fake.max_per_host["10.0.0.1"] == 2
    assert fake.max_per_host["10.0.0.2"] == 1
    fake.release.set()
    await wait_until(lambda: len(store) == 7)
    await stop(task)
    assert fake.max_per_host["10.0.0.1"] == 2


async def test_pairs_rerun_on_their_interval() -> None:
    """A pair runs again after its interval, and its histogram (opted in) counts every run."""
    fake = FakeCheck()
    fake.release.set()
    config = with_jobs_changed(make_config(["10.0.0.1:1"], fake), interval=0.02, histograms=True)
    _, store, task = await start(config)
    await wait_until(lambda: fake.runs["10.0.0.1:1"] >= 3)
    await stop(task)
    entry = store.get(("fake", "10.0.0.1:1"))
    assert entry is not None
    assert entry.history is not None
    assert entry.history.count >= 3


async def test_a_crashing_check_becomes_a_classified_result() -> None:
    """An unexpected exception in a check is a service_error result, not a dead scheduler."""
    fake = FakeCheck()
    fake.release.set()

    async def crash(target: Target) -> None:
        if target.port == 1:
            raise RuntimeError("bug in a check")

    fake.behaviour = crash
    config = make_config(["10.0.0.1:1", "10.0.0.1:2"], fake)
    _, store, task = await start(config)
    await wait_until(lambda: len(store) == 2)
    await stop(task)
    crashed = store.get(("fake", "10.0.0.1:1"))
    assert crashed is not None
    assert crashed.result.result is Result.SERVICE_ERROR
    assert "RuntimeError" in crashed.result.detail
    healthy = store.get(("fake", "10.0.0.1:2"))
    assert healthy is not None
    assert healthy.result.ok


async def test_check_defects_are_counted_per_check() -> None:
    """Every run that ends in a defect counts in check_defects_total; a mapped failure does not."""
    fake = FakeCheck()
    fake.release.set()

    async def crash(target: Target) -> None:
        if target.port != 3:
            raise RuntimeError("bug in a check")
        raise ConnectionRefusedError  # a network failure, no defect

    fake.behaviour = crash
    config = make_config(["10.0.0.1:1", "10.0.0.2:2", "10.0.0.1:3"], fake)
    store, metrics = ResultStore(config.source.value), ExporterMetrics()
    task = asyncio.create_task(Scheduler(config, store, metrics).run())
    await wait_until(lambda: len(store) == 3)
    await stop(task)
    defects = metrics.registry.get_sample_value(
        "certero_flow_exporter_check_defects_total", {"check": "tcp"}
    )
    assert defects == 2


async def test_probe_runs_count_check_defects_too() -> None:
    """A /probe run that ends in a defect counts in check_defects_total like a scheduled one."""
    fake = FakeCheck()
    fake.release.set()

    async def crash(target: Target) -> None:
        raise RuntimeError("bug in a check")

    fake.behaviour = crash
    config = make_config(["10.0.0.1:1"], fake)
    state = ExporterState(config=config, config_path=None, store=ResultStore("x"))
    outcome = await run_probe_limited(state, config.jobs[0], 1.0, debug=False)
    assert outcome.result.result is Result.SERVICE_ERROR
    defects = state.metrics.registry.get_sample_value(
        "certero_flow_exporter_check_defects_total", {"check": "tcp"}
    )
    assert defects == 1


async def test_hard_timeout_ends_a_hanging_check() -> None:
    """A check that never returns is cut at its timeout and recorded as timeout."""
    fake = FakeCheck()  # never released
    config = with_jobs_changed(make_config(["10.0.0.1:1"], fake), timeout=0.05)
    _, store, task = await start(config)
    await wait_until(lambda: len(store) == 1)
    await stop(task)
    entry = store.get(("fake", "10.0.0.1:1"))
    assert entry is not None
    assert entry.result.result is Result.TIMEOUT
    assert "0.05s" in entry.result.detail


async def test_reload_keeps_known_pairs_and_drops_removed_ones() -> None:
    """After replace_config a removed pair disappears from the store and new ones run."""
    fake = FakeCheck()
    fake.release.set()
    first = make_config(["10.0.0.1:1", "10.0.0.2:1"], fake)
    scheduler, store, task = await start(first)
    await wait_until(lambda: len(store) == 2)
    second = make_config(["10.0.0.2:1", "10.0.0.3:1"], fake)
    store.retain(second.jobs, second.source.value)
    scheduler.replace_config(second)
    await wait_until(lambda: store.get(("fake", "10.0.0.3:1")) is not None)
    await stop(task)
    assert store.get(("fake", "10.0.0.1:1")) is None
    assert fake.runs["10.0.0.2:1"] == 1  # kept its schedule: not re-run by the reload
