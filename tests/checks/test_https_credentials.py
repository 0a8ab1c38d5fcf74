"""A flow's headers and query parameters reach its own origin only; details never show them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from exporter.checks import CHECKS, Target
from exporter.checks.https import HttpSettings
from exporter.result import Result
from exporter.runner import RunOutcome, run_check
from exporter.secrets import SecretRef
from tests.checks.fakes import fake_server

FIRST_HOST, OTHER_HOST = "127.0.0.1", "127.0.0.2"
HEADER_SECRET = "S3CR3T-HDR-1a2b"
FILE_SECRET = "S3CR3T-FILE-3c4d"
ENV_SECRET = "S3CR3T-ENV-5e6f"
COOKIE_SECRET = "S3CR3T-COOKIE-7a8b"
SECRETS = (HEADER_SECRET, FILE_SECRET, ENV_SECRET, COOKIE_SECRET)
ENV_NAME = "CFE_TEST_QUERY_SECRET"
MAX_REQUESTS = 16  # a redirect loop in the code under test must not make the test run forever


@dataclass
class Listener:
    """A tiny HTTP server that records each request head and answers with a fixed response."""

    response: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    heads: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(self.heads) < MAX_REQUESTS:
            self.heads.append(head.decode("latin-1"))
        writer.write(self.response)
        await writer.drain()

    def redirect_to(self, location: str) -> None:
        self.response = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\n\r\n".encode()


@asynccontextmanager
async def listening(host: str) -> AsyncIterator[tuple[Listener, int]]:
    listener = Listener()
    async with fake_server(listener.handle, host) as port:
        yield listener, port


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HttpSettings:
    """Credentials inline, by file and by environment variable, in headers and the query."""
    secret_file = tmp_path / "api-key"
    secret_file.write_text(FILE_SECRET + "\n", encoding="utf-8")
    monkeypatch.setenv(ENV_NAME, ENV_SECRET)
    return HttpSettings.model_validate(
        {
            "path": "/start",
            "server_name": "api.internal.example",
            "headers": {
                "Authorization": f"Bearer {HEADER_SECRET}",
                "Cookie": f"session={COOKIE_SECRET}",
                "X-Api-Key": {"file": str(secret_file)},
            },
            "query": {"token": {"env": ENV_NAME}},
            "follow_redirects": True,
        }
    )


async def _http(port: int, settings: HttpSettings) -> RunOutcome:
    return await run_check(
        CHECKS["http"], Target(FIRST_HOST, port), settings, 5.0, capture_log=True
    )


def _secrets_in(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


async def test_redirect_to_another_host_drops_headers_and_query(settings: HttpSettings) -> None:
    """The first host gets every credential; the host a redirect points to gets none of them,
    nor the flow's server name."""
    async with listening(FIRST_HOST) as (first, first_port), listening(OTHER_HOST) as (other, port):
        first.redirect_to(f"http://{OTHER_HOST}:{port}/landing")
        outcome = await _http(first_port, settings)
    assert outcome.result.result is Result.OK, outcome.result.detail
    assert len(first.heads) == 1
    assert sorted(_secrets_in(first.heads[0])) == sorted(SECRETS)
    assert f"GET /start?token={ENV_SECRET} HTTP/1.1" in first.heads[0]
    assert f"Host: api.internal.example:{first_port}\r\n" in first.heads[0]
    assert len(other.heads) == 1
    assert _secrets_in(other.heads[0]) == []
    assert other.heads[0].startswith("GET /landing HTTP/1.1\r\n")
    assert f"Host: {OTHER_HOST}:{port}\r\n" in other.heads[0]
    assert "flow_settings=dropped (another origin)" in "\n".join(outcome.log_lines)


async def test_redirect_to_same_host_other_port_drops_them(settings: HttpSettings) -> None:
    """Another port on the same host is another origin, as in curl since CVE-2022-27776."""
    async with listening(FIRST_HOST) as (first, first_port), listening(FIRST_HOST) as (other, port):
        first.redirect_to(f"http://{FIRST_HOST}:{port}/landing")
        outcome = await _http(first_port, settings)
    assert outcome.result.result is Result.OK, outcome.result.detail
    assert sorted(_secrets_in(first.heads[0])) == sorted(SECRETS)
    assert _secrets_in(other.heads[0]) == []


