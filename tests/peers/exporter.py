"""Runs the exporter itself as a real process, the way an operator starts it."""

from __future__ import annotations

import resource
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.peers.ports import free_tcp_port
from tests.peers.procs import stop_process

START_DEADLINE_S = 20.0
BIND_ATTEMPTS = 3


@dataclass(frozen=True)
class RunningExporter:
    """A started `certero-flow-exporter serve` and how to reach it."""

    process: subprocess.Popen[bytes]
    base_url: str
    config_path: Path | None
    log_path: Path
    ssl_context: ssl.SSLContext | None = None
    headers: dict[str, str] | None = None

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        """GET a path with the exporter's default headers (e.g. credentials) plus `headers`."""
        merged = {**(self.headers or {}), **(headers or {})}
        return http_request(self.base_url + path, headers=merged, context=self.ssl_context)

    def post(self, path: str) -> tuple[int, str]:
        """POST an empty body to a path."""
        return http_request(
            self.base_url + path, method="POST", headers=self.headers, context=self.ssl_context
        )

    def log(self) -> str:
        """What the exporter wrote to stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def http_request(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, str]:
    """One request with urllib; an HTTP error status is returned as a value."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m exporter ARGS` the way a user runs the console script."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@contextmanager
def run_exporter(
    config_path: Path | None,
    log_dir: Path,
    extra_args: Sequence[str] = (),
    *,
    global_args: Sequence[str] = (),
    nofile: tuple[int, int] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> Iterator[RunningExporter]:
    """Start `python -m exporter [global_args] serve` on a free loopback port; wait until ready.

    `nofile` sets the process's open file limit (soft, hard). With `ssl_context` the exporter is
    reached over https (give `--web.config.file` in `extra_args`); `headers` (e.g. credentials)
    go with every request, readiness polls included.
    """
    argv = [sys.executable, "-m", "exporter", *global_args, "serve"]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    argv += extra_args
    for attempt in range(1, BIND_ATTEMPTS + 1):
        running = _start(
            argv,
            config_path=config_path,
            log_dir=log_dir,
            nofile=nofile,
            ssl_context=ssl_context,
            headers=headers,
        )
        try:
            _wait_until_ready(running)
        except _PortTaken:
            stop_process(running.process)
            if attempt == BIND_ATTEMPTS:
                raise
            continue  # another process took the free port between its choice and the bind
        except BaseException:
            stop_process(running.process)
            raise
        break
    try:
        yield running
    finally:
        stop_process(running.process)


class _PortTaken(RuntimeError):
    """The exporter could not bind the port chosen for it."""


def _start(
    argv: Sequence[str],
    *,
    config_path: Path | None,
    log_dir: Path,
    nofile: tuple[int, int] | None,
    ssl_context: ssl.SSLContext | None,
    headers: dict[str, str] | None,
) -> RunningExporter:
    """Start the exporter on a port free a moment ago."""
    port = free_tcp_port()
    log_path = log_dir / f"exporter-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*argv, "--listen", f"127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=None if nofile is None else lambda: _limit_files(nofile),  # noqa: PLW1509 - the child runs nothing but setrlimit before exec
        )
    scheme = "https" if ssl_context is not None else "http"
    return RunningExporter(
        process, f"{scheme}://127.0.0.1:{port}", config_path, log_path, ssl_context, headers
    )


def _wait_until_ready(running: RunningExporter) -> None:
    """Poll `/-/ready`; raise with the exporter's log if it exits or never gets ready."""
    deadline = time.monotonic() + START_DEADLINE_S
    while True:
        if running.process.poll() is not None:
            log = running.log()
            error = _PortTaken if "address already in use" in log else RuntimeError
            raise error(f"exporter exited with {running.process.returncode}:\n{log}")
        try:
            if running.get("/-/ready")[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"exporter not ready after {START_DEADLINE_S}s:\n{running.log()}")
        time.sleep(0.05)


def _limit_files(limits: tuple[int, int]) -> None:
    """Runs in the child before exec."""
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)
