"""Side-by-side benchmark of the exporter core on one machine, in one run.

Measured, as medians of `--runs`:

1. TCP checks of `--targets` loopback listeners run by the exporter itself (config → `make_app`
   → its scheduler → `ResultStore`), with `/metrics` scraped over HTTP once a second, on the
   default asyncio loop and on uvloop: checks/s and this process's CPU-s per 1,000 checks.
2. The floor: a bare `sock_connect` loop at the same concurrency for the same number of checks,
   flat out; and the same connect started at the exporter's offered rate (paced in 5 ms ticks),
   which separates the cost of running below saturation from the cost of the exporter's code.
3. Debian's blackbox_exporter (`tcp_connect` module) driven through `/probe` for the same count:
   probes/s and the blackbox process's CPU-s per 1,000 probes.
4. `/metrics` for `--pairs` cached results (no traffic sent), in a separate exporter process:
   `store.render()`, the full HTTP response, the longest event-loop stall while serving it,
   the cost of recording one result, config parsing, and the process's peak RSS.

The listeners live in a helper process (one epoll loop over all ports); its CPU is reported
apart and not counted. All traffic goes to 127.0.0.1; every loop is bounded in count and time.

    .venv/bin/python bench/bench_core.py [--targets 2000] [--pairs 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.client
import importlib.metadata
import itertools
import json
import os
import platform
import resource
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from exporter.collector import render_pair
from exporter.config import Config, parse_config
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.scheduler import Scheduler
from exporter.selfmetrics import ExporterMetrics
from exporter.store import ResultStore
from exporter.web import ExporterState, make_app

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
LOOPBACK = "127.0.0.1"
LISTENER_BASE_PORT = 20000  # below the ephemeral range (32768-60999 here)
LISTENER_LIFETIME = 900.0  # the helper exits by itself after this many seconds at most
CLK_TCK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


# --------------------------------------------------------------------------------------------
# small helpers


def cpu_self() -> float:
    """User + system CPU seconds of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of another process, from /proc/PID/stat (whole thread group)."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def free_port() -> int:
    """A port of 127.0.0.1 free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def uvloop_factory() -> LoopFactory | None:
    """uvloop's loop factory, or None when it is not installed."""
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_on(factory: LoopFactory | None, coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a fresh loop of the given kind."""

    async def wrapper() -> T:
        return await coro_fn()

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(wrapper())


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    uv = uvloop_factory()
    uv_version = "not installed"
    if uv is not None:
        uv_version = importlib.metadata.version("uvloop")
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "aiohttp": aiohttp.__version__,
        "uvloop": uv_version,
        "blackbox": blackbox_version(),
    }


def blackbox_version() -> str:
    try:
        out = subprocess.run(
            [BLACKBOX, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "not available"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


# --------------------------------------------------------------------------------------------
# the listener helper process: one epoll loop accepting and closing on every port


def listener_child(count: int, base_port: int, lifetime: float) -> None:
    """Bind `count` free ports from `base_port` up, print them, accept+close until stdin ends."""
    poller = select.epoll()
    sockets: dict[int, socket.socket] = {}
    ports: list[int] = []
    port = base_port
    while len(ports) < count and port < 32768:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
            sock.listen(1024)
        except OSError:
            sock.close()  # in use: skip it
            port += 1
            continue
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        sockets[sock.fileno()] = sock
        ports.append(port)
        port += 1
    print(json.dumps({"ports": ports}), flush=True)
    stdin = sys.stdin.fileno()
    poller.register(stdin, select.EPOLLIN | select.EPOLLHUP)
    deadline = time.monotonic() + lifetime
    while (remaining := deadline - time.monotonic()) > 0:
        for fd, _ in poller.poll(min(remaining, 1.0), 512):
            if fd == stdin:
                return  # the parent closed our stdin (or wrote): stop
            listener = sockets[fd]
            for _ in range(256):
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break  # e.g. EMFILE: leave it for the next round
                conn.close()


class Listeners:
    """The helper process and its ports."""

    def __init__(self, count: int) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--listener-child",
                "--targets",
                str(count),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("listener helper failed to start")
        self.ports: list[int] = json.loads(line)["ports"]
        if len(self.ports) < count:
            raise RuntimeError(f"only {len(self.ports)} free ports found, wanted {count}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# part 1: TCP checks through the exporter (config → web app → scheduler → store → /metrics)


@dataclass
class TcpRun:
    checks: int
    seconds: float
    cpu: float
    listener_cpu: float
    ok: int
    scrapes: int
    scrape_bytes: int
    skipped_runs: float

    @property
    def rate(self) -> float:
        return self.checks / self.seconds

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu / self.checks * 1000 if self.checks else float("nan")

    @property
    def listener_per_1000(self) -> float:
        return self.listener_cpu / self.checks * 1000 if self.checks else float("nan")


def tcp_config(ports: Sequence[int], interval: float, concurrency: int) -> Config:
    document = {
        "defaults": {"interval": f"{interval}s", "timeout": f"{min(interval, 1.0)}s"},
        "scheduler": {
            "concurrency": concurrency,
            "per_host_concurrency": 1000,
            "startup_spread": f"{interval}s",
        },
        "extra_flows": [
            {"id": "bench", "check": "tcp", "targets": [f"{LOOPBACK}:{p}" for p in ports]}
        ],
    }
    return parse_config(json.dumps(document), "<bench tcp>")


def checks_done(metrics: ExporterMetrics) -> tuple[int, int]:
    """(all checks, ok checks) counted by the exporter's own counter."""
    total = 0.0
    ok = 0.0
    for result in Result:
        value = metrics.registry.get_sample_value(
            "certero_flow_exporter_checks_total", {"check": "tcp", "result": result.value}
        )
        total += value or 0.0
        if result is Result.OK:
            ok = value or 0.0
    return int(total), int(ok)


async def scrape(port: int) -> int:
    """GET /metrics over a fresh connection; the body length."""
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = await reader.read()
        finally:
            writer.close()
    return len(data)


async def exporter_window(
    config: Config, listener_pid: int, warmup: float, window: float, scrape_every: float
) -> TcpRun:
    """Run the exporter app for warmup + window seconds; measure over the window."""
    state = ExporterState(config=config, config_path=None, store=ResultStore(config.source.value))
    runner = web.AppRunner(make_app(state), access_log=None)
    await runner.setup()  # starts the scheduler (the app's cleanup context)
    try:
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        port = int(runner.addresses[0][1])
        loop = asyncio.get_running_loop()
        await asyncio.sleep(warmup)
        checks0, ok0 = checks_done(state.metrics)
        skipped0 = state.metrics.registry.get_sample_value(
            "certero_flow_exporter_skipped_runs_total"
        )
        cpu0, listener0, start = cpu_self(), cpu_of(listener_pid), loop.time()
        end = start + window
        scrapes = 0
        scrape_bytes = 0
        while (now := loop.time()) < end:
            await asyncio.sleep(min(scrape_every, end - now))
            if loop.time() < end:
                scrape_bytes = await scrape(port)
                scrapes += 1
        cpu1, listener1, stop = cpu_self(), cpu_of(listener_pid), loop.time()
        checks1, ok1 = checks_done(state.metrics)
        skipped1 = state.metrics.registry.get_sample_value(
            "certero_flow_exporter_skipped_runs_total"
        )
    finally:
        await runner.cleanup()  # cancels and awaits the scheduler
    return TcpRun(
        checks=checks1 - checks0,
        seconds=stop - start,
        cpu=cpu1 - cpu0,
        listener_cpu=listener1 - listener0,
        ok=ok1 - ok0,
        scrapes=scrapes,
        scrape_bytes=scrape_bytes,
        skipped_runs=(skipped1 or 0.0) - (skipped0 or 0.0),
    )


# --------------------------------------------------------------------------------------------
# part 2: the bare connect loop (the floor)


async def bare_loop(
    ports: Sequence[int], count: int, concurrency: int, listener_pid: int
) -> TcpRun:
    loop = asyncio.get_running_loop()
    jobs = iter(range(count))
    ok = 0

    async def worker() -> None:
        nonlocal ok
        for index in jobs:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, (LOOPBACK, ports[index % len(ports)]))
                ok += 1
            except OSError:
                pass
            finally:
                sock.close()

    cpu0, listener0, start = cpu_self(), cpu_of(listener_pid), time.perf_counter()
    async with asyncio.timeout(120):
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu1, listener1, stop = cpu_self(), cpu_of(listener_pid), time.perf_counter()
    return TcpRun(count, stop - start, cpu1 - cpu0, listener1 - listener0, ok, 0, 0, 0.0)


