"""The status page in a real browser: headless Chromium renders each flow's state and history.

A TCP listener the test owns is checked every 200 ms; the test stops it until the exporter has
seen it refused, then starts it again on the same port. Chromium then loads `/` from the running
exporter: the strip of that flow reads ok, then refused, then ok again. Screenshots (desktop
and phone width) stay in the test's tmp dir as artifacts.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tests.peers.chromium import dump_dom, screenshot
from tests.peers.exporter import RunningExporter, run_exporter
from tests.peers.ports import free_tcp_port

POLL_DEADLINE_S = 20.0
POLL_INTERVAL_S = 0.1


def listen(port: int) -> socket.socket:
    """A loopback TCP listener on `port` (the kernel completes connections from the backlog)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


def config(up_port: int, closed_port: int) -> str:
    """A flapping custom flow, a custom flow that is always refused, and a port-table flow."""
    return (
        "defaults: {interval: 200ms, timeout: 150ms}\n"
        "scheduler: {startup_spread: 1ms}\n"
        f'targets: {{ibm_hmc: ["127.0.0.1:{closed_port}"]}}\n'
        "extra_flows:\n"
        f"  - {{id: flapping, check: tcp, port: {up_port}, targets: [127.0.0.1]}}\n"
        f"  - {{id: closed, check: tcp, port: {closed_port}, targets: [127.0.0.1]}}\n"
    )


def strip(page: str, flow: str) -> list[str]:
    """The result classes in a flow's history strip, oldest first ([] before its first result)."""
    row = re.search(rf"<tr class=.pair[^>]*data-flow=.{flow}\b.*?</tr>", page, re.DOTALL)
    if row is None:
        return []
    marks = re.search(r"class=.strip.>(.*?)</span>", row.group(0), re.DOTALL)
    assert marks is not None, row.group(0)
    runs = re.findall(r"data-result=.(\w+). data-count=.(\d+)", marks.group(1))
    return [result for result, count in runs for _ in range(int(count))]


def went_down_and_came_back(marks: list[str]) -> bool:
    """ok, later refused, later ok again."""
    text = " ".join(marks)
    return re.search(r"\bok\b.*\brefused\b.*\bok\b", text) is not None


def wait_for_strip(exporter: RunningExporter, flow: str, done: Callable[[list[str]], bool]) -> None:
    """Poll `/` until the flow's strip satisfies `done`."""
    deadline = time.monotonic() + POLL_DEADLINE_S
    while True:
        status, page = exporter.get("/")
        assert status == 200
        if done(strip(page, flow)):
            return
        assert time.monotonic() < deadline, f"strip of {flow}: {strip(page, flow)}"
        time.sleep(POLL_INTERVAL_S)


def test_chromium_shows_each_flow_state_and_a_flow_that_went_down_and_came_back(
    tmp_path: Path,
) -> None:
    """The rendered page shows every flow's state, the matrix, and the flap in the strip."""
    up_port, closed_port = free_tcp_port(), free_tcp_port()
    path = tmp_path / "config.yaml"
    path.write_text(config(up_port, closed_port), encoding="utf-8")
    listener = listen(up_port)
    try:
        with run_exporter(path, tmp_path) as exporter:
            wait_for_strip(exporter, "flapping", lambda marks: "ok" in marks)
            listener.close()
            wait_for_strip(exporter, "flapping", lambda marks: marks[-1:] == ["refused"])
            listener = listen(up_port)
            wait_for_strip(exporter, "flapping", went_down_and_came_back)
            url = f"{exporter.base_url}/"
            dom = dump_dom(url, tmp_path)
            desktop = screenshot(url, tmp_path / "status-desktop.png", 1400, 1100)
            phone = screenshot(url, tmp_path / "status-phone.png", 390, 1600)
    finally:
        listener.close()
    assert went_down_and_came_back(strip(dom, "flapping")), strip(dom, "flapping")
    states = dict(re.findall(r'data-flow="(\w+)" data-target="[^"]+" data-result="(\w+)"', dom))
    assert states == {"flapping": "ok", "closed": "refused", "ssh_hmc": "refused"}
    assert '<td class="r-refused" data-role="ibm_hmc">' in dom
    assert '<td class="r-refused" data-role="custom">' in dom
    assert "endpoint_server → ibm_hmc" in dom
    assert '<svg class="spark"' in dom
    assert desktop.stat().st_size > 0
    assert phone.stat().st_size > 0
