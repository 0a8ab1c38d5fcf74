"""Runs every (flow, target) pair in the background on its interval.

One loop keeps a heap of due times; it never creates a task per pair ahead of time, so 10,000
pairs cost 10,000 heap entries, not 10,000 sleeping tasks. First runs are spread over the
start-up window by a stable hash of the pair (so restarts keep their phase), and every later run
is jittered. A global semaphore bounds concurrent checks and a per-host one protects each
destination. Results go to the store; `/metrics` never waits on a check.

A sweep (one flow across one network, `exporter.sweep`) is scheduled like a pair; each of its
hosts' checks takes a slot of the same global semaphore, so sweeps and pairs share one bound.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any

from exporter.blocking import BlockingPool
from exporter.config import Config, Job, Sweep
from exporter.result import Result
from exporter.runner import RunOutcome, run_check
from exporter.selfmetrics import ExporterMetrics
from exporter.store import ResultStore
from exporter.sweep import run_sweep

logger = logging.getLogger(__name__)
JobKey = tuple[str, str]
# Pairs due within this slack start in the same wake-up: event loops round timers (uvloop to
# whole milliseconds), and sleeping for less would only spin.
WAKEUP_SLACK_SECONDS = 0.002


class Scheduler:
    """Owns the heap of due pairs and the tasks that run them."""

    def __init__(
        self,
        config: Config,
        store: ResultStore,
        metrics: ExporterMetrics,
        *,
        blocking: BlockingPool | None = None,
    ) -> None:
        self._store = store
        self._blocking = blocking
        self._metrics = metrics
        self._heap: list[tuple[float, int, JobKey]] = []
        self._queued: set[JobKey] = set()
        self._running: set[JobKey] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._host_limits: dict[str, asyncio.Semaphore] = {}
        self._sequence = 0
        self._wakeup = asyncio.Event()
        self._random = random.Random()  # noqa: S311 - jitter, not security
        self._jobs: Mapping[JobKey, Job | Sweep] = {}
        self._config = config
        self._slots = asyncio.Semaphore(config.file.scheduler.concurrency)
        self.started = False
        self.replace_config(config)

    def replace_config(self, config: Config) -> None:
        """Swap in a new config: known pairs keep their schedule, new ones are spread in."""
        for _ in self.replace_config_in_steps(config, step=len(config.jobs) + 1):
            pass

    def replace_config_in_steps(self, config: Config, step: int) -> Iterator[None]:
        """`replace_config`, pausing after every `step` pairs so an event loop can serve between.

        The new set of pairs takes effect before the first pause (a removed pair is never run
        or recorded again); only the queueing of new pairs is spread over the pauses.
        """
        settings = config.file.scheduler
        if settings.concurrency != self._config.file.scheduler.concurrency:
            self._slots = asyncio.Semaphore(settings.concurrency)
        if settings.per_host_concurrency != self._config.file.scheduler.per_host_concurrency:
            self._host_limits.clear()
        self._config = config
        self._jobs = {**config.by_key, **config.sweeps_by_key}
        self._metrics.pairs.set(len(config.by_key))
        now = asyncio.get_running_loop().time()
        work: list[Job | Sweep] = [*config.sweeps, *config.jobs]
        for index, job in enumerate(work):
            if index % step == step - 1:
                self._wakeup.set()
                yield
            if job.key not in self._queued:
                first = now + job.spread_fraction * min(job.interval, settings.startup_spread)
                self._push(first, job.key)
        self._wakeup.set()

    async def run(self) -> None:
        """The loop: pop due pairs, start them within the concurrency bounds, re-queue them."""
        loop = asyncio.get_running_loop()
        self.started = True
        try:
            while True:
                if not self._heap:
                    await self._sleep(None)
                    continue
                due, _, key = self._heap[0]
                now = loop.time()
                if due > now + WAKEUP_SLACK_SECONDS:
                    await self._sleep(due - now)
                    continue
                heapq.heappop(self._heap)
                self._queued.discard(key)
                job = self._jobs.get(key)
                if job is None:
                    continue  # removed by a reload
                self._push(self._next_due(job, due, now), key)
                if key in self._running:
                    self._metrics.skipped_runs.inc()
                    continue
                if isinstance(job, Sweep):
                    self._start(self._run_sweep(job), key, f"sweep {key}")
                    continue
                slots = self._slots  # a reload may replace it; release the one acquired
                await slots.acquire()
                self._start(self._run_one(job, due, slots), key, f"check {key}")
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Cancel running checks and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, work: Coroutine[Any, Any, None], key: JobKey, name: str) -> None:
        self._running.add(key)
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sleep(self, seconds: float | None) -> None:
        self._wakeup.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()
        except TimeoutError:
            pass

    def _push(self, due: float, key: JobKey) -> None:
        self._sequence += 1
        heapq.heappush(self._heap, (due, self._sequence, key))
        self._queued.add(key)

    def _next_due(self, job: Job | Sweep, due: float, now: float) -> float:
        """Fixed-rate schedule with jitter; a pair that fell far behind starts afresh."""
        jitter = self._config.file.scheduler.jitter
        step = job.interval * (1.0 + self._random.uniform(-jitter, jitter))
        following = due + step
        return following if following > now else now + step

    async def _run_one(self, job: Job, due: float, slots: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        limit = self._host_limits.get(job.target.host)
        if limit is None:
            limit = asyncio.Semaphore(self._config.file.scheduler.per_host_concurrency)
            self._host_limits[job.target.host] = limit
        try:
            async with limit:
                self._metrics.scheduler_lag.observe(max(0.0, loop.time() - due))
                self._metrics.in_flight.inc()
                try:
                    outcome = await run_check(
                        job.spec, job.target, job.settings, job.timeout, blocking=self._blocking
                    )
                finally:
                    self._metrics.in_flight.dec()
            if outcome.defect:
                self._metrics.check_defects.labels(job.check).inc()
            result = outcome.result
            current = self._jobs.get(job.key)
            if not isinstance(current, Job) or current.check != job.check:
                return  # removed or changed by a reload while it ran
            previous = self._store.record(current, result, time.time())
            self._metrics.count_check(job.check, result.result.value)
            _log_transition(job, previous, result.result, result.detail)
        finally:
            self._running.discard(job.key)
            slots.release()

    async def _run_sweep(self, sweep: Sweep) -> None:
        """One sweep of one network; its tally replaces the network's previous one."""

        def count(outcome: RunOutcome) -> None:
            if outcome.defect:
                self._metrics.check_defects.labels(sweep.check).inc()
            self._metrics.count_check(sweep.check, outcome.result.result.value)

        try:
            tally = await run_sweep(sweep, self._slots, blocking=self._blocking, on_host=count)
            current = self._jobs.get(sweep.key)
            if isinstance(current, Sweep) and current.check == sweep.check:
                self._store.record_sweep(current, tally)
                logger.info(
                    "sweep finished flow=%s network=%s hosts=%d ok=%d absent=%d filtered=%d "
                    "seconds=%.1f",
                    sweep.flow_id,
                    sweep.network.label,
                    tally.probed,
                    tally.ok,
                    tally.absent,
                    tally.filtered,
                    tally.duration_seconds,
                )
        finally:
            self._running.discard(sweep.key)


def _log_transition(job: Job, previous: Result | None, current: Result, detail: str) -> None:
    """Log state changes (ok → failing → ok), not every run."""
    if previous is current:
        return
    level = logging.INFO if current is Result.OK else logging.WARNING
    logger.log(
        level,
        "flow state changed flow=%s target=%s check=%s from=%s to=%s detail=%r",
        job.flow_id,
        job.target,
        job.check,
        previous.value if previous is not None else "none",
        current.value,
        detail,
    )