PACE_TICK = 0.005  # the paced loop starts the connects due in each 5 ms tick together


async def paced_loop(
    ports: Sequence[int], count: int, rate: float, concurrency: int, listener_pid: int
) -> TcpRun:
    """The bare connect, started at the exporter's offered rate instead of flat out."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    ok = 0

    async def one(port: int) -> None:
        nonlocal ok
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (LOOPBACK, port))
            ok += 1
        except OSError:
            pass
        finally:
            sock.close()
            slots.release()

    cpu0, listener0, start = cpu_self(), cpu_of(listener_pid), loop.time()
    started = 0
    async with asyncio.timeout(count / rate + 30):
        while started < count:
            due = min(count, int((loop.time() - start) * rate) + 1)
            while started < due:
                await slots.acquire()
                task = asyncio.create_task(one(ports[started % len(ports)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                started += 1
            await asyncio.sleep(PACE_TICK)
        await asyncio.gather(*tasks)
    cpu1, listener1, stop = cpu_self(), cpu_of(listener_pid), loop.time()
    return TcpRun(count, stop - start, cpu1 - cpu0, listener1 - listener0, ok, 0, 0, 0.0)


# --------------------------------------------------------------------------------------------
# part 3: Debian's blackbox_exporter through /probe


class Blackbox:
    """blackbox_exporter on 127.0.0.1 with a one-module config, stopped by `stop`."""

    def __init__(self, workdir: Path) -> None:
        config = workdir / "blackbox.yml"
        config.write_text(
            "modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 1s\n", encoding="utf-8"
        )
        self.port = free_port()
        self.log = (workdir / "blackbox.log").open("wb")
        self.process = subprocess.Popen(
            [
                BLACKBOX,
                f"--config.file={config}",
                f"--web.listen-address={LOOPBACK}:{self.port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"blackbox_exporter exited with {self.process.returncode}")
            try:
                conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=2)
                conn.request("GET", "/-/healthy")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("blackbox_exporter did not answer within 15 s")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()

    async def drive(
        self, ports: Sequence[int], count: int, concurrency: int, listener_pid: int
    ) -> TcpRun:
        """Probe every port in turn through /probe, `count` times, `concurrency` at a time."""
        port, pid = self.port, self.pid
        urls = [
            f"http://{LOOPBACK}:{port}/probe?module=tcp_connect&target={LOOPBACK}:{p}"
            for p in ports
        ]
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
        timeout = aiohttp.ClientTimeout(total=10)
        ok = 0

        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def run(jobs: Iterator[int]) -> None:
                nonlocal ok
                for index in jobs:
                    async with session.get(urls[index % len(urls)]) as response:
                        body = await response.read()
                    if b"\nprobe_success 1" in body:
                        ok += 1

            async with asyncio.timeout(60):  # warm-up: connections and Go runtime, not counted
                warm = iter(range(min(count, 500)))
                await asyncio.gather(*(run(warm) for _ in range(concurrency)))
            ok = 0
            jobs = iter(range(count))
            cpu0, listener0, start = cpu_of(pid), cpu_of(listener_pid), time.perf_counter()
            async with asyncio.timeout(120):
                await asyncio.gather(*(run(jobs) for _ in range(concurrency)))
            cpu1, listener1, stop = cpu_of(pid), cpu_of(listener_pid), time.perf_counter()
        return TcpRun(count, stop - start, cpu1 - cpu0, listener1 - listener0, ok, 0, 0, 0.0)


# --------------------------------------------------------------------------------------------
# part 4/5: /metrics for many cached pairs, in an exporter process of its own (clean RSS)

RENDER_FLOWS = (("bench_tcp", "tcp", 445), ("bench_tls", "tls", 443), ("bench_ssh", "ssh", 22))
RENDERS = 20


def render_config(pairs: int) -> Config:
    """`pairs` (flow, target) pairs on 10.x addresses, split over tcp, tls and ssh flows."""
    hosts = [f"10.{1 + i // 62500}.{(i // 250) % 250}.{i % 250 + 1}" for i in range(pairs)]
    flows = []
    share = -(-pairs // len(RENDER_FLOWS))
    for index, (flow_id, check, port) in enumerate(RENDER_FLOWS):
        chunk = hosts[index * share : (index + 1) * share]
        if chunk:
            flows.append({"id": flow_id, "check": check, "port": port, "targets": chunk})
    document = {"defaults": {"interval": "30s", "timeout": "5s"}, "extra_flows": flows}
    return parse_config(json.dumps(document), "<bench render>")


def realistic_result(check: str, index: int, now: float) -> CheckResult:
    """A result such as the check would produce: phases, peer, kernel RTT, TLS expiry."""
    jitter = (index % 97) / 97
    connect = 0.0004 + 0.003 * jitter
    if index % 50 == 7:
        return CheckResult(
            Result.TIMEOUT, 5.0, "no answer within 5s during connect", {Phase.CONNECT: 5.0}
        )
    if index % 50 == 13:
        return CheckResult(
            Result.REFUSED,
            connect,
            "connection refused",
            {Phase.CONNECT: connect},
            address=f"10.0.0.{index % 250 + 1}",
        )
    rtt = 0.0002 + 0.002 * jitter
    if check == "tls":
        tls = 0.004 + 0.01 * jitter
        return CheckResult(
            Result.OK,
            connect + tls,
            "TLSv1.3 TLS_AES_256_GCM_SHA384, certificate valid for 211 days",
            {Phase.CONNECT: connect, Phase.TLS: tls},
            peer=PeerInfo("CN=host-" + str(index)),
            address=f"10.0.0.{index % 250 + 1}",
            tls_cert_expiry_seconds=now + 211 * 86400,
            tcp_rtt_seconds=rtt,
        )
    if check == "ssh":
        handshake = 0.002 + 0.004 * jitter
        return CheckResult(
            Result.OK,
            connect + handshake,
            "SSH-2.0 OpenSSH_9.2p1 Debian-2+deb12u3",
            {Phase.CONNECT: connect, Phase.HANDSHAKE: handshake},
            peer=PeerInfo("OpenSSH", "9.2p1"),
            address=f"10.0.0.{index % 250 + 1}",
            tcp_rtt_seconds=rtt,
        )
    return CheckResult(
        Result.OK,
        connect,
        "TCP connection to 10.0.0.1:445 accepted",
        {Phase.CONNECT: connect},
        address=f"10.0.0.{index % 250 + 1}",
        tcp_rtt_seconds=rtt,
    )


def vm_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def render_child_main(pairs: int) -> None:
    """Fill a store, time renders, then serve /metrics until the parent says done."""
    out: dict[str, Any] = {}
    state = fill_store(pairs, out)
    time_renders(state, out)
    await serve_until_done(state, out)
    out["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(out), flush=True)


def fill_store(pairs: int, out: dict[str, Any]) -> ExporterState:
    """Parse a config of `pairs` pairs and record a result for each, twice; time it."""
    start = time.perf_counter()
    config = render_config(pairs)
    out["parse_config_s"] = time.perf_counter() - start
    out["pairs"] = len(config.jobs)
    store = ResultStore(config.source.value)
    state = ExporterState(config=config, config_path=None, store=store)
    state.scheduler = Scheduler(config, store, state.metrics)  # its heap, not run: no traffic
    now = time.time()
    results = [realistic_result(job.check, i, now) for i, job in enumerate(config.jobs)]
    start = time.perf_counter()
    for job, result in zip(config.jobs, results, strict=True):
        store.record(job, result, now)
    out["record_first_us"] = (time.perf_counter() - start) / len(results) * 1e6
    start = time.perf_counter()
    for job, result in zip(config.jobs, results, strict=True):
        store.record(job, result, now + 30)  # steady state: the pair's entry exists
    out["record_us"] = (time.perf_counter() - start) / len(results) * 1e6
    labels = [store.labels(job) for job in config.jobs]
    start = time.perf_counter()
    for label, result in zip(labels, results, strict=True):
        render_pair(label, result, now, None)
    out["render_pair_us"] = (time.perf_counter() - start) / len(results) * 1e6
    out["rss_filled_kb"] = vm_rss_kb()
    return state


def time_renders(state: ExporterState, out: dict[str, Any]) -> None:
    """`store.render()` and the /metrics handler's body, RENDERS times each."""
    store = state.store
    times = []
    body = b""
    for _ in range(RENDERS):
        start = time.perf_counter()
        body = store.render()
        times.append(time.perf_counter() - start)
    out["render_ms"] = [t * 1000 for t in times]
    out["render_bytes"] = len(body)
    out["series"] = sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))
    handler = []
    longest_part = 0.0
    size = 0
    for _ in range(RENDERS):
        # As web.metrics produces its body: the store's parts, the catalogue, the self metrics.
        start = time.perf_counter()
        size = 0
        parts = itertools.chain(store.render_parts(), [state.catalogue])
        while True:
            part_start = time.perf_counter()
            part = next(parts, None)
            if part is None:
                break
            longest_part = max(longest_part, time.perf_counter() - part_start)
            size += len(part)
        size += len(state.metrics.render())
        handler.append(time.perf_counter() - start)
    out["handler_body_ms"] = [t * 1000 for t in handler]
    out["handler_longest_part_ms"] = longest_part * 1000
    out["metrics_bytes"] = size


