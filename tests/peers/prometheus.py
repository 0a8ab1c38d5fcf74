"""A real Prometheus server (Debian's /usr/bin/prometheus) scraping what a test points it at."""

from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.peers.ports import free_tcp_port
from tests.peers.procs import stop_process, wait_until_http_ready

PROMETHEUS = "/usr/bin/prometheus"
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Prometheus:
    """A running Prometheus and its HTTP API."""

    base_url: str
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """GET an /api/v1 path and return its `data`; fails loudly on an API error."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.base_url}/api/v1/{path}{query}", timeout=10) as reply:
            document = json.load(reply)
        assert document["status"] == "success", document
        return document["data"]

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets with their health and last error."""
        active: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return active


@contextlib.contextmanager
def run_prometheus(
    directory: Path,
    scrape_configs: list[dict[str, Any]],
    *,
    rule_files: Sequence[Path] = (),
    alertmanagers: Sequence[str] = (),
) -> Iterator[Prometheus]:
    """Start Prometheus on a free loopback port with a 1 s scrape interval; stop it on exit.

    Rules in `rule_files` are evaluated every second; firing alerts go to the Alertmanagers at
    `alertmanagers` (`host:port`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    document: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": scrape_configs,
    }
    if rule_files:
        document["rule_files"] = [str(path) for path in rule_files]
    if alertmanagers:
        document["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]
        }
    config.write_text(yaml.safe_dump(document))
    port = free_tcp_port(HOST)
    base_url = f"http://{HOST}:{port}"
    log = directory / "prometheus.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address={HOST}:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_http_ready("prometheus", proc, f"{base_url}/-/ready", log, START_TIMEOUT_S)
        yield Prometheus(base_url, log)
    finally:
        stop_process(proc)
