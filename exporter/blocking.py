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
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

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
    """A fixed number of worker threads for blocking calls, with a bounded wait queue.

    The threads start with the pool, not on first use: starting a thread waits for it to run,
    and starting dozens from the event loop while other threads hold the interpreter lock
    stalled the loop for 50-180 ms in `bench/bench_blocking.py`. They are daemon threads, so a
    library call that breaks the deadline contract cannot hold the process's exit.
    """

    def __init__(self, workers: int, *, queue_limit: int | None = None) -> None:
        self.workers = workers
        self.queue_limit = workers if queue_limit is None else queue_limit
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Condition()
        self._admitted = 0  # running plus waiting
        self._busy = 0
        self._max_busy = 0
        self._closed = False
        for index in range(workers):
            name = f"blocking-{index}"
            threading.Thread(target=self._serve, name=name, daemon=True).start()

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

        Raises ExporterFault when every worker is busy and the queue is full. Cancelling the
        awaiting task (the check's deadline) drops a call still waiting; a running call keeps
        its worker until it returns.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the blocking pool is shut down")
            if self._admitted >= self.workers + self.queue_limit:
                raise ExporterFault(
                    f"no free worker for blocking checks ({self.workers} busy, "
                    f"{self.queue_limit} waiting; scheduler.blocking_workers)"
                )
            self._admitted += 1
            future: Future[T] = Future()
            future.add_done_callback(self._release)
            call = functools.partial(fn, deadline, *args, **kwargs)
            self._work.put(_Work(future, deadline, call))  # under the lock: never after shutdown
        return await asyncio.wrap_future(future)

    def _serve(self) -> None:
        """One worker: take calls until the pool shuts down."""
        while (work := self._work.get()) is not None:
            if not work.future.set_running_or_notify_cancel():
                continue  # its check gave up while it waited
            with self._lock:
                self._busy += 1
                self._max_busy = max(self._max_busy, self._busy)
            try:
                work.deadline.timeout()  # a call that waited past its deadline is not started
                result = work.call()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting check
                outcome: tuple[object, BaseException | None] = (None, exc)
            else:
                outcome = (result, None)
            with self._lock:
                self._busy -= 1
            if outcome[1] is not None:
                work.future.set_exception(outcome[1])
            else:
                work.future.set_result(outcome[0])

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
        with self._lock:
            self._closed = True
        while True:
            try:
                work = self._work.get_nowait()
            except queue.Empty:
                break
            if work is not None:
                work.future.cancel()
        for _ in range(self.workers):
            self._work.put(None)


@dataclass(frozen=True, slots=True)
class _Work:
    """One admitted call: its future, its deadline and the call itself."""

    future: Future[Any]
    deadline: Deadline
    call: Callable[[], Any]
