"""Reloading the largest supported config while `/metrics` is scraped, and hostile files.

1. An exporter process holds a config of `--pairs` (flow, target) pairs (ten `tcp` flows over
   loopback addresses 127.x.y.z port 9, interval 1 h) with every pair's result in the store, so
   each scrape carries them all. Its scheduler runs (1 h start-up spread: a few loopback
   refusals a second). A 1 ms ticker in that process records the longest event-loop stall.
   The bench scrapes `/metrics` back to back (gzip, as Prometheus asks, or `--encoding
   identity`), first without reloads, then during `--reloads` `POST /-/reload`s alternating
   between two configs that differ in one flow (10 % of the pairs removed, as many added).
   Reported: reload time,
   scrape time, the longest wait between two received pieces of a scrape, the longest loop
   stall, and the process's peak RSS. Side by side, the same with the new config applied in
   one go (`APPLY_STEP_PAIRS` set above the pair count) instead of in steps.
2. `validate` on each hostile file (and on the big config), run from a small parent that
   reports the child's own wall time and peak RSS (tests/peers/measured.py).

All traffic goes to 127.0.0.0/8; every loop is bounded in count and time.

    .venv/bin/python bench/bench_reload.py [--pairs 100000] [--reloads 5] [--encoding gzip]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web as aioweb

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
MEASURED = ROOT / "tests" / "peers" / "measured.py"
FLOWS = 10
READY_DEADLINE_S = 120.0
RELOAD_DEADLINE_S = 120.0
SCRAPE_TIMEOUT_S = 60.0
CHUNK = 64 * 1024
HEAD = "source: endpoint_server\ndefaults: {interval: 10s, timeout: 3s}\n"


# --------------------------------------------------------------------------------------------
# configs and hostile files


def write_big_config(path: Path, pairs: int, variant: int) -> None:
    """`pairs` loopback targets in ten flows; `variant` 1 moves the last flow to other hosts."""
    per_flow = pairs // FLOWS
    lines = [
        "source: endpoint_server",
        "defaults: {interval: 1h, timeout: 5s}",
        "scheduler: {startup_spread: 1h}",
        "extra_flows:",
    ]
    for flow in range(FLOWS):
        second = 10 + flow + (FLOWS if variant and flow == FLOWS - 1 else 0)
        lines.append(f"  - id: bulk_{flow}\n    check: tcp\n    port: 9\n    targets:")
        lines += [f"      - 127.{second}.{n >> 8 & 255}.{n & 255}" for n in range(per_flow)]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic, as configuration management does


def laughs(levels: int, width: int = 10) -> str:
    lines = [HEAD, 'l0: &l0 ["lol"' + ', "lol"' * (width - 1) + "]\n"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]\n")
    return "".join(lines)


def hostile_files(directory: Path) -> list[tuple[str, Path]]:
    """The reproducers' files: bombs, special files, deep nesting, bad bytes, 50 MB files."""
    made: list[tuple[str, Path]] = []

    def text(name: str, content: str) -> None:
        (directory / name).write_text(content, encoding="utf-8")
        made.append((name, directory / name))

    text("laughs9.yaml (billion laughs, 614 B)", laughs(9))
    fifo = directory / "fifo.yaml"
    os.mkfifo(fifo)
    made.append(("fifo.yaml (no writer)", fifo))
    zero = directory / "dev_zero.yaml"
    zero.symlink_to("/dev/zero")
    made.append(("dev_zero.yaml (symlink to /dev/zero)", zero))
    text("deep10k_flow.yaml", HEAD + "x: " + "[" * 10000 + "]" * 10000 + "\n")
    text("deep10k_map.yaml", HEAD + "x: " + "{a: " * 10000 + "1" + "}" * 10000 + "\n")
    non_utf8 = directory / "non_utf8.yaml"
    non_utf8.write_bytes(b"source: endpoint_server\n# caf\xe9 \xff\xfe latin-1 comment\n")
    made.append(("non_utf8.yaml", non_utf8))
    text("empty.yaml", "")
    (directory / "a_directory.yaml").mkdir()
    made.append(("a_directory.yaml", directory / "a_directory.yaml"))
    big = directory / "big50_targets.yaml"
    with big.open("w", encoding="utf-8") as file:
        file.write(HEAD + "extra_flows:\n  - id: big\n    check: tcp\n    port: 9\n    targets:\n")
        for n in range(2_400_000):
            file.write(f"      - 127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}\n")
    made.append(("big50_targets.yaml (2.4 M targets, 50 MB)", big))
    many = directory / "many_networks.yaml"
    networks = ", ".join(f"10.{16 * (i % 16)}.0.0/12" for i in range(60))
    many.write_text(
        "scheduler: {max_hosts_per_network: 1048576}\n"
        f"extra_flows:\n  - {{id: wide, check: tcp, port: 9, targets: [{networks}]}}\n",
        encoding="utf-8",
    )
    made.append(("many_networks.yaml (60 x /12, 63 M pairs, 1 KB)", many))
    return made


