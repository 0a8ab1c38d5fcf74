"""A real Alertmanager (Debian's /usr/bin/prometheus-alertmanager) on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.peers.ports import free_tcp_port
from tests.peers.procs import stop_process, wait_until_http_ready

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Alertmanager:
    """A running Alertmanager and its API v2."""

    base_url: str
    address: str
    log: Path

    def alerts(self) -> list[dict[str, Any]]:
        """GET /api/v2/alerts: the alerts Alertmanager holds that have not resolved."""
        with urllib.request.urlopen(f"{self.base_url}/api/v2/alerts", timeout=10) as reply:
            alerts: list[dict[str, Any]] = json.load(reply)
        return alerts

    def groups(self) -> list[dict[str, Any]]:
        """GET /api/v2/alerts/groups: the alerts as routed, per receiver and group."""
        with urllib.request.urlopen(f"{self.base_url}/api/v2/alerts/groups", timeout=10) as reply:
            groups: list[dict[str, Any]] = json.load(reply)
        return groups

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """POST /api/v2/alerts, the way Prometheus sends them."""
        request = urllib.request.Request(
            f"{self.base_url}/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert int(reply.status) == 200


@contextlib.contextmanager
def run_alertmanager(directory: Path, config: dict[str, Any]) -> Iterator[Alertmanager]:
    """Start Alertmanager with `config` on a free loopback port; stop it on exit.

    `--cluster.listen-address=` (empty) turns off the HA gossip, which otherwise binds
    0.0.0.0:9094 and would collide between parallel runs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_tcp_port(HOST)
    address = f"{HOST}:{port}"
    base_url = f"http://{address}"
    log = directory / "alertmanager.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={config_path}",
                f"--storage.path={directory / 'data'}",
                f"--web.listen-address={address}",
                "--cluster.listen-address=",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_http_ready("alertmanager", proc, f"{base_url}/-/ready", log, START_TIMEOUT_S)
        yield Alertmanager(base_url, address, log)
    finally:
        stop_process(proc)
