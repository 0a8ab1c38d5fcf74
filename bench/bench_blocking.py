"""Event-loop lag and `/metrics` while 200 blocking checks hang on a silent peer.

A loopback listener completes every TCP handshake (kernel backlog) and never sends a byte. In
one process, the exporter's app is served on 127.0.0.1 (no scheduler) and `--checks` checks of
a bench-only check spec start at once; each does a blocking `socket.create_connection` + `recv`
with the socket timeout taken from its deadline (the contract of `exporter.blocking`), under a
check timeout of `--timeout` seconds. Meanwhile a 1 ms ticker on the loop records the longest
stall and a client thread scrapes `/metrics` back to back with gzip (as Prometheus does).

Side by side:
- `pool`: the calls go through `CheckContext.run_blocking`, the app's pool of
  `--workers` threads (`scheduler.blocking_workers`).
- `default-executor`: the same calls on the loop's default executor, which `/metrics` gzip
  uses too: what the pool exists to avoid.

Reported per mode: results by class, longest loop stall, scrape count and p50 / max scrape
time while the checks run, busiest workers at once, and how long after the last check ended
the pool was idle. All traffic goes to 127.0.0.1; every loop is bounded in count and time.

    .venv/bin/python bench/bench_blocking.py [--checks 200] [--workers 32] [--timeout 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from exporter.blocking import Deadline
from exporter.checks import CheckContext, CheckSettings, CheckSpec, Target
from exporter.config import parse_config
from exporter.result import CheckResult, Phase
from exporter.runner import run_check
from exporter.store import ResultStore
from exporter.web import ExporterState, make_app

SCRAPE_TIMEOUT_S = 30.0  # a scrape slower than this is a failure of the mode, not a figure


class _NoSettings(CheckSettings):
    """No options."""


def connect_and_read(deadline: Deadline, host: str, port: int) -> bytes:
    """A blocking library call that honours its deadline on every socket wait."""
    with socket.create_connection((host, port), timeout=deadline.timeout()) as sock:
        sock.settimeout(deadline.timeout())
        return sock.recv(1)


async def run_on_pool(target: Target, settings: _NoSettings, context: CheckContext) -> CheckResult:
    """The check as a library adapter writes it."""
    assert target.port is not None
    with context.phase(Phase.HANDSHAKE):
        data = await context.run_blocking(connect_and_read, target.host, target.port)
    return context.ok(f"read {data!r}")


async def run_on_default_executor(
    target: Target, settings: _NoSettings, context: CheckContext
) -> CheckResult:
    """The same call on the loop's default executor, for comparison."""
    assert target.port is not None
    deadline = Deadline(time.perf_counter() + context.remaining())
    loop = asyncio.get_running_loop()
    with context.phase(Phase.HANDSHAKE):
        data = await loop.run_in_executor(
            None, connect_and_read, deadline, target.host, target.port
        )
    return context.ok(f"read {data!r}")


@dataclass
class Figures:
    """What one mode measured."""

    results: Counter[str] = field(default_factory=Counter)
    max_stall_ms: float = 0.0
    scrape_ms: list[float] = field(default_factory=list)
    scrape_failures: int = 0
    max_busy: int | None = None
    idle_after_ms: float | None = None


def scrape_loop(port: int, stop: threading.Event, figures: Figures) -> None:
    """Scrape /metrics with gzip back to back until told to stop."""
    while not stop.is_set():
        begin = time.perf_counter()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=SCRAPE_TIMEOUT_S)
            connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            response = connection.getresponse()
            response.read()
            connection.close()
        except OSError:
            figures.scrape_failures += 1
            continue
        figures.scrape_ms.append((time.perf_counter() - begin) * 1000)


async def ticker(stop: asyncio.Event, figures: Figures) -> None:
    """Record the longest gap between 1 ms ticks of the event loop."""
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        figures.max_stall_ms = max(figures.max_stall_ms, (now - last) * 1000 - 1.0)
        last = now


async def measure(
    run: Callable[[Target, _NoSettings, CheckContext], Awaitable[CheckResult]],
    args: argparse.Namespace,
    peer_port: int,
) -> Figures:
    """One mode: serve the app, start the checks, tick and scrape until they have all ended."""
    figures = Figures()
    config = parse_config(f"scheduler: {{blocking_workers: {args.workers}}}\n", "bench.yaml")
    state = ExporterState(config=config, config_path=None, store=ResultStore("bench"))
    runner = web.AppRunner(make_app(state, run_scheduler=False))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    http_port = server.sockets[0].getsockname()[1]
    spec = CheckSpec("blocking_read", _NoSettings, run, "blocking connect + recv")
    stop_ticker, stop_scraper = asyncio.Event(), threading.Event()
    tick = asyncio.create_task(ticker(stop_ticker, figures))
    scraper = threading.Thread(target=scrape_loop, args=(http_port, stop_scraper, figures))
    try:
        scraper.start()
        outcomes = await asyncio.gather(
            *(
                run_check(
                    spec,
                    Target("127.0.0.1", peer_port),
                    _NoSettings(),
                    args.timeout,
                    blocking=state.blocking,
                )
                for _ in range(args.checks)
            )
        )
        ended = time.perf_counter()
        stop_scraper.set()
        await asyncio.to_thread(scraper.join, SCRAPE_TIMEOUT_S)
        figures.results.update(outcome.result.result.value for outcome in outcomes)
        if state.blocking is not None and run is run_on_pool:
            idle = await asyncio.to_thread(state.blocking.wait_idle, args.timeout + 5.0)
            figures.idle_after_ms = (time.perf_counter() - ended) * 1000 if idle else None
            figures.max_busy = state.blocking.max_busy
    finally:
        stop_ticker.set()
        stop_scraper.set()
        await tick
        await runner.cleanup()
    return figures


def report(name: str, figures: Figures) -> str:
    """One Markdown table row."""
    scrapes = figures.scrape_ms
    p50 = f"{statistics.median(scrapes):.1f}" if scrapes else "-"
    worst = f"{max(scrapes):.1f}" if scrapes else "-"
    results = ", ".join(f"{count} {result}" for result, count in sorted(figures.results.items()))
    idle = "-" if figures.idle_after_ms is None else f"{figures.idle_after_ms:.0f} ms"
    busy = "-" if figures.max_busy is None else str(figures.max_busy)
    return (
        f"| {name} | {results} | {figures.max_stall_ms:.1f} ms | {len(scrapes)} "
        f"({figures.scrape_failures} failed) | {p50} / {worst} ms | {busy} | {idle} |"
    )


async def main(args: argparse.Namespace) -> None:
    """Both modes against one silent listener."""
    with socket.create_server(("127.0.0.1", 0), backlog=4096) as listener:
        peer_port = listener.getsockname()[1]
        rows = [
            report(f"pool ({args.workers} workers)", await measure(run_on_pool, args, peer_port)),
            report(
                "default executor",
                await measure(run_on_default_executor, args, peer_port),
            ),
        ]
    print(f"{args.checks} checks, timeout {args.timeout:g} s, silent loopback peer\n")
    print(
        "| mode | results | longest loop stall | scrapes during the checks | "
        "scrape p50 / max | busiest workers | pool idle after the last check |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=200)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=2.0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
