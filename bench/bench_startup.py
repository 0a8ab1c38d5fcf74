"""Start to first `/metrics` for a config of 10,000 (flow, target) pairs.

Runs `python -m exporter serve` as an operator would, with a generated config whose targets are
all loopback addresses (127.1.x.y, where nothing listens: every check is refused at once), and
times process start → first complete `/metrics` response. Median of `--runs`.

    .venv/bin/python bench/bench_startup.py [--pairs 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

DEADLINE_S = 30.0


def write_config(directory: Path, pairs: int) -> Path:
    """A custom tcp flow over `pairs` loopback addresses (no traffic leaves the host)."""
    lines = ["extra_flows:", "  - id: startup", "    check: tcp", "    targets:"]
    lines += [f'      - "127.1.{(n >> 8) & 255}.{n & 255}:445"' for n in range(pairs)]
    path = directory / "startup.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_to_first_metrics(config: Path) -> float:
    """Seconds from spawning the exporter to the end of its first /metrics response."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    argv = [sys.executable, "-m", "exporter", "serve", "--config", str(config)]
    start = time.monotonic()
    process = subprocess.Popen(
        [*argv, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.monotonic() - start < DEADLINE_S:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    response.read()
                return time.monotonic() - start
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.005)
        raise RuntimeError(f"no /metrics within {DEADLINE_S}s")
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not 1 <= args.pairs <= 65536:
        parser.error("--pairs must be between 1 and 65536 (127.1.0.0/16)")
    with tempfile.TemporaryDirectory() as directory:
        config = write_config(Path(directory), args.pairs)
        times = [time_to_first_metrics(config) for _ in range(args.runs)]
    each = ", ".join(f"{t:.2f}" for t in times)
    median = statistics.median(times)
    print(f"start to first /metrics, {args.pairs} pairs: median {median:.2f} s ({each})")


if __name__ == "__main__":
    main()
