"""The status page's cost at scale: history bytes per pair, recording time, page rendering.

`--pairs` pairs of one custom tcp flow (hosts of 10.0.0.0/16, never contacted: results are
made up and recorded straight into a `ResultStore`) each get `--results` results, one a
minute, every `--fail-every`th one a timeout, so the strips are as broken up as they get.
Reported: the bytes the histories take (tracemalloc, per pair, next to the documented
`BYTES_PER_PAIR`), microseconds per `PairHistory.record`, and for the page: total rendering
time, the longest part (the longest the event loop waits between two writes of `/`), its size
and the pairs listed. No traffic at all; every loop is bounded by the arguments.

    .venv/bin/python bench/bench_statuspage.py [--pairs 10000] [--results 120] [--fail-every 7]
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import time
import tracemalloc

from exporter.config import parse_config
from exporter.history import BYTES_PER_PAIR, PairHistory
from exporter.result import CheckResult, Result
from exporter.statuspage import LISTED_PAIRS, status_page_parts
from exporter.store import ResultStore

START = 1_800_000_000.0


def main() -> None:
    """Run the measurements and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--results", type=int, default=120)
    parser.add_argument("--fail-every", type=int, default=7)
    args = parser.parse_args()
    ok = CheckResult(Result.OK, 0.004, "")
    failed = CheckResult(Result.TIMEOUT, 5.0, "no answer within 5 s")

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    histories = [PairHistory() for _ in range(args.pairs)]
    for number in range(args.results):
        result = failed if number % args.fail_every == 0 else ok
        for history in histories:
            history.record(result, START + number * 60)
    taken = tracemalloc.get_traced_memory()[0] - before - 8 * args.pairs  # less the list
    tracemalloc.stop()
    print(f"history bytes per pair: {taken / args.pairs:.0f} (documented {BYTES_PER_PAIR})")

    began = time.perf_counter()
    for number in range(args.results):
        for history in histories:
            history.record(ok, START + (args.results + number) * 60)
    spent = time.perf_counter() - began
    print(f"record: {spent / (args.results * args.pairs) * 1e6:.2f} us per result")

    hosts = list(ipaddress.ip_network("10.0.0.0/16").hosts())[: args.pairs]
    written = ", ".join(f'"{host}"' for host in hosts)
    config = parse_config(
        f"scheduler: {{max_pairs: {args.pairs}}}\n"
        f"extra_flows:\n  - {{id: bench, check: tcp, port: 22, targets: [{written}]}}\n",
        "bench.yaml",
    )
    store = ResultStore(config.source.value)
    for number in range(min(args.results, 60)):
        for index, job in enumerate(config.jobs):
            result = failed if (number + index) % args.fail_every == 0 else ok
            store.record(job, result, START + number * 60)
    began = last = time.perf_counter()
    longest = 0.0
    size = 0
    for part in status_page_parts(config, store, START + 3600):
        size += len(part.encode())
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    total = time.perf_counter() - began
    print(
        f"page: {total * 1000:.0f} ms in all, longest part {longest * 1000:.1f} ms, "
        f"{size / 1e6:.2f} MB, {min(LISTED_PAIRS, len(config.jobs))} of {len(config.jobs)} "
        "pairs listed"
    )


if __name__ == "__main__":
    main()
