"""Blocking library calls (ldap3, pymssql, ...) on a bounded thread pool of their own.

A check reaches the pool through its context: `await context.run_blocking(fn, *args)`. The
pool belongs to the process's lifecycle (`serve`'s aiohttp cleanup context, `check`'s run),
not to the event loop's default executor, which `/metrics` gzip and reload use: a hung bind
must never make a scrape wait.

Contract for a library adapter's blocking function:

    def bind(deadline: Deadline, host: str, port: int) -> Answer:
        with socket.create_connection((host, port), timeout=deadline.timeout()) as sock:
            sock.settimeout(deadline.timeout())  # again before each further blocking step
            ...

- It receives a `Deadline` as its first argument and gives every socket (or the library's
  connect/receive timeout settings) `deadline.timeout()`, taken again before each blocking
  step, so no single wait outlasts the check.
- Why: at the check's deadline the runner stops waiting, but Python cannot stop a thread. The
  worker stays busy until the function returns; only its own socket timeouts make it return
  soon after the deadline and free the worker for the next check.
- It returns plain data and raises the library's exceptions; the check's `classify` hook
  turns them into result classes.

Bounds: at most `workers` calls run at once; at most `queue_limit` more wait for a worker
(a waiting call whose check times out is dropped before it starts). Beyond that, a call fails
at once with `ExporterFault` ("no free worker for blocking checks"), an `exporter_error`
result, rather than queueing without bound behind hung peers.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

from exporter.errors import ExporterFault

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Deadline:
    """The moment (a `time.perf_counter()` value) by which a blocking call must have returned."""

    at: float

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.perf_counter())

    def timeout(self) -> float:
        """Seconds to give a socket or a library timeout now.

        Raises TimeoutError once the deadline has passed, because a zero socket timeout would
        mean non-blocking mode rather than "give up at once".
        """
        left = self.at - time.perf_counter()
        if left <= 0.0:
            raise TimeoutError("the check's deadline has passed")
        return left


class BlockingPool:
    """A fixed number of worker threads for blocking calls, with a bounded wait queue."""

    def __init__(self, workers: int, *, queue_limit: int | None = None) -> None:
        self.workers = workers
        self.queue_limit = workers if queue_limit is None else queue_limit
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blocking")
        self._lock = threading.Condition()
        self._admitted = 0  # running plus waiting
        self._busy = 0
        self._max_busy = 0

    @property
    def busy(self) -> int:
        """Workers running a call now (abandoned ones included, until their call returns)."""
        return self._busy

    @property
    def max_busy(self) -> int:
        """The most workers ever busy at once since the pool was made."""
        return self._max_busy

    async def run(
        self,
        deadline: Deadline,
        fn: Callable[Concatenate[Deadline, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run `fn(deadline, *args, **kwargs)` on a worker and wait for its result.

        Raises ExporterFault when every worker is busy and the queue is full.
        """
        with self._lock:
            if self._admitted >= self.workers + self.queue_limit:
                raise ExporterFault(
                    f"no free worker for blocking checks ({self.workers} busy, "
                    f"{self.queue_limit} waiting; scheduler.blocking_workers)"
                )
            self._admitted += 1
        call = functools.partial(fn, deadline, *args, **kwargs)
        try:
            future = self._executor.submit(self._call, deadline, call)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        # Cancelling the awaiting task (the check's deadline) cancels a call still waiting;
        # a running one keeps its worker until it returns.
        return await asyncio.wrap_future(future)

    def _call(self, deadline: Deadline, call: Callable[[], T]) -> T:
        with self._lock:
            self._busy += 1
            self._max_busy = max(self._max_busy, self._busy)
        try:
            deadline.timeout()  # a call that waited past its deadline is not started
            return call()
        finally:
            with self._lock:
                self._busy -= 1

    def _release(self, _future: object) -> None:
        with self._lock:
            self._admitted -= 1
            if self._admitted == 0:
                self._lock.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block up to `timeout` seconds until no call runs or waits; True if it got there."""
        with self._lock:
            return self._lock.wait_for(lambda: self._admitted == 0, timeout)

    def __enter__(self) -> BlockingPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Drop waiting calls; running ones finish on their own (their deadlines end them)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
