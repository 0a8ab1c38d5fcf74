"""Blocking library calls run on the app's bounded pool, and a silent peer cannot exhaust it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp.test_utils import TestClient, TestServer

from exporter.blocking import BlockingPool, Deadline
from exporter.checks import CheckContext, CheckSettings, CheckSpec, Target
from exporter.config import parse_config
from exporter.result import CheckResult, Phase, Result
from exporter.runner import run_check
from exporter.store import ResultStore
from exporter.web import ExporterState, make_app

CHECKS = 200
WORKERS = 100  # the pool admits WORKERS running plus WORKERS waiting: all 200 checks
CHECK_TIMEOUT = 2.0
IDLE_BOUND = 2.0  # the bound: no worker still blocked this long after the deadline


class _NoSettings(CheckSettings):
    """No options."""


class SilentReader:
    """A test-only blocking check: connect and wait for a byte, honouring the deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self.blocked = 0
        self.max_blocked = 0
        self.started = 0
        self.ended_by_socket_timeout = 0
        self.all_blocked = asyncio.Event()
        self.spec = CheckSpec("blocking_read", _NoSettings, self.run, "blocking connect + recv")

    async def run(
        self, target: Target, settings: _NoSettings, context: CheckContext
    ) -> CheckResult:
        assert target.port is not None
        with context.phase(Phase.HANDSHAKE):
            data = await context.run_blocking(self.connect_and_read, target.host, target.port)
        return context.ok(f"read {data!r}")

    def connect_and_read(self, deadline: Deadline, host: str, port: int) -> bytes:
        """The library-adapter contract: every socket wait gets `deadline.timeout()`."""
        with self._lock:
            self.started += 1
        try:
            with socket.create_connection((host, port), timeout=deadline.timeout()) as sock:
                sock.settimeout(deadline.timeout())
                with self._lock:
                    self.blocked += 1
                    self.max_blocked = max(self.max_blocked, self.blocked)
                    if self.blocked == WORKERS:
                        self._loop.call_soon_threadsafe(self.all_blocked.set)
                try:
                    return sock.recv(1)
                finally:
                    with self._lock:
                        self.blocked -= 1
        except TimeoutError:
            with self._lock:
                self.ended_by_socket_timeout += 1
            raise


@asynccontextmanager
async def silent_listener() -> AsyncIterator[int]:
    """A loopback TCP server that accepts every connection and never sends a byte."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0, backlog=CHECKS)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def test_silent_peer_keeps_the_pool_bounded_and_metrics_answering() -> None:
    """200 blocked checks: /metrics answers, the pool stays within size, all time out, all free."""
    config = parse_config(f"scheduler: {{blocking_workers: {WORKERS}}}\n", "test.yaml")
    state = ExporterState(config=config, config_path=None, store=ResultStore("x"))
    reader = SilentReader(asyncio.get_running_loop())
    async with (
        silent_listener() as port,
        TestClient(TestServer(make_app(state, run_scheduler=False), host="127.0.0.1")) as client,
    ):
        pool = state.blocking
        assert pool is not None
        runs = [
            asyncio.create_task(
                run_check(
                    reader.spec,
                    Target("127.0.0.1", port),
                    _NoSettings(),
                    CHECK_TIMEOUT,
                    blocking=pool,
                )
            )
            for _ in range(CHECKS)
        ]
        async with asyncio.timeout(CHECK_TIMEOUT):
            await reader.all_blocked.wait()
        response = await client.get("/metrics")
        body = await response.text()
        assert response.status == 200
        assert f"certero_flow_exporter_blocking_workers_busy {WORKERS:.1f}" in body
        assert f"certero_flow_exporter_blocking_workers {WORKERS:.1f}" in body
        outcomes = await asyncio.gather(*runs)
        assert {outcome.result.result for outcome in outcomes} == {Result.TIMEOUT}
        assert pool.max_busy <= WORKERS
        assert reader.max_blocked == WORKERS
        assert await asyncio.to_thread(pool.wait_idle, IDLE_BOUND)
        assert pool.busy == 0
        # Every call that reached the peer returned through its own socket timeout.
        assert reader.ended_by_socket_timeout == reader.started >= WORKERS
    with pytest.raises(RuntimeError, match="shut down"):  # the app's cleanup shut the pool down
        await pool.run(Deadline(time.perf_counter() + 1.0), lambda _deadline: None)


async def test_full_pool_and_queue_is_exporter_error_at_once() -> None:
    """With every worker busy and the queue full, a check is exporter_error, not queued."""
    release = threading.Event()
    entered = threading.Semaphore(0)

    def hold(deadline: Deadline) -> None:
        entered.release()
        release.wait(deadline.timeout())

    async def run(target: Target, settings: _NoSettings, context: CheckContext) -> CheckResult:
        await context.run_blocking(hold)
        return context.ok("released")

    spec = CheckSpec("blocking_hold", _NoSettings, run, "holds a worker")
    with BlockingPool(1, queue_limit=1) as pool:
        first = asyncio.create_task(
            run_check(spec, Target("127.0.0.1"), _NoSettings(), 10.0, blocking=pool)
        )
        assert await asyncio.to_thread(entered.acquire, True, 10.0)
        second = asyncio.create_task(
            run_check(spec, Target("127.0.0.1"), _NoSettings(), 10.0, blocking=pool)
        )
        await asyncio.sleep(0)  # let the second run take the one place in the queue
        third = await run_check(spec, Target("127.0.0.1"), _NoSettings(), 10.0, blocking=pool)
        release.set()
        results = [outcome.result for outcome in await asyncio.gather(first, second)]
    assert third.result.result is Result.EXPORTER_ERROR
    assert third.result.detail.startswith("not checked: no free worker for blocking checks")
    assert [result.result for result in results] == [Result.OK, Result.OK]
    assert pool.max_busy == 1


async def test_a_call_whose_deadline_passed_while_waiting_never_starts() -> None:
    """A call picked up after its deadline raises TimeoutError without calling the function."""
    called: list[Deadline] = []
    with BlockingPool(1) as pool, pytest.raises(TimeoutError):
        await pool.run(Deadline(time.perf_counter()), called.append)
    assert called == []


def test_deadline_timeout_refuses_a_zero_timeout() -> None:
    """Once the deadline has passed, `timeout()` raises rather than return 0 (non-blocking)."""
    deadline = Deadline(time.perf_counter() - 1.0)
    assert deadline.remaining() == 0.0
    with pytest.raises(TimeoutError):
        deadline.timeout()


async def test_blocking_call_without_a_pool_is_exporter_error() -> None:
    """A check run where no pool exists (a bare run_check) is exporter_error, never the loop's."""

    async def run(target: Target, settings: _NoSettings, context: CheckContext) -> CheckResult:
        await context.run_blocking(lambda _deadline: None)
        return context.ok("ran")

    spec = CheckSpec("blocking_nopool", _NoSettings, run, "needs a pool")
    outcome = await run_check(spec, Target("127.0.0.1"), _NoSettings(), 1.0)
    assert outcome.result.result is Result.EXPORTER_ERROR
    assert "no worker pool for blocking checks" in outcome.result.detail


def test_blocking_workers_is_a_scheduler_setting() -> None:
    """scheduler.blocking_workers sizes the pool; its default is 32."""
    assert parse_config("{}\n", "test.yaml").file.scheduler.blocking_workers == 32
    config = parse_config("scheduler: {blocking_workers: 4}\n", "test.yaml")
    assert config.file.scheduler.blocking_workers == 4
