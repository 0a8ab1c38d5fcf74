"""`https` and `http` checks against a real nginx, a real sshd and small hostile servers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from pydantic import ValidationError

from exporter.checks import CHECKS, Target
from exporter.checks.https import HttpSettings
from exporter.result import CheckResult, Phase, Result
from exporter.runner import run_check
from tests.checks.fakes import HOST, closes_at_once, fake_server, sends_then_waits, silent
from tests.peers.nginx import Nginx
from tests.peers.pki import Pki
from tests.peers.sshd import Sshd

SHORT_TIMEOUT_S = 1.0
ENDLESS_HEADER = b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * (200 * 1024)
# longer than anything a stream reader buffers at once (2 x 64 KiB limit + one 256 KiB recv)
CLOSE_DELIMITED_BODY = b"x" * (600 * 1024) + b"TAIL-MARKER\n"


def _settings(pki: Pki, **overrides: Any) -> HttpSettings:
    return HttpSettings(ca_file=str(pki.ca_cert), server_name="localhost", **overrides)


async def _check(
    check: str, port: int, settings: HttpSettings, timeout_seconds: float = 5.0
) -> CheckResult:
    outcome = await run_check(CHECKS[check], Target(HOST, port), settings, timeout_seconds)
    return outcome.result


async def test_https_health_ok_with_body(nginx: Nginx, pki: Pki) -> None:
    """GET /health over verified TLS is ok, matches the body and names nginx as the peer."""
    result = await _check(
        "https", nginx.valid_port, _settings(pki, path="/health", body_regex="flow-ok")
    )
    assert result.result is Result.OK
    assert result.detail.startswith("HTTP 200 OK for GET /health from nginx/")
    assert result.peer is not None
    assert result.peer.product == "nginx"
    assert result.peer.version[:1].isdigit()
    assert {Phase.CONNECT, Phase.TLS, Phase.HANDSHAKE} <= set(result.phases)
    assert result.tls_cert_expiry_seconds == pki.valid.not_after.timestamp()


async def test_https_status_500_is_service_error(nginx: Nginx, pki: Pki) -> None:
    """A 500 answer is a service_error naming the status, and the peer is still reported."""
    result = await _check("https", nginx.valid_port, _settings(pki, path="/status/500"))
    assert result.result is Result.SERVICE_ERROR
    assert "500" in result.detail
    assert "expected 2xx" in result.detail
    assert result.peer is not None
    assert result.peer.product == "nginx"


async def test_https_redirect_is_service_error_by_default(nginx: Nginx, pki: Pki) -> None:
    """Redirects are not followed by default, so a 302 is a service_error."""
    result = await _check("https", nginx.valid_port, _settings(pki, path="/redirect"))
    assert result.result is Result.SERVICE_ERROR
    assert result.detail.startswith("HTTP 302")


async def test_https_follows_redirect_when_enabled(nginx: Nginx, pki: Pki) -> None:
    """follow_redirects makes /redirect ok by fetching /health, which the detail names."""
    settings = _settings(pki, path="/redirect", follow_redirects=True, body_regex="flow-ok")
    result = await _check("https", nginx.valid_port, settings)
    assert result.result is Result.OK
    assert "HTTP 200 OK for GET /health" in result.detail


async def test_https_expected_status_accepts_redirect(nginx: Nginx, pki: Pki) -> None:
    """expected_status=[302] makes an unfollowed /redirect ok."""
    settings = _settings(pki, path="/redirect", expected_status=[302])
    result = await _check("https", nginx.valid_port, settings)
    assert result.result is Result.OK
    assert result.detail.startswith("HTTP 302 Moved Temporarily for GET /redirect from nginx/")


async def test_https_expected_status_rejects_other_2xx(nginx: Nginx, pki: Pki) -> None:
    """With expected_status set, a 200 not in the list is a service_error listing the list."""
    settings = _settings(pki, path="/health", expected_status=[204])
    result = await _check("https", nginx.valid_port, settings)
    assert result.result is Result.SERVICE_ERROR
    assert "expected 204" in result.detail


async def test_https_body_mismatch_is_service_error(nginx: Nginx, pki: Pki) -> None:
    """A body that does not match body_regex is a service_error quoting the pattern."""
    settings = _settings(pki, path="/health", body_regex="flow-broken")
    result = await _check("https", nginx.valid_port, settings)
    assert result.result is Result.SERVICE_ERROR
    assert "body does not match 'flow-broken'" in result.detail


async def test_https_chunked_body_is_dechunked(nginx: Nginx, pki: Pki) -> None:
    """A chunked body is de-chunked before matching, so an anchored pattern matches exactly."""
    settings = _settings(pki, path="/chunked", body_regex=r"\Achunked-ok\n\Z")
    result = await _check("https", nginx.valid_port, settings)
    assert result.result is Result.OK
    assert "GET /chunked" in result.detail


async def test_https_big_body_read_is_bounded(nginx: Nginx, pki: Pki) -> None:
    """With a small max_body_bytes the 2 MiB body is read only in part and the start matches."""
    settings = _settings(pki, path="/big", max_body_bytes=1024, body_regex=r"\A0123456789abcdef")
    result = await _check("https", nginx.valid_port, settings)
    assert result.result is Result.OK
    assert "GET /big" in result.detail


async def test_https_big_body_match_sees_at_most_max_body_bytes(nginx: Nginx, pki: Pki) -> None:
    """A pattern needing more than max_body_bytes of body fails: the read stops at the bound."""
    settings = _settings(pki, path="/big", max_body_bytes=1024, body_regex=r"\A(?s:.){1025}")
    result = await _check("https", nginx.valid_port, settings)
    assert result.result is Result.SERVICE_ERROR
    assert "body does not match" in result.detail


async def test_https_expired_certificate_is_tls_error(nginx: Nginx, pki: Pki) -> None:
    """An expired certificate is a tls_error before any request, with the expiry reported."""
    result = await _check("https", nginx.expired_port, _settings(pki, path="/health"))
    assert result.result is Result.TLS_ERROR
    assert "expired" in result.detail
    assert result.tls_cert_expiry_seconds == pki.expired.not_after.timestamp()
    assert Phase.HANDSHAKE not in result.phases


async def test_http_on_plain_port_ok(nginx: Nginx) -> None:
    """The http check on the plain port is ok without any TLS phase or certificate."""
    result = await _check(
        "http", nginx.http_port, HttpSettings(path="/health", body_regex="flow-ok")
    )
    assert result.result is Result.OK
    assert result.peer is not None
    assert result.peer.product == "nginx"
    assert Phase.TLS not in result.phases
    assert result.tls_cert_expiry_seconds is None
    assert result.detail.startswith("HTTP 200 OK for GET /health")


async def test_https_on_plain_port_is_protocol_mismatch(nginx: Nginx, pki: Pki) -> None:
    """The https check against a plain-HTTP port is a protocol_mismatch during tls."""
    result = await _check("https", nginx.http_port, _settings(pki, path="/health"))
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "does not speak TLS" in result.detail
    assert Phase.HANDSHAKE not in result.phases


async def test_http_against_sshd_is_protocol_mismatch(sshd: Sshd) -> None:
    """An SSH server's banner is not an HTTP response: protocol_mismatch quoting the banner.

    EXPORTER BUG (exporter/checks/https.py, _read_head): sshd rejects the request line and
    closes with our unread headers pending, so the kernel resets the connection; StreamReader
    then raises ConnectionResetError and drops the buffered banner, and the result is
    service_error "connection closed by peer during handshake".
    """
    result = await _check("http", sshd.port, HttpSettings())
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "SSH-2.0" in result.detail


async def test_http_endless_header_is_protocol_mismatch() -> None:
    """A server sending a header line longer than the 64 KiB limit is a protocol_mismatch."""
    async with fake_server(sends_then_waits(ENDLESS_HEADER)) as port:
        result = await _check("http", port, HttpSettings())
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "exceed 64 KiB" in result.detail


async def test_http_non_http_answer_is_protocol_mismatch() -> None:
    """A server answering with a line that is not an HTTP status line is a protocol_mismatch."""
    async with fake_server(sends_then_waits(b"220 smtp.example ESMTP ready\r\n\r\n")) as port:
        result = await _check("http", port, HttpSettings())
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "not an HTTP response: '220 smtp.example ESMTP ready'" in result.detail


async def test_http_redirect_to_an_over_long_label_is_dns_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A redirect to a host with a 64-character label is a dns_error, not a logged defect."""
    host = "a" * 64
    redirect = f"HTTP/1.1 302 Found\r\nLocation: http://{host}/\r\nContent-Length: 0\r\n\r\n"
    async with fake_server(sends_then_waits(redirect.encode())) as port:
        result = await _check("http", port, HttpSettings(follow_redirects=True))
    assert result.result is Result.DNS_ERROR
    assert result.detail == (
        f"name resolution failed for '{host}': label 1 is 64 characters long (DNS allows at most 63)"
    )
    ours = [r for r in caplog.records if r.name.startswith("exporter")]
    assert not [r for r in ours if r.levelno >= logging.WARNING]


