"""`https` through a forward proxy: a real squid in front of nginx, and small hostile proxies."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from exporter.checks import CHECKS, Target
from exporter.checks.https import HttpSettings, HttpsSettings
from exporter.result import CheckResult, Phase, Result
from exporter.runner import run_check
from tests.checks.fakes import HOST, closes_at_once, drip, fake_server, silent
from tests.peers.nginx import Nginx
from tests.peers.pki import Pki
from tests.peers.ports import free_tcp_port
from tests.peers.squid import Squid
from tests.peers.sshd import Sshd

SHORT_TIMEOUT_S = 1.0


def _settings(pki: Pki, proxy: str | None, **overrides: Any) -> HttpsSettings:
    return HttpsSettings(
        ca_file=str(pki.ca_cert), server_name="localhost", path="/health", proxy=proxy, **overrides
    )


async def _https(port: int, settings: HttpsSettings, timeout_seconds: float = 5.0) -> CheckResult:
    outcome = await run_check(CHECKS["https"], Target(HOST, port), settings, timeout_seconds)
    return outcome.result


def _url(port: int) -> str:
    return f"http://{HOST}:{port}"


def _proxy_answer(head: bytes) -> Any:
    """A proxy that reads the CONNECT request and answers with `head` (status and headers)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        while await reader.read(65536):
            pass

    return handler


async def test_ok_through_squid(nginx: Nginx, pki: Pki, squid: Squid) -> None:
    """Through squid's open port the request is ok; proxy and CONNECT are phases of their own."""
    result = await _https(nginx.valid_port, _settings(pki, _url(squid.open_port)))
    assert result.result is Result.OK
    assert result.detail.startswith("HTTP 200 OK for GET /health from nginx/")
    assert f"through proxy {_url(squid.open_port)}" in result.detail
    assert {Phase.CONNECT, Phase.PROXY, Phase.TLS, Phase.HANDSHAKE} <= set(result.phases)
    assert result.address == HOST  # the proxy's address: the only one the exporter connected to
    assert result.tls_cert_expiry_seconds == pki.valid.not_after.timestamp()


async def test_ok_with_proxy_credentials_from_a_file(
    nginx: Nginx, pki: Pki, squid: Squid, tmp_path: Path
) -> None:
    """The auth port tunnels when the right credentials are sent; the password may be a file."""
    password = tmp_path / "proxy-password"
    password.write_text(squid.password + "\n")
    settings = _settings(
        pki,
        _url(squid.auth_port),
        proxy_username=squid.username,
        proxy_password={"file": str(password)},
    )
    result = await _https(nginx.valid_port, settings)
    assert result.result is Result.OK
    assert f"through proxy {_url(squid.auth_port)}" in result.detail


async def test_missing_credentials_are_auth_failed(nginx: Nginx, pki: Pki, squid: Squid) -> None:
    """Squid's 407 to a CONNECT without credentials is auth_failed: proxy authentication."""
    result = await _https(nginx.valid_port, _settings(pki, _url(squid.auth_port)))
    assert result.result is Result.AUTH_FAILED
    assert result.detail.startswith("proxy authentication required: ")
    assert "407 Proxy Authentication Required, ERR_CACHE_ACCESS_DENIED" in result.detail
    assert Phase.PROXY in result.phases
    assert Phase.TLS not in result.phases


async def test_wrong_credentials_are_auth_failed(nginx: Nginx, pki: Pki, squid: Squid) -> None:
    """A wrong password is auth_failed saying the credentials were rejected, never the password."""
    wrong = "S3CR3T-WRONG-PROXY-PW"
    settings = _settings(
        pki, _url(squid.auth_port), proxy_username=squid.username, proxy_password=wrong
    )
    result = await _https(nginx.valid_port, settings)
    assert result.result is Result.AUTH_FAILED
    assert "credentials rejected" in result.detail
    assert wrong not in result.detail


async def test_policy_deny_is_refused(pki: Pki, squid: Squid) -> None:
    """Squid's ACL denying a destination port gives 403: refused, with "proxy policy"."""
    result = await _https(squid.denied_port, _settings(pki, _url(squid.open_port)))
    assert result.result is Result.REFUSED
    assert "proxy policy" in result.detail
    assert f"CONNECT {HOST}:{squid.denied_port} with 403 Forbidden, ERR_ACCESS_DENIED" in (
        result.detail
    )