async def test_redirect_on_the_same_origin_keeps_them(settings: HttpSettings) -> None:
    """A redirect to another path of the same origin sends headers and query again."""
    async with listening(FIRST_HOST) as (first, port):
        first.redirect_to("/landing")
        settings = settings.model_copy(update={"max_redirects": 1})
        outcome = await _http(port, settings)
    assert outcome.result.result is Result.SERVICE_ERROR  # the second 302 exceeds max_redirects
    assert [head.split("\r\n")[0] for head in first.heads] == [
        f"GET /start?token={ENV_SECRET} HTTP/1.1",
        f"GET /landing?token={ENV_SECRET} HTTP/1.1",
    ]
    assert sorted(_secrets_in(first.heads[1])) == sorted(SECRETS)
    assert "flow_settings=sent" in "\n".join(outcome.log_lines)


async def test_detail_and_debug_lines_show_urls_redacted(settings: HttpSettings) -> None:
    """The ok detail and the redirect line show query values and userinfo as <redacted>."""
    async with listening(FIRST_HOST) as (first, first_port), listening(OTHER_HOST) as (other, port):
        first.redirect_to(
            f"http://user:{HEADER_SECRET}@{OTHER_HOST}:{port}/landing?sig={COOKIE_SECRET}"
        )
        outcome = await _http(first_port, settings)
    shown = outcome.result.detail + "\n" + "\n".join(outcome.log_lines)
    assert _secrets_in(shown) == []
    assert outcome.result.detail.startswith("HTTP 200 OK for GET /landing?sig=<redacted>")
    location = f"location=http://<redacted>@{OTHER_HOST}:{port}/landing?sig=<redacted>"
    assert location in shown
    assert other.heads[0].startswith(f"GET /landing?sig={COOKIE_SECRET} HTTP/1.1")


async def test_ok_detail_redacts_the_query_of_path() -> None:
    """A token written inline in `path` is sent but shown as <redacted>."""
    settings = HttpSettings(path=f"/health?token={HEADER_SECRET}&v=2")
    async with listening(FIRST_HOST) as (listener, port):
        outcome = await _http(port, settings)
    assert outcome.result.detail == "HTTP 200 OK for GET /health?token=<redacted>&v=<redacted>"
    assert _secrets_in("\n".join(outcome.log_lines)) == []
    assert listener.heads[0].startswith(f"GET /health?token={HEADER_SECRET}&v=2 HTTP/1.1")


async def test_unreadable_reference_is_exporter_error_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unset variable at run time is exporter_error naming the variable; nothing is sent."""
    monkeypatch.delenv("CFE_TEST_UNSET_TOKEN", raising=False)
    settings = HttpSettings(headers={"Authorization": SecretRef(env="CFE_TEST_UNSET_TOKEN")})
    async with listening(FIRST_HOST) as (listener, port):
        outcome = await _http(port, settings)
    assert outcome.result.result is Result.EXPORTER_ERROR
    assert (
        outcome.result.detail == "not checked: environment variable CFE_TEST_UNSET_TOKEN is not set"
    )
    assert listener.heads == []


async def test_referenced_header_with_a_line_break_is_refused(tmp_path: Path) -> None:
    """A secret file holding a line break cannot inject a header; the error names the file."""
    secret_file = tmp_path / "token"
    secret_file.write_text(f"{HEADER_SECRET}\r\nX-Injected: 1\n", encoding="utf-8")
    settings = HttpSettings(headers={"Authorization": SecretRef(file=secret_file)})
    async with listening(FIRST_HOST) as (listener, port):
        outcome = await _http(port, settings)
    assert outcome.result.result is Result.EXPORTER_ERROR
    assert str(secret_file) in outcome.result.detail
    assert _secrets_in(outcome.result.detail) == []
    assert listener.heads == []
