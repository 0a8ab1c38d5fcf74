"""CPU per 1,000 ICMP echoes: one shared socket per family against a socket per check.

Both run through `run_check` with a raw IPv4 socket (this bench runs as root), to distinct
127.78.x.y loopback addresses, with `--concurrency` checks in flight at once (workers that each
run checks back to back, as the scheduler's concurrency limit does), `--echoes` echoes in all
per cell, in a fresh event loop per cell:

- `shared`: the `icmp` check as it ships: one socket, read once per packet by a loop reader,
  requests matched by sequence number (`exporter/checks/icmp.py`).
- `per-check`: a compact copy of the check as it was before (icmplib's asyncio socket): each
  run opens its own raw socket, sends one request and reads packets with
  `wait_for(loop.sock_recv(...))` until one carries its identifier and sequence number. Every
  raw socket receives a copy of every ICMP packet: the kernel copies each packet to every
  socket open, and a run reads the copies queued before its own reply. Over loopback the reply
  arrives within `sendto`, so most of that N² cost is the kernel's (system CPU); over a real
  network each run would also read, in Python, every reply that arrives during its wait.

Reported per cell: echoes ok (the rest timed out: a raw socket's receive buffer overflowed),
wall time, CPU-s (user + sys of this process, `getrusage`) per 1,000 echoes, the most ICMP
sockets this process held at once, and the round-trip times the checks reported (the true
loopback RTT is a few microseconds; the rest is time the reply waited for the event loop).
Each cell runs `--runs` times, the two approaches alternating. All traffic goes to
127.0.0.0/8; every loop is bounded in count (`--echoes`) and in time (the check timeout, and
`CELL_DEADLINE_S` per cell).

    .venv/bin/python bench/bench_icmp.py [--echoes 5000] [--concurrency 100 1000] [--runs 3]
                                         [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import socket
import statistics
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import uvloop

from exporter.checks import CHECKS, CheckContext, CheckSpec, Target
from exporter.checks.icmp import IcmpSettings, echo_payload, icmp_checksum
from exporter.errors import CheckFailure
from exporter.result import CheckResult, Phase, Result
from exporter.runner import run_check

CHECK_TIMEOUT_S = 5.0
SAMPLE_EVERY_S = 0.1
CELL_DEADLINE_S = 300.0  # a cell still running after this is reported as such, not awaited
RAW = IcmpSettings(privileged="raw")


async def run_per_check(
    target: Target, settings: IcmpSettings, context: CheckContext
) -> CheckResult:
    """The check before the shared socket: one raw socket per run, every packet read by all."""
    loop = asyncio.get_running_loop()
    identifier = random.randrange(0x10000)
    payload = echo_payload(settings.payload_size)
    header = struct.pack("!BBHHH", 8, 0, 0, identifier, identifier)
    checksum = icmp_checksum(header + payload)
    packet = header[:2] + checksum.to_bytes(2, "big") + header[4:] + payload
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    try:
        with context.phase(Phase.HANDSHAKE):
            sock.sendto(packet, (target.host, 0))
            started = time.perf_counter()
            deadline = started + context.remaining()
            while (remaining := deadline - time.perf_counter()) > 0:
                try:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 1024), remaining)
                except TimeoutError:
                    break
                icmp = data[(data[0] & 0x0F) * 4 :]
                if len(icmp) >= 8 and icmp[0] == 0 and icmp[4:8] == header[4:8]:
                    rtt = time.perf_counter() - started
                    return context.ok(f"echo reply from {target.host} in {rtt * 1000:.2f} ms")
    finally:
        sock.close()
    raise CheckFailure(Result.TIMEOUT, f"no echo reply from {target.host}")


PER_CHECK = CheckSpec("icmp_per_check", IcmpSettings, run_per_check, "socket per check")


@dataclass
class Cell:
    """What one (approach, concurrency) run measured."""

    approach: str
    concurrency: int
    echoes: int
    results: Counter[str]
    wall_s: float
    user_s: float
    system_s: float
    most_sockets: int
    rtts_ms: list[float]

    def per_thousand(self, seconds: float) -> float:
        """CPU-s per 1,000 echoes."""
        return seconds * 1000 / self.echoes

    @property
    def cpu_per_thousand(self) -> float:
        return self.per_thousand(self.user_s + self.system_s)


def cpu_seconds() -> tuple[float, float]:
    """User and system CPU of this process so far (all threads; softirq work of loopback
    delivery is charged to the sending process, so the kernel's copies count)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def icmp_sockets_held() -> int:
    """Raw ICMP sockets of this process: its socket inodes listed in /proc/net/raw."""
    mine: set[int] = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:["):
                mine.add(int(link[8:-1]))
    with open("/proc/self/net/raw", encoding="ascii") as table:
        raw = {
            int(fields[9])
            for fields in (line.split() for line in table.readlines()[1:])
            if int(fields[1].rsplit(":", 1)[1], 16) == socket.IPPROTO_ICMP
        }
    return len(mine & raw)


async def measure(
    approach: str, spec: CheckSpec[IcmpSettings], concurrency: int, echoes: int
) -> Cell:
    """Run `echoes` checks, `concurrency` at a time, counting ICMP sockets now and then.

    The first count is taken once every worker has sent its first request; the CPU the counts
    take is not counted.
    """
    hosts = [f"127.78.{n // 250}.{n % 250 + 1}" for n in range(echoes)]
    queue = iter(hosts)
    results: Counter[str] = Counter()
    rtts_ms: list[float] = []
    most_sockets = 0

    async def worker() -> None:
        for host in queue:  # the shared iterator hands each host to one worker
            outcome = await run_check(spec, Target(host), RAW, CHECK_TIMEOUT_S)
            results[outcome.result.result.value] += 1
            if outcome.result.ok:  # "echo reply from HOST in 0.05 ms ..."
                rtts_ms.append(float(outcome.result.detail.split(" in ")[1].split(" ms")[0]))

    sampler_user = sampler_system = 0.0

    def sample() -> None:
        nonlocal most_sockets, sampler_user, sampler_system
        user_before, system_before = cpu_seconds()
        most_sockets = max(most_sockets, icmp_sockets_held())
        user_after, system_after = cpu_seconds()
        sampler_user += user_after - user_before
        sampler_system += system_after - system_before

    cpu_before, wall_before = cpu_seconds(), time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(0)  # every worker has sent its first request and waits for the reply
    sample()
    pending = set(workers)
    deadline = time.perf_counter() + CELL_DEADLINE_S
    while pending and time.perf_counter() < deadline:
        _, pending = await asyncio.wait(pending, timeout=SAMPLE_EVERY_S)
        sample()
    wall = time.perf_counter() - wall_before
    user_after, system_after = cpu_seconds()
    user = user_after - cpu_before[0] - sampler_user
    system = system_after - cpu_before[1] - sampler_system
    for task in pending:
        task.cancel()
    if pending:
        results["unfinished (cell deadline)"] += echoes - sum(results.values())
    return Cell(approach, concurrency, echoes, results, wall, user, system, most_sockets, rtts_ms)


def run_cell(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
    approach: str,
    spec: CheckSpec[IcmpSettings],
    concurrency: int,
    echoes: int,
) -> Cell:
    """One cell in a loop of its own, so that its sockets are closed before the next starts."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(measure(approach, spec, concurrency, echoes))


def row(cells: list[Cell]) -> str:
    """One table row: medians over the runs, each run's total in brackets."""
    first = cells[0]
    results = sum((cell.results for cell in cells), Counter[str]())
    total = first.echoes * len(cells)
    ok = results.get(Result.OK.value, 0)
    others = ", ".join(f"{kind} {count}" for kind, count in results.items() if kind != "ok")
    each = ", ".join(f"{cell.cpu_per_thousand:.3f}" for cell in cells)
    rtts = [rtt for cell in cells for rtt in cell.rtts_ms] or [float("nan")] * 2
    quantiles = statistics.quantiles(rtts, n=100) if len(rtts) > 1 else rtts * 99
    return (
        f"| {first.concurrency} | {first.approach} | {ok}/{total}"
        f"{f' ({others})' if others else ''} "
        f"| {statistics.median(cell.wall_s for cell in cells):.2f} "
        f"| **{statistics.median(cell.cpu_per_thousand for cell in cells):.3f}** ({each}) "
        f"| {statistics.median(cell.per_thousand(cell.user_s) for cell in cells):.3f} "
        f"| {statistics.median(cell.per_thousand(cell.system_s) for cell in cells):.3f} "
        f"| {max(cell.most_sockets for cell in cells)} "
        f"| {statistics.median(rtts):.2f} / {quantiles[98]:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--echoes", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    if not 1 <= args.echoes <= 60_000:
        parser.error("--echoes must be 1..60000 (distinct addresses in 127.78.0.0/16)")
    if any(not 1 <= c <= args.echoes for c in args.concurrency):
        parser.error("each --concurrency must be 1..--echoes")
    if not 1 <= args.runs <= 20:
        parser.error("--runs must be 1..20")
    new_loop = uvloop.new_event_loop if args.loop == "uvloop" else asyncio.new_event_loop
    approaches = {"shared": CHECKS["icmp"], "per-check": PER_CHECK}
    print(
        f"{args.echoes} echoes per run, {args.runs} runs per cell (median, each run), "
        f"raw IPv4 socket, {args.loop} loop, loopback\n"
    )
    print(
        "| concurrency | approach | ok | wall s | CPU-s per 1,000 echoes | of it user "
        "| of it system | ICMP sockets held | reported RTT p50 / p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    cells: dict[tuple[int, str], list[Cell]] = {}
    for concurrency in args.concurrency:
        for _ in range(args.runs):  # the approaches alternate, so drift hits both alike
            for name, spec in approaches.items():
                cell = run_cell(new_loop, name, spec, concurrency, args.echoes)
                cells.setdefault((concurrency, name), []).append(cell)
        for name in approaches:
            print(row(cells[(concurrency, name)]), flush=True)
    print()
    for concurrency in args.concurrency:
        shared, per_check = (
            statistics.median(cell.cpu_per_thousand for cell in cells[(concurrency, name)])
            for name in approaches
        )
        print(
            f"concurrency {concurrency}: a socket per check costs {per_check / shared:.1f}x "
            "the shared socket"
        )


if __name__ == "__main__":
    main()