async def test_upstream_down_is_unreachable(pki: Pki, squid: Squid) -> None:
    """A closed port behind squid is its 503 ERR_CONNECT_FAIL: unreachable, upstream named."""
    closed = free_tcp_port()
    result = await _https(closed, _settings(pki, _url(squid.open_port)))
    assert result.result is Result.UNREACHABLE
    assert result.detail.startswith(
        f"the proxy could not reach {HOST}:{closed} (Connection refused): "
    )
    assert "503 Service Unavailable, ERR_CONNECT_FAIL" in result.detail


async def test_proxy_down_is_unreachable_naming_the_proxy(nginx: Nginx, pki: Pki) -> None:
    """A proxy that nothing listens on is unreachable, named, and the destination not tried."""
    proxy_port = free_tcp_port()
    result = await _https(nginx.valid_port, _settings(pki, _url(proxy_port)))
    assert result.result is Result.UNREACHABLE
    assert result.detail == (
        f"proxy {_url(proxy_port)} refused the connection (proxy down or not listening there); "
        "destination not tried"
    )
    assert Phase.PROXY not in result.phases


async def test_expired_certificate_through_squid(nginx: Nginx, pki: Pki, squid: Squid) -> None:
    """A bad certificate behind the proxy is tls_error; its expiry is read through a tunnel."""
    result = await _https(nginx.expired_port, _settings(pki, _url(squid.open_port)))
    assert result.result is Result.TLS_ERROR
    assert "certificate has expired" in result.detail
    assert result.tls_cert_expiry_seconds == pki.expired.not_after.timestamp()


