"""What TLS and basic auth cost a scrape, and that bcrypt never stalls the event loop.

Measured in one process, against the real app (`make_app` with a web config, no scheduler)
served on 127.0.0.1:

1. `bcrypt.checkpw` alone at `--cost` (median of `--runs`).
2. Median latency of GET /metrics over one keep-alive connection: plain HTTP without a web
   config; HTTPS with basic auth, credentials cached (the steady state of a Prometheus scrape);
   HTTPS with a wrong password (bcrypt on every request).
3. The longest event-loop stall while `--burst` requests with wrong passwords are in flight at
   once: a 1 ms ticker on the server's loop records how late it ran.

    .venv/bin/python -m bench.bench_webauth [--cost 10] [--runs 20] [--burst 32]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ssl
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import bcrypt
from aiohttp import web

from exporter.config import load_config
from exporter.store import ResultStore
from exporter.web import ExporterState, make_app
from exporter.webconfig import WebConfig, load_web_config
from tests.peers.pki import make_pki

PASSWORD = "bench-password"


def auth(password: str) -> dict[str, str]:
    """Basic auth header for user `prometheus`."""
    token = base64.b64encode(f"prometheus:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def serve(web_config: WebConfig | None) -> tuple[web.AppRunner, int]:
    """Start the app without its scheduler on a free loopback port."""
    config = load_config(None)
    state = ExporterState(config=config, config_path=None, store=ResultStore(config.source.value))
    runner = web.AppRunner(make_app(state, run_scheduler=False, web_config=web_config))
    await runner.setup()
    ssl_context = web_config.ssl_context if web_config is not None else None
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    port: int = server.sockets[0].getsockname()[1]
    return runner, port


async def median_latency_ms(
    url: str, runs: int, headers: dict[str, str], client_ssl: ssl.SSLContext | bool
) -> tuple[float, int]:
    """Median wall time of `runs` sequential GETs on one connection, and the last status."""
    times = []
    status = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl)) as session:
        for _ in range(runs + 1):  # the first request opens the connection and warms caches
            start = time.perf_counter()
            async with session.get(url, headers=headers) as response:
                await response.read()
                status = response.status
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[1:]), status


async def longest_stall_ms(url: str, burst: int, client_ssl: ssl.SSLContext) -> float:
    """Fire `burst` wrong-password requests at once; the loop's worst lateness meanwhile."""
    worst = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not stop.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, (time.perf_counter() - start) * 1000 - 1)

    task = asyncio.create_task(ticker())
    connector = aiohttp.TCPConnector(ssl=client_ssl, limit=burst)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(n: int) -> int:
            async with session.get(url, headers=auth(f"wrong{n}")) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one(n) for n in range(burst)))
    stop.set()
    await task
    assert set(statuses) <= {401, 503}, statuses
    return worst


async def main_async(args: argparse.Namespace) -> None:
    """Run every measurement and print one line each."""
    checks = []
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(args.cost))
    for _ in range(args.runs):
        start = time.perf_counter()
        bcrypt.checkpw(PASSWORD.encode(), hashed)
        checks.append((time.perf_counter() - start) * 1000)
    print(f"bcrypt.checkpw cost {args.cost}: median {statistics.median(checks):.1f} ms")

    with tempfile.TemporaryDirectory() as directory:
        pki = make_pki(Path(directory) / "pki")
        path = Path(directory) / "web.yml"
        path.write_text(
            f"tls_server_config:\n  cert_file: {pki.valid.cert}\n  key_file: {pki.valid.key}\n"
            f"basic_auth_users:\n  prometheus: '{hashed.decode()}'\n"
        )
        client_ssl = ssl.create_default_context(cafile=str(pki.ca_cert))
        plain_runner, plain_port = await serve(None)
        secure_runner, secure_port = await serve(load_web_config(path))
        try:
            plain, _ = await median_latency_ms(
                f"http://127.0.0.1:{plain_port}/metrics", args.runs, {}, False
            )
            url = f"https://127.0.0.1:{secure_port}/metrics"
            cached, ok = await median_latency_ms(url, args.runs, auth(PASSWORD), client_ssl)
            wrong, refused = await median_latency_ms(url, args.runs, auth("nope"), client_ssl)
            assert (ok, refused) == (200, 401)
            stall = await longest_stall_ms(url, args.burst, client_ssl)
        finally:
            await plain_runner.cleanup()
            await secure_runner.cleanup()
    print(f"GET /metrics plain HTTP, no web config: median {plain:.2f} ms")
    print(f"GET /metrics HTTPS + basic auth, cached: median {cached:.2f} ms")
    print(f"GET /metrics HTTPS + wrong password (bcrypt each time): median {wrong:.2f} ms")
    print(f"longest event-loop stall, {args.burst} wrong passwords at once: {stall:.1f} ms")


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cost", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--burst", type=int, default=32)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
