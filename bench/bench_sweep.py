"""Sweeping a /16: the exporter's `check` beside `nmap -sT` and a bare asyncio loop, one run.

A namespace owns the whole network (`ip route add local NET dev lo`), reached from the root
namespace over a veth pair. One TCP listener on 0.0.0.0 inside accepts on every address, and
one iptables rule drops every packet to the upper half of the network: half the hosts answer,
the other half are "no host" (neither TCP nor ICMP echo answered). Each tool then sweeps the
same network for the same port, with the same per-host timeout and parallelism, as its own
process, so its wall time, CPU (user + sys) and peak RSS (`ru_maxrss`, from `wait4` in a small
launcher, see `run_child`) are its own:

1. `python -m exporter check --format json` with one flow of the user's own (`check: tcp`,
   `sweep: true`, the network, `timeout`, `scheduler.concurrency`), once with `presence: none`
   and once with `presence: icmp` (the default: an ICMP echo to every host that has not answered
   within 5 % of the timeout);
2. `nmap -sT -n -Pn` with its probe timeout pinned to the timeout (`--min-rtt-timeout`,
   `--max-rtt-timeout` and `--initial-rtt-timeout` equal, `--max-retries 0`) and its
   parallelism pinned to the concurrency, with nmap's own host groups and with
   `--min-hostgroup 4096`;
3. a bare asyncio loop: `socket()`, `sock_connect()` under `asyncio.timeout`, `close()`, at the
   same concurrency (the floor for a Python sweep).

Every tool must find exactly the answering half open (and the exporter must count the silent
half absent): a miscount fails the bench with exit status 1 after the table is written.

    .venv/bin/python -m bench.bench_sweep [--prefix 16] [--runs 1] [--concurrency 1000]
        [--timeout 1] [--port 14445]

Runs as root (namespaces, routes, iptables). Every child is bounded in time and killed with its
process group on timeout, error, Ctrl-C or SIGTERM; the namespace and the root route go with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import ipaddress
import json
import math
import os
import platform
import queue
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers import netns
from tests.peers.netns import IP

REPO_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_DIR / "bench" / "results"
NMAP = "/usr/bin/nmap"
NETWORK_ATTEMPTS = 50
# 10.64.0.0-10.191.255.255: clear of the 10.253/10.254 networks the test suite creates meanwhile.
SECOND_OCTETS = range(64, 192)
# A child may take this many times the floor of its wall time (silent hosts x timeout /
# concurrency), and never less than the minimum, before it is killed and the run fails.
CHILD_CAP_FACTOR = 8.0
CHILD_CAP_MIN_S = 120.0
NOFILE_CAP = 20_000

# Accept and close on every address of the namespace; exits by itself after argv[2] seconds.
_LISTENER = (
    "import socket,sys,time\n"
    "end=time.monotonic()+float(sys.argv[2])\n"
    "s=socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind(('0.0.0.0',int(sys.argv[1])))\n"
    "s.listen(4096)\n"
    "s.settimeout(1.0)\n"
    "print('ready',flush=True)\n"
    "while time.monotonic()<end:\n"
    "    try:\n"
    "        s.accept()[0].close()\n"
    "    except TimeoutError:\n"
    "        pass\n"
)

# Fork and exec argv[2:], wait for it, write "wall_s cpu_s maxrss_kb" of that child alone to
# argv[1], exit with its status. Run with -I -S, so it stays small (see `run_child`).
_LAUNCHER = (
    "import os,sys,time\n"
    "began=time.perf_counter()\n"
    "pid=os.fork()\n"
    "if pid==0:\n"
    "    try:\n"
    "        os.execvp(sys.argv[2],sys.argv[2:])\n"
    "    finally:\n"
    "        os._exit(127)\n"
    "_,status,usage=os.wait4(pid,0)\n"
    "wall=time.perf_counter()-began\n"
    "with open(sys.argv[1],'w') as out:\n"
    "    out.write(f'{wall} {usage.ru_utime+usage.ru_stime} {usage.ru_maxrss}')\n"
    "code=os.waitstatus_to_exitcode(status)\n"
    "sys.exit(code if code>=0 else 128-code)\n"
)


# --------------------------------------------------------------------------------------------
# the swept network


@dataclass(frozen=True)
class SweptNetwork:
    """The network every tool sweeps, its silent half and the listener's port."""

    network: ipaddress.IPv4Network
    silent: ipaddress.IPv4Network
    port: int

    @property
    def hosts(self) -> int:
        """Hosts a sweep probes: network and broadcast addresses excluded."""
        return self.network.num_addresses - 2

    @property
    def expected_silent(self) -> int:
        """Probed hosts in the dropped half (its last address is the broadcast address)."""
        return self.silent.num_addresses - 1

    @property
    def expected_open(self) -> int:
        """Probed hosts that accept: the lower half without the network address."""
        return self.hosts - self.expected_silent


