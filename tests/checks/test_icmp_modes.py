"""ICMP socket modes: unprivileged ping sockets where the kernel allows them, raw otherwise.

Each case runs the real CLI inside a fresh network namespace, because `ping_group_range` is a
per-namespace setting (new namespaces start with the kernel default "1 0": nobody allowed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.peers.netns import IsolatedHost

WIDE_OPEN = "0 2147483647"


def run_icmp_check(host: IsolatedHost, tmp_path: Path, mode: str) -> tuple[int, dict[str, Any]]:
    """Run `check --format json` for one ICMP flow to the namespace's own address, inside it."""
    config = tmp_path / "icmp.yaml"
    config.write_text(
        "extra_flows:\n"
        f"  - {{id: ping, check: icmp, target: {host.address}, privileged: {mode}, timeout: 2s}}\n",
        encoding="utf-8",
    )
    run = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            host.name,
            sys.executable,
            "-m",
            "exporter",
            "check",
            "--config",
            str(config),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    document: dict[str, Any] = json.loads(run.stdout)
    return run.returncode, document["flows"][0]


def set_ping_group_range(host: IsolatedHost, value: str) -> None:
    """Write the namespace's net.ipv4.ping_group_range."""
    host.run(["sh", "-c", f"echo '{value}' > /proc/sys/net/ipv4/ping_group_range"])


def test_unprivileged_ping_socket_where_the_kernel_allows(
    isolated_host: IsolatedHost, tmp_path: Path
) -> None:
    """With ping_group_range open, `unprivileged` mode pings through a SOCK_DGRAM ping socket."""
    set_ping_group_range(isolated_host, WIDE_OPEN)
    code, flow = run_icmp_check(isolated_host, tmp_path, "unprivileged")
    assert code == 0, flow
    assert flow["result"] == "ok"
    assert flow["detail"].endswith("(ping socket)")


def test_auto_prefers_the_ping_socket(isolated_host: IsolatedHost, tmp_path: Path) -> None:
    """`auto` uses the unprivileged ping socket first when the kernel allows it."""
    set_ping_group_range(isolated_host, WIDE_OPEN)
    code, flow = run_icmp_check(isolated_host, tmp_path, "auto")
    assert code == 0, flow
    assert flow["detail"].endswith("(ping socket)")


def test_auto_falls_back_to_raw_when_ping_sockets_are_forbidden(
    isolated_host: IsolatedHost, tmp_path: Path
) -> None:
    """With the kernel default range, `auto` falls back to a raw socket (we run as root)."""
    set_ping_group_range(isolated_host, "1 0")
    code, flow = run_icmp_check(isolated_host, tmp_path, "auto")
    assert code == 0, flow
    assert flow["detail"].endswith("(raw socket)")


def test_unprivileged_mode_forbidden_is_a_clear_failure(
    isolated_host: IsolatedHost, tmp_path: Path
) -> None:
    """Forcing `unprivileged` where the kernel forbids ping sockets fails and says how to fix it."""
    set_ping_group_range(isolated_host, "1 0")
    code, flow = run_icmp_check(isolated_host, tmp_path, "unprivileged")
    assert code == 1
    assert flow["result"] == "service_error"
    assert "ping_group_range" in flow["detail"]