@dataclass
class Validated:
    name: str
    exit: int | None
    wall_s: float
    maxrss_mb: float
    message: str


def validate(name: str, path: Path, directory: Path) -> Validated:
    out, err = directory / "validate.out", directory / "validate.err"
    command = [sys.executable, "-m", "exporter", "validate", str(path)]
    report = subprocess.run(
        [sys.executable, str(MEASURED), "60", str(out), str(err), *command],
        capture_output=True,
        check=True,
        timeout=120,
        cwd=ROOT,
    )
    figures = json.loads(report.stdout)
    text = (out.read_text(encoding="utf-8") + err.read_text(encoding="utf-8")).strip()
    message = text.replace(str(path), "FILE")
    if "Traceback" in text:
        message = "TRACEBACK: " + text.splitlines()[-1]
    rss_mb = figures["maxrss_kib"] / 1024
    return Validated(name, figures["exit"], figures["wall_s"], rss_mb, message)


# --------------------------------------------------------------------------------------------
# the exporter process (run as this script with --child)


def child(config_path: str, port: int, step: int) -> None:
    """Serve a filled store for `config_path`; report the peak RSS as JSON on SIGTERM."""
    from exporter import web  # noqa: PLC0415 - the parent does not need the exporter loaded

    web.APPLY_STEP_PAIRS = step
    loop = web._new_loop()  # the loop `serve` runs on
    asyncio.set_event_loop(loop)
    loop.run_until_complete(serve_filled(web, config_path, port))
    print(json.dumps({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


async def serve_filled(web: Any, config_path: str, port: int) -> None:
    from exporter.config import load_config  # noqa: PLC0415
    from exporter.result import CheckResult, Phase, Result  # noqa: PLC0415
    from exporter.store import ResultStore  # noqa: PLC0415

    config = load_config(config_path)
    store = ResultStore(config.source.value)
    refused = CheckResult(
        Result.REFUSED,
        0.0002,
        "connection refused (port closed or reset by a firewall)",
        phases={Phase.CONNECT: 0.0002},
    )
    now = time.time()
    for job in config.jobs:
        store.record(job, refused, now)
    state = web.ExporterState(config=config, config_path=config_path, store=store)
    app = web.make_app(state)
    probe = LagProbe()
    app.router.add_get("/bench/lag", probe.handler)
    runner = aioweb.AppRunner(app)
    await runner.setup()
    await aioweb.TCPSite(runner, "127.0.0.1", port).start()
    ticker = asyncio.create_task(probe.run())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    ticker.cancel()
    await runner.cleanup()


class LagProbe:
    """A 1 ms ticker: the longest time the event loop took to come back, since the last read."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.001)
            self.longest = max(self.longest, loop.time() - before - 0.001)

    async def handler(self, request: aioweb.Request) -> aioweb.Response:
        longest, self.longest = self.longest, 0.0
        return aioweb.json_response({"longest_s": longest})


# --------------------------------------------------------------------------------------------
# the client side


@dataclass
class Scrape:
    seconds: float
    longest_gap_s: float
    size: int


def scrape(port: int, encoding: str) -> Scrape:
    """One `/metrics`; the longest wait between two received pieces of the body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=SCRAPE_TIMEOUT_S)
    started = last = time.monotonic()
    gap = 0.0
    size = 0
    try:
        connection.request("GET", "/metrics", headers={"Accept-Encoding": encoding})
        response = connection.getresponse()
        while piece := response.read1(CHUNK):
            now = time.monotonic()
            gap = max(gap, now - last)
            last = now
            size += len(piece)
    finally:
        connection.close()
    return Scrape(time.monotonic() - started, gap, size)


def post_reload(port: int) -> tuple[int, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=RELOAD_DEADLINE_S)
    started = time.monotonic()
    try:
        connection.request("POST", "/-/reload")
        response = connection.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    finally:
        connection.close()


def loop_lag(port: int) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=SCRAPE_TIMEOUT_S)
    try:
        connection.request("GET", "/bench/lag")
        longest: float = json.loads(connection.getresponse().read())["longest_s"]
        return longest
    finally:
        connection.close()


class Scraper(threading.Thread):
    """Scrapes back to back until stopped (at most `limit` scrapes)."""

    def __init__(self, port: int, encoding: str, limit: int = 1000) -> None:
        super().__init__(daemon=True)
        self.port, self.encoding, self.limit = port, encoding, limit
        self.stopping = threading.Event()
        self.scrapes: list[Scrape] = []

    def run(self) -> None:
        while not self.stopping.is_set() and len(self.scrapes) < self.limit:
            self.scrapes.append(scrape(self.port, self.encoding))

    def stop(self) -> list[Scrape]:
        self.stopping.set()
        self.join(SCRAPE_TIMEOUT_S * 2)
        return self.scrapes


@dataclass
class Variant:
    title: str
    step: int
    baseline: list[Scrape] = field(default_factory=list)
    baseline_lag_s: float = 0.0
    during: list[Scrape] = field(default_factory=list)
    reload_s: list[float] = field(default_factory=list)
    reload_lag_s: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    maxrss_mb: float = 0.0
    ready_s: float = 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def exporter_process(config: Path, port: int, step: int) -> Iterator[subprocess.Popen[str]]:
    argv = [sys.executable, str(Path(__file__)), "--child", str(config), str(port), str(step)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def run_variant(variant: Variant, config: Path, args: argparse.Namespace) -> None:
    write_big_config(config, args.pairs, 0)
    port = free_port()
    started = time.monotonic()
    with exporter_process(config, port, variant.step) as process:
        assert process.stdout is not None
        line = wait_line(process, READY_DEADLINE_S)
        if line != "ready":
            raise RuntimeError(f"exporter not ready: {line!r}")
        variant.ready_s = time.monotonic() - started
        loop_lag(port)  # reset
        variant.baseline = [scrape(port, args.encoding) for _ in range(args.baseline_scrapes)]
        variant.baseline_lag_s = loop_lag(port)
        for index in range(args.reloads):
            write_big_config(config, args.pairs, (index + 1) % 2)
            loop_lag(port)
            scraper = Scraper(port, args.encoding)
            scraper.start()
            status, seconds = post_reload(port)
            variant.during += scraper.stop()
            variant.reload_lag_s.append(loop_lag(port))
            variant.statuses.append(status)
            variant.reload_s.append(seconds)
            log(f"  {variant.title}: reload {index + 1}: HTTP {status} in {seconds:.2f} s")
        process.terminate()
        out, _ = process.communicate(timeout=60)
    variant.maxrss_mb = json.loads(out.strip().splitlines()[-1])["maxrss_kib"] / 1024


def wait_line(process: subprocess.Popen[str], deadline_s: float) -> str:
    """The child's first stdout line, or an error after the deadline."""
    stdout = process.stdout
    assert stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(deadline_s)
    return lines[0].strip() if lines else f"nothing within {deadline_s} s"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def report(
    args: argparse.Namespace,
    variants: list[Variant],
    validated: list[Validated],
    big_size: int,
    elapsed: float,
) -> str:
    lines = [
        "# bench_reload results",
        "",
        f"Machine: {len(os.sched_getaffinity(0))} CPUs, Linux {os.uname().release}, "
        f"Python {sys.version.split()[0]}.",
        "",
        f"Command: `.venv/bin/python bench/bench_reload.py --pairs {args.pairs} "
        f"--reloads {args.reloads} --baseline-scrapes {args.baseline_scrapes} "
        f"--encoding {args.encoding}`. "
        f"Total time {elapsed:.0f} s.",
        "",
        f"## Reloading {args.pairs} pairs ({big_size / 1e6:.1f} MB of YAML) under scrapes",
        "",
        "| what | " + " | ".join(v.title for v in variants) + " |",
        "|---|" + "---|" * len(variants),
    ]

    def row(title: str, cell: Callable[[Variant], str]) -> None:
        lines.append(f"| {title} | " + " | ".join(cell(v) for v in variants) + " |")

    row("start to ready (load, fill the store)", lambda v: f"{v.ready_s:.1f} s")
    row(
        "reload (POST /-/reload answered), each",
        lambda v: ", ".join(f"{s:.2f} s" for s in v.reload_s),
    )
    row("reload statuses", lambda v: ", ".join(str(s) for s in v.statuses))
    row(
        f"scrape size ({args.encoding})",
        lambda v: f"{max(s.size for s in v.baseline) / 1e6:.1f} MB" if v.baseline else "-",
    )
    row(
        "scrape time without reloads, max",
        lambda v: ms(max(s.seconds for s in v.baseline)) if v.baseline else "-",
    )
    row(
        "scrape time during reloads, max (n)",
        lambda v: f"{ms(max(s.seconds for s in v.during))} ({len(v.during)})" if v.during else "-",
    )
    row(
        "longest wait between two pieces of a scrape, without reloads",
        lambda v: ms(max(s.longest_gap_s for s in v.baseline)) if v.baseline else "-",
    )
    row(
        "**longest wait between two pieces of a scrape, during reloads**",
        lambda v: f"**{ms(max(s.longest_gap_s for s in v.during))}**" if v.during else "-",
    )
    row("longest event-loop stall, without reloads", lambda v: ms(v.baseline_lag_s))
    row(
        "**longest event-loop stall, during each reload**",
        lambda v: "**" + ", ".join(ms(s) for s in v.reload_lag_s) + "**",
    )
    row("peak RSS of the exporter process (ru_maxrss)", lambda v: f"{v.maxrss_mb:.0f} MB")
    lines += [
        "",
        "## `validate` on hostile files (wall time and peak RSS of the validate process alone)",
        "",
        "| file | exit | wall | peak RSS | output |",
        "|---|---|---|---|---|",
    ]
    for item in validated:
        message = item.message.replace("|", "\\|").replace("\n", " / ")
        lines.append(
            f"| {item.name} | {item.exit} | {item.wall_s:.2f} s | {item.maxrss_mb:.0f} MB "
            f"| {message} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=100_000, help="pairs of the big config")
    parser.add_argument("--reloads", type=int, default=5, help="reloads per variant")
    parser.add_argument("--baseline-scrapes", type=int, default=3, help="scrapes before reloads")
    parser.add_argument(
        "--encoding",
        choices=["gzip", "identity"],
        default="gzip",
        help="Accept-Encoding of the scrapes (Prometheus asks for gzip)",
    )
    return parser.parse_args(argv)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    args = parse_args()
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    try:
        config = directory / "big.yaml"
        from exporter.web import APPLY_STEP_PAIRS  # noqa: PLC0415

        variants = [
            Variant(f"applied in steps of {APPLY_STEP_PAIRS} pairs", APPLY_STEP_PAIRS),
            Variant("applied at once", args.pairs * 10),
        ]
        for variant in variants:
            log(f"variant: {variant.title}")
            run_variant(variant, config, args)
        big_size = config.stat().st_size
        hostile = directory / "hostile"
        hostile.mkdir()
        files = [*hostile_files(hostile), (f"big.yaml ({args.pairs} pairs, valid)", config)]
        validated = []
        for name, path in files:
            validated.append(validate(name, path, directory))
            log(f"  validate {name}: {validated[-1].wall_s:.2f} s")
        text = report(args, variants, validated, big_size, time.monotonic() - started)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = f"reload-{args.encoding}.md"
    (RESULTS_DIR / name).write_text(text, encoding="utf-8")
    log(f"written to {RESULTS_DIR / name}")


if __name__ == "__main__":
    main()