def pick_network(prefix: int) -> ipaddress.IPv4Network:
    """A random 10.X.…/prefix (X in 64-191) that overlaps no route of the root namespace."""
    rng = random.SystemRandom()
    existing = netns._existing_networks()
    for _ in range(NETWORK_ATTEMPTS):
        slash16 = ipaddress.IPv4Network(f"10.{rng.choice(SECOND_OCTETS)}.0.0/16")
        candidates = list(slash16.subnets(new_prefix=prefix)) if prefix > 16 else [slash16]
        candidate = rng.choice(candidates)
        if not any(candidate.overlaps(network) for network in existing):
            return candidate
    raise RuntimeError(f"no free /{prefix} in 10.64-191.x.x after {NETWORK_ATTEMPTS} tries")


@contextlib.contextmanager
def swept_namespace(prefix: int, port: int, lifetime_s: float) -> Iterator[SweptNetwork]:
    """The namespace owning the network, its listener and the silent half; all removed on exit
    (the listener is stopped, the namespace deleted, the root route dropped)."""
    network = pick_network(prefix)
    swept = SweptNetwork(network, list(network.subnets(prefixlen_diff=1))[1], port)
    with netns.isolated_host() as host:
        netns._run([IP, "route", "add", str(network), "via", host.address])
        try:
            host.run([IP, "route", "add", "local", str(network), "dev", "lo"])
            host.popen_ready(
                [sys.executable, "-c", _LISTENER, str(port), f"{lifetime_s:.0f}"],
                f"the listener on port {port}",
            )
            host.iptables("-A", "INPUT", "-d", str(swept.silent), "-j", "DROP")
            yield swept
        finally:
            subprocess.run([IP, "route", "del", str(network)], capture_output=True, check=False)


# --------------------------------------------------------------------------------------------
# one measured child process