async def test_http_closed_at_once_is_service_error() -> None:
    """A server that accepts and closes at once is a service_error about the closed connection."""
    async with fake_server(closes_at_once) as port:
        result = await _check("http", port, HttpSettings())
    assert result.result is Result.SERVICE_ERROR
    assert "closed" in result.detail
    assert Phase.HANDSHAKE in result.phases


async def test_http_silent_server_times_out() -> None:
    """A server that accepts and never answers times out during the handshake phase."""
    async with fake_server(silent) as port:
        result = await _check("http", port, HttpSettings(), SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert "during handshake" in result.detail


async def test_http_close_delimited_body_is_read_to_the_end() -> None:
    """A body without Content-Length or chunking is read until the peer closes (or the bound).

    EXPORTER BUG (exporter/checks/https.py, _read_body, last line): `reader.read(limit)` returns
    only what is already buffered, so the tail of a close-delimited body is never seen and
    body_regex fails with service_error "body does not match".
    """

    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nServer: Fake/1.0\r\n\r\n" + CLOSE_DELIMITED_BODY)
        await writer.drain()
        writer.close()

    async with fake_server(close_delimited) as port:
        result = await _check("http", port, HttpSettings(body_regex="TAIL-MARKER"))
    assert result.result is Result.OK
    assert result.detail == "HTTP 200 OK for GET / from Fake/1.0"


@pytest.mark.parametrize(
    "overrides",
    [
        {"path": "health"},
        {"body_regex": "(unclosed"},
        {"method": "POST"},
        {"max_body_bytes": 0},
        {"unknown_option": True},
    ],
    ids=["path-without-slash", "bad-regex", "bad-method", "zero-body-limit", "unknown-key"],
)
def test_invalid_settings_are_rejected(overrides: dict[str, object]) -> None:
    """Settings that cannot work are rejected by the model with a pydantic ValidationError."""
    with pytest.raises(ValidationError) as excinfo:
        HttpSettings.model_validate(overrides)
    assert excinfo.value.error_count() == 1
    assert excinfo.value.errors()[0]["loc"] == (next(iter(overrides)),)
