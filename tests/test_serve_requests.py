"""Hostile and malformed requests to a real exporter process, and its access log.

Each request is sent the way a scanner or a careless client would send it; the exporter must
answer 400 and keep its log free of ERROR records and tracebacks.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp.http_exceptions import BadStatusLine

from exporter.web import _BAD_REQUEST_FILTER
from tests.peers.exporter import RunningExporter, run_exporter
from tests.peers.ports import free_tcp_port

LOG_DEADLINE_S = 20.0
READ_LIMIT = 64 * 1024
MALFORMED_REQUESTS = {
    "newline in the request target": b"GET /probe?module=tcp&target=127.0.0.1\n:1 HTTP/1.1\r\n"
    b"Host: x\r\n\r\n",
    "NUL in the request target": b"GET /probe?module=tcp&target=127.0.0.1\x00:1 HTTP/1.1\r\n"
    b"Host: x\r\n\r\n",
    "0xff in the request target": b"GET /probe?target=127.0.0.1\xff:1 HTTP/1.1\r\nHost: x\r\n\r\n",
    "header without a colon": b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    "NUL in a header value": b"GET / HTTP/1.1\r\nHost: x\r\nX-Test: a\x00b\r\n\r\n",
    "request line over 8 KiB": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header over 8 KiB": b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n",
    "unknown HTTP version": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "bad Content-Length": b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "TLS ClientHello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 32,
}


def write_config(path: Path) -> Path:
    """One flow to a closed port: enough for the scheduler to run."""
    path.write_text(
        "defaults: {interval: 10s, timeout: 2s}\n"
        "extra_flows:\n"
        f'  - {{id: closed_port, check: tcp, target: "127.0.0.1:{free_tcp_port()}"}}\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningExporter]:
    """One exporter with default logging for every request test of this module."""
    directory = tmp_path_factory.mktemp("requests")
    with run_exporter(write_config(directory / "config.yaml"), directory) as running:
        yield running


def send_raw(exporter: RunningExporter, data: bytes) -> bytes:
    """Send bytes on a fresh connection and return the status line of the answer."""
    host, port = exporter.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n" not in answer and len(answer) < READ_LIMIT:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def wait_for_log(exporter: RunningExporter, text: str) -> str:
    """The exporter's log once it contains `text` (records reach the file after the answer)."""
    deadline = time.monotonic() + LOG_DEADLINE_S
    while text not in (log := exporter.log()):
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{log[-3000:]}"
        time.sleep(0.05)
    return log


def assert_clean(log: str) -> None:
    assert "level=ERROR" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_malformed_requests_get_400_and_no_error_log(exporter: RunningExporter) -> None:
    """Bad request lines, bad headers, NUL bytes and over-long lines: 400 each, no traceback."""
    statuses = {name: send_raw(exporter, data) for name, data in MALFORMED_REQUESTS.items()}
    assert statuses == dict.fromkeys(MALFORMED_REQUESTS, b"HTTP/1.0 400 Bad Request")
    assert exporter.get("/-/healthy") == (200, "Healthy\n")
    assert_clean(exporter.log())


def _server_record(error: Exception) -> logging.LogRecord:
    """The record aiohttp's request handler logs for `error` (web_protocol.handle_error)."""
    return logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("127.0.0.1",),
        (type(error), error, None),
    )


def test_only_parser_rejections_leave_the_error_log() -> None:
    """A request the HTTP parser rejected is filtered out; a crashing route keeps its ERROR."""
    assert not _BAD_REQUEST_FILTER.filter(_server_record(BadStatusLine("BLAH")))
    assert _BAD_REQUEST_FILTER.filter(_server_record(RuntimeError("route crashed")))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "a" * 64 + ":47101",
            f"'{'a' * 64}:47101' is not a valid host name or address: "
            "label 1 is 64 characters long (DNS allows at most 63)",
        ),
        (
            ".".join(["a" * 60] * 5) + ":47101",
            f"'{'a' * 60}'… (310 characters) is not a valid host name or address: "
            "the host name is 304 characters long (DNS allows at most 253)",
        ),
        (
            "127.0.0.1:\u0664\u0667\u0661\u0660\u0661",
            "'127.0.0.1:\u0664\u0667\u0661\u0660\u0661': port must be a number from 1 to 65535",
        ),
        ("127.0.0.1:\u00b2", "'127.0.0.1:\u00b2': port must be a number from 1 to 65535"),
    ],
)
def test_probe_refuses_bad_targets_with_a_plain_400(
    exporter: RunningExporter, target: str, message: str
) -> None:
    """/probe answers 400 with the reason for over-long names and non-ASCII port digits."""
    status, body = exporter.get(f"/probe?module=tcp&target={quote(target, safe='')}")
    assert (status, body) == (400, message + "\n")
    assert_clean(exporter.log())


def test_access_log_is_off_by_default(exporter: RunningExporter) -> None:
    """Without --log.access no request is logged, while other INFO records still are."""
    assert exporter.get("/-/healthy")[0] == 200
    assert exporter.post("/-/reload") == (200, "Reloaded\n")
    log = wait_for_log(exporter, "config reloaded")
    assert "GET /-/healthy" not in log
    assert ".access" not in log


def test_access_log_flag_logs_each_request(tmp_path: Path) -> None:
    """serve --log.access logs each request at INFO as key=value fields."""
    config = write_config(tmp_path / "config.yaml")
    with run_exporter(config, tmp_path, extra_args=["--log.access"]) as running:
        assert running.get("/-/healthy")[0] == 200
        log = wait_for_log(running, 'request="GET /-/healthy HTTP/1.1" status=200')
    line = next(line for line in log.splitlines() if "GET /-/healthy" in line)
    assert " level=INFO logger=exporter.access msg=remote=127.0.0.1 " in line
    assert 'user_agent="Python-urllib/' in line