@dataclass(frozen=True)
class Usage:
    """What one child cost: wall seconds, CPU seconds (user + sys), peak RSS in MB."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float


@dataclass(frozen=True)
class ChildRun:
    """A finished child: its exit status, its cost, whether it was killed at the cap, and
    where its output went."""

    exit_code: int
    usage: Usage
    killed: bool
    stdout: Path
    stderr: Path

    def failure(self, name: str, why: str) -> RuntimeError:
        """An error naming the child, the reason and the end of its stderr."""
        tail = self.stderr.read_text(encoding="utf-8", errors="replace")[-2000:]
        return RuntimeError(f"{name}: {why} (exit {self.exit_code}); stderr ends:\n{tail}")


def run_child(argv: Sequence[str], workdir: Path, name: str, cap_s: float) -> ChildRun:
    """Run one child through `_LAUNCHER` in its own process group; the launcher reports the
    child's own wall time and rusage.

    Why a launcher: a child's `ru_maxrss` is at least the RSS of the process it was forked from
    (Linux keeps the pre-exec memory's high-water mark), and this process holds about 24 MB.
    Forked from the launcher (about 8 MB) the child's figure is its own: nmap's 21 MB would
    otherwise read 24 MB.

    A reaping thread blocks in `wait4` on the launcher and signals through a queue, which this
    thread reads for at most `cap_s`. Past the cap, and on any error, Ctrl-C or SIGTERM, the
    whole process group is killed and reaped before this returns or raises. (Not
    `Thread.join`: on Python < 3.13 a join interrupted by Ctrl-C marks the thread finished, and
    the next join returns at once.)
    """
    stdout, stderr = workdir / f"{name}.out", workdir / f"{name}.err"
    report = workdir / f"{name}.rusage"
    report.unlink(missing_ok=True)
    reaped: queue.SimpleQueue[tuple[float, int]] = queue.SimpleQueue()
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(report), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=REPO_DIR,
            env={**os.environ, "PYTHONPATH": str(REPO_DIR)},
            start_new_session=True,
        )

    def reap() -> None:
        _, status = os.waitpid(proc.pid, 0)
        reaped.put((time.perf_counter(), status))

    threading.Thread(target=reap, name=f"reap {name}", daemon=True).start()
    outcome = None
    try:
        outcome = reaped.get(timeout=cap_s)
    except queue.Empty:
        pass
    finally:
        killed = outcome is None
        if outcome is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            outcome = reaped.get()
        proc.returncode = os.waitstatus_to_exitcode(outcome[1])  # reaped here, not by Popen
    if killed:  # the launcher never reported; the child's CPU and RSS are unknown
        usage = Usage(outcome[0] - started, math.nan, math.nan)
    else:
        wall_s, cpu_s, maxrss_kb = report.read_text(encoding="ascii").split()
        usage = Usage(float(wall_s), float(cpu_s), int(maxrss_kb) / 1024)  # Linux: kilobytes
    return ChildRun(proc.returncode, usage, killed, stdout, stderr)


# --------------------------------------------------------------------------------------------
# the tools


@dataclass(frozen=True)
class Measured:
    """One tool's sweep: its cost, the hosts it found open and, when the tool tells them
    apart, absent. A child killed at the cap found nothing (None)."""

    usage: Usage
    found_open: int | None
    found_absent: int | None = None


Measure = Callable[[Path, float], Measured]


@dataclass
class Tool:
    """A tool as the table shows it, how to measure it, and every run's measurement."""

    label: str
    command: str
    measure: Measure
    reports_absent: bool = False
    runs: list[Measured] = field(default_factory=list)


def exporter_config(swept: SweptNetwork, args: argparse.Namespace, presence: str) -> str:
    """One swept flow of the user's own, nothing else: the bench's whole config."""
    return (
        f"scheduler: {{concurrency: {args.concurrency}}}\n"
        "extra_flows:\n"
        f"  - {{id: bench_sweep, check: tcp, port: {swept.port}, sweep: true, "
        f"presence: {presence}, timeout: {args.timeout:g}s, targets: [{swept.network}]}}\n"
    )


EXPORTER_ARGV = ("-m", "exporter", "check", "--format", "json", "--no-progress", "--config")


def measure_exporter(
    swept: SweptNetwork, args: argparse.Namespace, presence: str, workdir: Path, cap_s: float
) -> Measured:
    """`python -m exporter check --format json` over the swept flow; the network's counts are
    read from the JSON document."""
    name = f"exporter-presence-{presence}"
    config = workdir / f"{name}.yaml"
    config.write_text(exporter_config(swept, args, presence), encoding="utf-8")
    run = run_child([sys.executable, *EXPORTER_ARGV, str(config)], workdir, name, cap_s)
    if run.killed:
        return Measured(run.usage, None)
    if run.exit_code not in (0, 1):  # 1: some hosts failed, as half of them do
        raise run.failure(name, "check did not run")
    (network,) = json.loads(run.stdout.read_text(encoding="utf-8"))["networks"]
    if network["hosts_probed"] != swept.hosts:
        raise run.failure(name, f"probed {network['hosts_probed']} hosts, not {swept.hosts}")
    return Measured(run.usage, network["hosts"]["ok"], network["hosts_absent"])


def nmap_argv(
    swept: SweptNetwork, args: argparse.Namespace, min_hostgroup: int | None
) -> list[str]:
    """`nmap -sT` with its probe timeout pinned (the three RTT timeouts equal, no
    retransmission) and its parallelism pinned (minimum = maximum); network and broadcast
    addresses excluded, as the exporter and the bare loop skip them."""
    timeout = f"{args.timeout * 1000:.0f}ms"
    argv = [NMAP, "-sT", "-n", "-Pn", "-p", str(swept.port)]
    argv += ["--min-rtt-timeout", timeout, "--max-rtt-timeout", timeout]
    argv += ["--initial-rtt-timeout", timeout, "--max-retries", "0"]
    argv += ["--min-parallelism", str(args.concurrency), "--max-parallelism", str(args.concurrency)]
    if min_hostgroup is not None:
        argv += ["--min-hostgroup", str(min_hostgroup)]
    edges = f"{swept.network.network_address},{swept.network.broadcast_address}"
    return [*argv, "--exclude", edges, "-oG", "-", str(swept.network)]


def measure_nmap(
    swept: SweptNetwork,
    args: argparse.Namespace,
    min_hostgroup: int | None,
    workdir: Path,
    cap_s: float,
) -> Measured:
    """nmap's grepable output has one `Ports:` line per host, `PORT/open/…` when it accepted."""
    name = "nmap" if min_hostgroup is None else f"nmap-hostgroup-{min_hostgroup}"
    run = run_child(nmap_argv(swept, args, min_hostgroup), workdir, name, cap_s)
    if run.killed:
        return Measured(run.usage, None)
    if run.exit_code != 0:
        raise run.failure(name, "nmap failed")
    text = run.stdout.read_text(encoding="utf-8", errors="replace")
    return Measured(run.usage, sum(f" {swept.port}/open/" in line for line in text.splitlines()))


def bare_loop_argv(network: str, args: argparse.Namespace) -> list[str]:
    """This module run as `--bare-loop`: the floor, in a child of its own."""
    return [
        *("-m", "bench.bench_sweep", "--bare-loop", network, "--port", str(args.port)),
        *("--concurrency", str(args.concurrency), "--timeout", f"{args.timeout:g}"),
    ]


def measure_bare_loop(
    swept: SweptNetwork, args: argparse.Namespace, workdir: Path, cap_s: float
) -> Measured:
    """The bare loop prints the number of accepted connects."""
    argv = [sys.executable, *bare_loop_argv(str(swept.network), args)]
    run = run_child(argv, workdir, "bare-loop", cap_s)
    if run.killed:
        return Measured(run.usage, None)
    if run.exit_code != 0:
        raise run.failure("bare loop", "failed")
    return Measured(run.usage, int(run.stdout.read_text(encoding="ascii")))


async def bare_sweep(
    network: ipaddress.IPv4Network, port: int, concurrency: int, timeout_s: float
) -> int:
    """Connect to every host, at most `concurrency` at a time; count the accepted connects.

    The exporter's sweep without the exporter: hosts produced lazily, one task per host, a
    semaphore for the slots, `timeout_s` per host.
    """
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    accepted = 0
    running: set[asyncio.Task[None]] = set()

    async def probe(host: str) -> None:
        nonlocal accepted
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setblocking(False)
                async with asyncio.timeout(timeout_s):
                    await loop.sock_connect(sock, (host, port))
                accepted += 1
        except (TimeoutError, OSError):
            pass
        finally:
            slots.release()

    for address in network.hosts():
        await slots.acquire()
        task = asyncio.create_task(probe(str(address)))
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)
    return accepted