async def test_proxy_from_the_environment(
    nginx: Nginx, pki: Pki, squid: Squid, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`proxy: env` uses HTTPS_PROXY, its URL's credentials included, shown without them."""
    url = f"http://{squid.username}:{squid.password}@{HOST}:{squid.auth_port}"
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", url)
    result = await _https(nginx.valid_port, _settings(pki, "env"))
    assert result.result is Result.OK
    assert f"through proxy {_url(squid.auth_port)}" in result.detail
    assert squid.password not in result.detail


async def test_no_proxy_from_the_environment_goes_direct(
    nginx: Nginx, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host NO_PROXY names is reached directly, even when HTTPS_PROXY points nowhere."""
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", _url(free_tcp_port()))
    monkeypatch.setenv("NO_PROXY", "example.com, 127.0.0.0/8")
    result = await _https(nginx.valid_port, _settings(pki, "env"))
    assert result.result is Result.OK
    assert "through proxy" not in result.detail
    assert Phase.PROXY not in result.phases


async def test_environment_without_a_proxy_goes_direct(
    nginx: Nginx, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`proxy: env` with no HTTPS_PROXY set connects directly."""
    for name in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    result = await _https(nginx.valid_port, _settings(pki, "env"))
    assert result.result is Result.OK
    assert "through proxy" not in result.detail


async def test_unusable_environment_proxy_is_exporter_error(
    nginx: Nginx, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An https:// proxy in HTTPS_PROXY is the exporter's problem, named with its variable."""
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "https://user:pw@proxy.example:3128")
    result = await _https(nginx.valid_port, _settings(pki, "env"))
    assert result.result is Result.EXPORTER_ERROR
    assert "environment variable HTTPS_PROXY" in result.detail
    assert "only http:// proxies" in result.detail
    assert "pw" not in result.detail.replace("proxies", "")


async def test_no_proxy_setting_goes_direct(nginx: Nginx, pki: Pki) -> None:
    """A `no_proxy` domain or address of the target bypasses a configured proxy."""
    settings = _settings(pki, _url(free_tcp_port()), no_proxy=["corp.example", "127.0.0.1"])
    result = await _https(nginx.valid_port, settings)
    assert result.result is Result.OK
    assert "through proxy" not in result.detail


@pytest.mark.parametrize(
    ("head", "result_class", "detail"),
    [
        (
            b"HTTP/1.1 503 Service Unavailable\r\nX-Squid-Error: ERR_DNS_FAIL 0\r\n\r\n",
            Result.DNS_ERROR,
            f"the proxy could not resolve {HOST}: ",
        ),
        (
            b"HTTP/1.1 504 Gateway Timeout\r\nX-Squid-Error: ERR_READ_TIMEOUT 0\r\n\r\n",
            Result.TIMEOUT,
            "the proxy timed out reaching",
        ),
        (b"HTTP/1.1 504 Gateway Timeout\r\n\r\n", Result.TIMEOUT, "the proxy timed out reaching"),
        (b"HTTP/1.0 502 Bad Gateway\r\n\r\n", Result.UNREACHABLE, "the proxy could not reach"),
        (b"HTTP/1.1 405 Method Not Allowed\r\n\r\n", Result.SERVICE_ERROR, "with 405"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", Result.PROTOCOL_MISMATCH, "is not an HTTP proxy"),
        (
            b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * (200 * 1024),
            Result.PROTOCOL_MISMATCH,
            "answer to CONNECT exceeds 64 KiB",
        ),
    ],
)
async def test_proxy_answers_are_classified(
    pki: Pki, head: bytes, result_class: Result, detail: str
) -> None:
    """Each kind of proxy answer has its class; upstream failures follow what the proxy says."""
    async with fake_server(_proxy_answer(head)) as proxy_port:
        result = await _https(443, _settings(pki, _url(proxy_port)))
    assert result.result is result_class
    assert detail in result.detail


async def test_silent_proxy_times_out_naming_it(pki: Pki) -> None:
    """A proxy that accepts and never answers CONNECT times out, the proxy named."""
    async with fake_server(silent) as proxy_port:
        result = await _https(443, _settings(pki, _url(proxy_port)), SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert result.detail == f"proxy {_url(proxy_port)} did not answer CONNECT {HOST}:443 in time"


async def test_proxy_closing_at_once_is_service_error(pki: Pki) -> None:
    """A proxy that closes without answering is a service_error naming the proxy."""
    async with fake_server(closes_at_once) as proxy_port:
        result = await _https(443, _settings(pki, _url(proxy_port)))
    assert result.result is Result.SERVICE_ERROR
    assert f"proxy {_url(proxy_port)} closed the connection before answering CONNECT" == (
        result.detail
    )


async def test_ssh_server_as_proxy_is_protocol_mismatch(pki: Pki, sshd: Sshd) -> None:
    """A real sshd configured as the proxy is named as no HTTP proxy."""
    result = await _https(443, _settings(pki, _url(sshd.port)))
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "is not an HTTP proxy: it answered CONNECT with 'SSH-2.0-OpenSSH_" in result.detail


async def test_slow_drip_proxy_is_bounded_by_the_timeout(pki: Pki) -> None:
    """A proxy dripping its answer byte by byte ends within the check's timeout."""

    async def dripping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await drip(writer, b"HTTP/1.1 200 Connection established\r\n" * 1000, 0.01)

    async with fake_server(dripping) as proxy_port:
        result = await _https(443, _settings(pki, _url(proxy_port)), SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert "did not answer CONNECT" in result.detail
    assert result.duration_seconds < SHORT_TIMEOUT_S + 0.5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"proxy": "http://u:p@proxy.example:3128"}, "use proxy_username and proxy_password"),
        ({"proxy": "https://proxy.example:3128"}, "only http:// proxies are supported"),
        ({"proxy": "http://proxy.example"}, "names no port"),
        ({"proxy": "http://proxy.example:3128/path"}, "no path, query or fragment"),
        ({"proxy": "http://proxy.example:3128", "proxy_username": "u"}, "go together"),
        ({"proxy": "http://proxy.example:3128", "proxy_username": "a:b", "proxy_password": "x"},
         "cannot hold ':'"),
        ({"no_proxy": ["corp.example"]}, "need a proxy"),
        ({"proxy": "env", "no_proxy": ["bad entry!"]}, "is not a host, domain"),
    ],
)  # fmt: skip
def test_invalid_proxy_settings_are_rejected(overrides: dict[str, object], message: str) -> None:
    """Malformed proxy settings are refused when the config is loaded, each with its reason."""
    with pytest.raises(ValidationError, match=message):
        HttpsSettings.model_validate(overrides)


def test_plain_http_takes_no_proxy() -> None:
    """The `http` check has no proxy settings: a proxy key there is an unknown field."""
    assert CHECKS["http"].settings_model is HttpSettings
    with pytest.raises(ValidationError, match="proxy"):
        HttpSettings.model_validate({"proxy": "http://proxy.example:3128"})