async def serve_until_done(state: ExporterState, out: dict[str, Any]) -> None:
    """Serve /metrics on 127.0.0.1 and watch event-loop stalls until stdin gives a line."""
    runner = web.AppRunner(make_app(state, run_scheduler=False), access_log=None)
    await runner.setup()
    stall = 0.0
    serving = True

    async def ticker() -> None:
        nonlocal stall
        while serving:
            begin = time.perf_counter()
            await asyncio.sleep(0.001)
            stall = max(stall, time.perf_counter() - begin - 0.001)

    try:
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        stall = 0.0
        print(json.dumps({"port": int(runner.addresses[0][1])}), flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        async with asyncio.timeout(120):
            await reader.readline()  # the parent is done scraping
        serving = False
        await tick
    finally:
        await runner.cleanup()
    out["max_stall_ms"] = stall * 1000


@dataclass
class RenderRun:
    stats: dict[str, Any]
    http_ms: list[float] = field(default_factory=list)
    content_encoding: str = ""


def render_run(pairs: int, scrapes: int) -> RenderRun:
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--render-child", "--pairs", str(pairs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("render child failed")
        port = int(json.loads(line)["port"])
        http_ms = []
        encoding = ""
        for _ in range(scrapes):
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
            start = time.perf_counter()
            conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            response = conn.getresponse()
            response.read()
            http_ms.append((time.perf_counter() - start) * 1000)
            encoding = response.getheader("Content-Encoding") or "none"
            conn.close()
        process.stdin.write("done\n")
        process.stdin.flush()
        stats = json.loads(process.stdout.readline())
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    return RenderRun(stats, http_ms, encoding)


# --------------------------------------------------------------------------------------------
# orchestration and report


@dataclass
class Figures:
    tcp: dict[str, list[TcpRun]] = field(default_factory=dict)
    render: list[RenderRun] = field(default_factory=list)

    def add(self, name: str, run: TcpRun) -> None:
        self.tcp.setdefault(name, []).append(run)


def bench(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    info = machine()
    uv = uvloop_factory()
    loops: list[tuple[str, LoopFactory | None]] = [("asyncio", None)]
    if uv is not None:
        loops.append(("uvloop", uv))
    figures = Figures()
    started = time.perf_counter()
    listeners = Listeners(args.targets)
    workdir = Path(tempfile.mkdtemp(prefix="bench-core-"))
    blackbox: Blackbox | None = None
    try:
        ports = listeners.ports
        config = tcp_config(ports, args.interval, args.concurrency)
        if Path(BLACKBOX).exists():
            blackbox = Blackbox(workdir)
        for run in range(args.runs):
            count = 0
            for name, factory in loops:
                result = run_on(
                    factory,
                    functools.partial(
                        exporter_window,
                        config,
                        listeners.pid,
                        args.warmup,
                        args.window,
                        args.scrape_every,
                    ),
                )
                figures.add(f"exporter/{name}", result)
                count = count or result.checks
                log(f"run {run + 1}: exporter {name}", result)
            for name, factory in loops:
                result = run_on(
                    factory,
                    functools.partial(bare_loop, ports, count, args.concurrency, listeners.pid),
                )
                figures.add(f"bare/{name}", result)
                log(f"run {run + 1}: bare {name}", result)
            rate = args.targets / args.interval
            paced_count = max(1, int(rate * args.paced_seconds))
            for name, factory in loops:
                result = run_on(
                    factory,
                    functools.partial(
                        paced_loop, ports, paced_count, rate, args.concurrency, listeners.pid
                    ),
                )
                figures.add(f"paced/{name}", result)
                log(f"run {run + 1}: paced bare {name}", result)
            if blackbox is not None:
                result = run_on(
                    uv,
                    functools.partial(
                        blackbox.drive, ports, count, args.concurrency, listeners.pid
                    ),
                )
                figures.add("blackbox", result)
                log(f"run {run + 1}: blackbox", result)
            rendered = render_run(args.pairs, args.http_scrapes)
            figures.render.append(rendered)
            log(f"run {run + 1}: render {median(rendered.stats['render_ms']):.1f} ms median")
    finally:
        if blackbox is not None:
            blackbox.stop()
        listeners.stop()
    elapsed = time.perf_counter() - started
    return report(args, info, figures, elapsed), raw(figures, info)


def log(text: str, run: TcpRun | None = None) -> None:
    if run is not None:
        text += f": {run.rate:.0f}/s, {run.cpu_per_1000:.3f} CPU-s per 1,000, {run.ok} ok"
    print(text, file=sys.stderr, flush=True)


def fmt_runs(values: Sequence[float], digits: int) -> str:
    spec = f"{{:.{digits}f}}"
    middle = spec.format(median(values))
    if len(values) < 2:
        return f"**{middle}**"
    return f"**{middle}** ({', '.join(spec.format(v) for v in values)})"


def report(args: argparse.Namespace, info: dict[str, str], figures: Figures, elapsed: float) -> str:
    lines = [
        "# bench_core results",
        "",
        f"Machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}, "
        f"Python {info['python']}, aiohttp {info['aiohttp']}, uvloop {info['uvloop']}; "
        f"{info['blackbox']}.",
        "",
        f"Command: `.venv/bin/python bench/bench_core.py --targets {args.targets} "
        f"--pairs {args.pairs} --runs {args.runs}` (window {args.window:g} s after "
        f"{args.warmup:g} s warm-up, interval {args.interval:g} s, concurrency "
        f"{args.concurrency}, /metrics scraped every {args.scrape_every:g} s). "
        f"Figures: **median** (each run). Total time {elapsed:.0f} s.",
        "",
        f"## TCP connect to {args.targets} loopback listeners",
        "",
        "| what | checks/s | CPU-s per 1,000 | x bare loop | x paced bare loop | x blackbox "
        "| ok | listener CPU-s per 1,000 (not counted) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    bb = figures.tcp.get("blackbox", [])
    names = {
        "exporter/asyncio": "exporter scheduler + store + scrapes, asyncio",
        "exporter/uvloop": "exporter scheduler + store + scrapes, uvloop",
        "bare/asyncio": "bare `sock_connect` loop, asyncio (floor)",
        "bare/uvloop": "bare `sock_connect` loop, uvloop (floor)",
        "paced/asyncio": "bare loop paced at the offered rate, asyncio",
        "paced/uvloop": "bare loop paced at the offered rate, uvloop",
        "blackbox": "blackbox_exporter 0.23 `/probe` (its process CPU)",
    }
    for key, title in names.items():
        runs = figures.tcp.get(key)
        if not runs:
            continue
        cpu = median([r.cpu_per_1000 for r in runs])
        loop_name = key.split("/")[-1]
        vs_bare = ratio(cpu, figures.tcp.get(f"bare/{loop_name}"), key.startswith("exporter"))
        vs_paced = ratio(cpu, figures.tcp.get(f"paced/{loop_name}"), key.startswith("exporter"))
        vs_bb = ratio(cpu, bb, key != "blackbox")
        ok = sum(r.ok for r in runs) / max(1, sum(r.checks for r in runs)) * 100
        lines.append(
            f"| {title} | {fmt_runs([r.rate for r in runs], 0)} "
            f"| {fmt_runs([r.cpu_per_1000 for r in runs], 3)} | {vs_bare} | {vs_paced} | {vs_bb} "
            f"| {ok:.1f} % | {median([r.listener_per_1000 for r in runs]):.3f} |"
        )
    exporter_runs = figures.tcp.get("exporter/asyncio", [])
    if exporter_runs:
        scrape = exporter_runs[-1]
        lines += [
            "",
            f"Offered load: {args.targets} pairs every {args.interval:g} s = "
            f"{args.targets / args.interval:.0f} checks/s. Exporter windows: "
            f"{scrape.scrapes} scrapes of {scrape.scrape_bytes / 1e6:.2f} MB each; skipped runs "
            f"(previous run still going) per window: "
            f"{', '.join(f'{r.skipped_runs:.0f}' for r in exporter_runs)}.",
        ]
    if figures.render:
        stats = [r.stats for r in figures.render]
        render_medians = [median(s["render_ms"]) for s in stats]
        render_max = max(max(s["render_ms"]) for s in stats)
        handler = [median(s["handler_body_ms"]) for s in stats]
        http_ms = [median(r.http_ms) for r in figures.render]
        lines += [
            "",
            f"## /metrics for {stats[0]['pairs']} cached (flow, target) pairs "
            "(tcp/tls/ssh thirds, 4 % failing)",
            "",
            "| what | value |",
            "|---|---|",
            f"| `store.render()`, median of {RENDERS} | {fmt_runs(render_medians, 1)} ms |",
            f"| `store.render()`, max of all | {render_max:.1f} ms |",
            f"| `store.render()` size | {stats[0]['render_bytes'] / 1e6:.2f} MB "
            f"({stats[0]['render_bytes'] / stats[0]['pairs']:.0f} B per pair) |",
            f"| series | {stats[0]['series']} ({stats[0]['series'] / stats[0]['pairs']:.1f} "
            "per pair) |",
            f"| handler body, all parts (render + catalogue + self metrics), median "
            f"| {fmt_runs(handler, 1)} ms |",
            f"| longest single part (the loop is blocked for one part at a time) "
            f"| {max(s['handler_longest_part_ms'] for s in stats):.1f} ms |",
            f"| full `GET /metrics` over HTTP, client-observed, median of "
            f"{args.http_scrapes} | {fmt_runs(http_ms, 1)} ms "
            f"({stats[0]['metrics_bytes'] / 1e6:.2f} MB, Content-Encoding "
            f"{figures.render[0].content_encoding} to `Accept-Encoding: gzip`) |",
            f"| longest event-loop stall while serving those GETs "
            f"| {fmt_runs([s['max_stall_ms'] for s in stats], 1)} ms |",
            f"| record one result (`store.record`, steady state) "
            f"| {fmt_runs([s['record_us'] for s in stats], 1)} µs |",
            f"| record one result (first of its pair) "
            f"| {fmt_runs([s['record_first_us'] for s in stats], 1)} µs |",
            f"| `render_pair` alone | {fmt_runs([s['render_pair_us'] for s in stats], 1)} µs |",
            f"| `parse_config` of {stats[0]['pairs']} pairs "
            f"| {fmt_runs([s['parse_config_s'] for s in stats], 2)} s |",
            f"| RSS after filling the store (VmRSS) "
            f"| {fmt_runs([s['rss_filled_kb'] / 1024 for s in stats], 0)} MB |",
            f"| peak RSS of that exporter process (ru_maxrss, after scrapes) "
            f"| {fmt_runs([s['maxrss_kb'] / 1024 for s in stats], 0)} MB |",
        ]
    return "\n".join(lines) + "\n"


def ratio(cpu: float, runs: Sequence[TcpRun] | None, wanted: bool) -> str:
    """`cpu` over the median CPU per 1,000 of `runs`, as text."""
    if not wanted or not runs:
        return "—"
    return f"{cpu / median([r.cpu_per_1000 for r in runs]):.2f}"


def raw(figures: Figures, info: dict[str, str]) -> dict[str, Any]:
    return {
        "machine": info,
        "tcp": {
            name: [
                {
                    "checks": r.checks,
                    "seconds": r.seconds,
                    "cpu": r.cpu,
                    "ok": r.ok,
                    "listener_cpu": r.listener_cpu,
                    "rate": r.rate,
                    "cpu_per_1000": r.cpu_per_1000,
                }
                for r in runs
            ]
            for name, runs in figures.tcp.items()
        },
        "render": [
            {"stats": r.stats, "http_ms": r.http_ms, "content_encoding": r.content_encoding}
            for r in figures.render
        ],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--targets", type=int, default=2000, help="loopback TCP listeners")
    parser.add_argument("--pairs", type=int, default=10000, help="cached pairs for /metrics")
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are reported")
    parser.add_argument("--window", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds before the window")
    parser.add_argument("--interval", type=float, default=1.0, help="check interval, seconds")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument(
        "--paced-seconds", type=float, default=5.0, help="length of the paced bare loop"
    )
    parser.add_argument("--scrape-every", type=float, default=1.0, help="/metrics scrape period")
    parser.add_argument("--http-scrapes", type=int, default=5, help="GET /metrics per run")
    parser.add_argument("--listener-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--render-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.targets <= 10000 or args.pairs < 1 or args.runs < 1:
        parser.error("--targets must be 1..10000, --pairs and --runs at least 1")
    if not 0 < args.window <= 60 or not 0 <= args.warmup <= 30 or not 0 < args.paced_seconds <= 60:
        parser.error("--window and --paced-seconds must be in (0, 60], --warmup in [0, 30]")
    if not 0 < args.interval <= 60 or not 1 <= args.concurrency <= 1000:
        parser.error("--interval must be in (0, 60] and --concurrency in 1..1000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.listener_child:
        listener_child(args.targets, LISTENER_BASE_PORT, LISTENER_LIFETIME)
        return 0
    if args.render_child:
        asyncio.run(render_child_main(args.pairs))
        return 0
    text, data = bench(args)
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "latest.md").write_text(text, encoding="utf-8")
    (RESULTS_DIR / "latest.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    log(f"written to {RESULTS_DIR / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