def make_tools(swept: SweptNetwork, args: argparse.Namespace) -> list[Tool]:
    """The five rows, in the order they run within each run."""
    shown = "NET"  # the commands as the table prints them; NET is the network above the table

    def exporter_tool(presence: str, label: str) -> Tool:
        config = exporter_config(swept, args, presence).replace(str(swept.network), shown)
        return Tool(
            label,
            f"python {' '.join(EXPORTER_ARGV)} X` with X = `{' '.join(config.split())}",
            functools.partial(measure_exporter, swept, args, presence),
            reports_absent=True,
        )

    def nmap_tool(min_hostgroup: int | None, label: str) -> Tool:
        argv = nmap_argv(swept, args, min_hostgroup)
        return Tool(
            label,
            " ".join([*argv[:-1], shown]).replace(NMAP, "nmap"),
            functools.partial(measure_nmap, swept, args, min_hostgroup),
        )

    return [
        exporter_tool("none", "exporter `check`, `presence: none`"),
        exporter_tool("icmp", "exporter `check`, `presence: icmp` (default)"),
        nmap_tool(None, "`nmap -sT`"),
        nmap_tool(4096, "`nmap -sT --min-hostgroup 4096`"),
        Tool(
            "bare asyncio loop (floor)",
            "python " + " ".join(bare_loop_argv(shown, args)),
            functools.partial(measure_bare_loop, swept, args),
        ),
    ]


# --------------------------------------------------------------------------------------------
# report


def cell(values: Sequence[float], digits: int) -> str:
    """`**median** (run, run, …)`; the runs only when there is more than one."""
    text = f"**{statistics.median(values):.{digits}f}**"
    if len(values) > 1:
        text += " (" + ", ".join(f"{value:.{digits}f}" for value in values) + ")"
    return text


def counts(values: Sequence[int | None]) -> str:
    """Each run's count, once when every run found the same; a run killed at the cap shows as
    such."""
    shown = ["killed at the cap" if value is None else str(value) for value in values]
    return shown[0] if len(set(shown)) == 1 else ", ".join(shown)


def table(tools: Sequence[Tool], swept: SweptNetwork, args: argparse.Namespace) -> str:
    """The Markdown table, one row per tool, CPU also as a ratio to nmap's (default host groups,
    the reference of the PERFORMANCE.md target), then the network and the commands."""
    nmap_cpu = statistics.median(run.usage.cpu_s for run in tools[2].runs)
    lines = [
        "| tool | wall s | CPU s (user+sys) | peak RSS MB | CPU x nmap | hosts open "
        f"(expected {swept.expected_open}) | hosts absent (expected {swept.expected_silent}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for tool in tools:
        cpus = [run.usage.cpu_s for run in tool.runs]
        absent = counts([run.found_absent for run in tool.runs]) if tool.reports_absent else "—"
        lines.append(
            f"| {tool.label} | {cell([run.usage.wall_s for run in tool.runs], 1)} "
            f"| {cell(cpus, 2)} | {cell([run.usage.peak_rss_mb for run in tool.runs], 0)} "
            f"| {statistics.median(cpus) / nmap_cpu:.2f} "
            f"| {counts([run.found_open for run in tool.runs])} | {absent} |"
        )
    floor = swept.expected_silent * args.timeout / args.concurrency
    lines += [
        "",
        f"NET = {swept.network}: {swept.hosts} hosts, {swept.expected_silent} of them silent; "
        f"TCP port {swept.port}, timeout {args.timeout:g} s, concurrency {args.concurrency}, "
        f"{args.runs} run(s). Wall-time floor (silent hosts x timeout / concurrency): "
        f"{floor:.1f} s.",
        "",
        *(f"- {tool.label}: `{tool.command}`" for tool in tools),
    ]
    return "\n".join(lines) + "\n"


def machine_note() -> str:
    """Date, CPUs, kernel, Python and nmap versions: what the figures depend on."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").split("\n"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    version = subprocess.run([NMAP, "--version"], capture_output=True, text=True, check=False)
    nmap = version.stdout.split("\n", 1)[0].split(" ( ", 1)[0]
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs ({model}), "
        f"Linux {platform.release()}, Python {platform.python_version()}, {nmap}"
    )


def miscounts(tools: Sequence[Tool], swept: SweptNetwork) -> list[str]:
    """Every run whose open (or absent) count is not the one the namespace's rules dictate."""
    wrong = []
    for tool in tools:
        for run in tool.runs:
            if run.found_open != swept.expected_open:
                wrong.append(f"{tool.label}: {counts([run.found_open])} open hosts")
            if tool.reports_absent and run.found_absent != swept.expected_silent:
                wrong.append(f"{tool.label}: {counts([run.found_absent])} absent hosts")
    return wrong


# --------------------------------------------------------------------------------------------
# main


def raise_nofile() -> None:
    """Children inherit the limit: 1,000 connects plus 1,000 ICMP sockets need more than the
    usual 1,024; open files are capped at 20,000 here."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE_CAP if hard == resource.RLIM_INFINITY else min(hard, NOFILE_CAP)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Sweep a network beside nmap and a bare loop.")
    parser.add_argument("--prefix", type=int, default=16, choices=range(16, 25), metavar="16-24")
    parser.add_argument("--runs", type=int, default=1, choices=range(1, 6), metavar="1-5")
    parser.add_argument("--concurrency", type=int, default=1000, help="connects at once")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds per host")
    parser.add_argument("--port", type=int, default=14445, help="the listener's TCP port")
    parser.add_argument("--bare-loop", metavar="NETWORK", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= NOFILE_CAP // 4:
        parser.error(f"--concurrency must be 1 to {NOFILE_CAP // 4}")
    if not 0.1 <= args.timeout <= 10:
        parser.error("--timeout must be 0.1 to 10 seconds")
    if not 1024 <= args.port <= 65535:
        parser.error("--port must be 1024 to 65535")
    return args


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so `kill PID` also runs every cleanup on the way out."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_loop:
        network = ipaddress.IPv4Network(args.bare_loop)
        print(asyncio.run(bare_sweep(network, args.port, args.concurrency, args.timeout)))
        return 0
    if os.geteuid() != 0 or shutil.which(NMAP) is None:
        print("needs root (namespace, routes, iptables) and nmap", file=sys.stderr)
        return 2
    raise_nofile()
    stop_on_sigterm()
    silent = 2 ** (32 - args.prefix) // 2
    cap_s = max(CHILD_CAP_MIN_S, CHILD_CAP_FACTOR * silent * args.timeout / args.concurrency)
    began = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp,
        swept_namespace(args.prefix, args.port, lifetime_s=cap_s * 5 * args.runs + 60) as swept,
    ):
        tools = make_tools(swept, args)
        for run in range(1, args.runs + 1):
            for tool in tools:
                print(f"run {run}/{args.runs}: {tool.label} …", file=sys.stderr, flush=True)
                measured = tool.measure(Path(tmp), cap_s)
                tool.runs.append(measured)
                usage = measured.usage
                print(
                    f"  {usage.wall_s:.1f} s, {usage.cpu_s:.2f} CPU-s, "
                    f"{usage.peak_rss_mb:.0f} MB, open: {counts([measured.found_open])}",
                    file=sys.stderr,
                    flush=True,
                )
        report = table(tools, swept, args)
    document = (
        f"# Sweeping a /{args.prefix}\n\n{machine_note()}; bench total "
        f"{time.perf_counter() - began:.0f} s.\n\n{report}"
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "sweep-latest.md").write_text(document, encoding="utf-8")
    print(document)
    wrong = miscounts(tools, swept)
    for line in wrong:
        print(f"MISCOUNT {line}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
