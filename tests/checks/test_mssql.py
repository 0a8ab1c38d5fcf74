"""`mssql` and `mssql_browser` checks against the spec-written SQL Server and Browser, nginx,
closed ports and a silent UDP port."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pydantic
import pymssql
import pytest

from exporter.blocking import BlockingPool
from exporter.catalogue import FLOWS
from exporter.checks import CHECKS, Target
from exporter.checks.mssql import (
    MssqlBrowserSettings,
    MssqlSettings,
    build_prelogin,
    parse_prelogin_reply,
    parse_svr_resp,
)
from exporter.config import parse_config
from exporter.errors import CheckFailure, ConfigError
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.runner import run_check
from exporter.secrets import SecretRef
from tests.checks.fakes import HOST, closes_at_once, fake_server, sends_then_waits
from tests.fakes.tds import browser, prelogin_reply, tds_server
from tests.peers.nginx import Nginx
from tests.peers.ports import free_tcp_port, free_udp_port
from tests.peers.udp import silent, udp_peer

USER = "monitor"
PASSWORD = "Corr3ct-Horse"
SHORT_TIMEOUT_S = 0.5
WORKER_RETURN_BOUND_S = 10.0  # pymssql gives up 1 s after a 0.5 s check; far below this


@pytest.fixture
def pool() -> Iterator[BlockingPool]:
    """The blocking pool a login runs on, as the exporter owns it."""
    with BlockingPool(2) as blocking:
        yield blocking


async def _mssql(
    port: int,
    settings: MssqlSettings | None = None,
    *,
    pool: BlockingPool | None = None,
    timeout_seconds: float = 5.0,
) -> CheckResult:
    outcome = await run_check(
        CHECKS["mssql"],
        Target(HOST, port),
        settings or MssqlSettings(),
        timeout_seconds,
        blocking=pool,
    )
    assert not outcome.defect
    return outcome.result


async def _browser(
    port: int, settings: MssqlBrowserSettings | None = None, timeout_seconds: float = 5.0
) -> CheckResult:
    outcome = await run_check(
        CHECKS["mssql_browser"],
        Target(HOST, port),
        settings or MssqlBrowserSettings(),
        timeout_seconds,
    )
    assert not outcome.defect
    return outcome.result


def test_prelogin_request_matches_the_specification_layout() -> None:
    """Our PRELOGIN is the MS-TDS 4.1 sample's layout, and our parser reads the sample."""
    sample = bytes.fromhex(
        "12 01 00 2F 00 00 01 00 00 00 1A 00 06 01 00 20 00 01 02 00 21 00 01 03 00 22 00 04"
        " 04 00 26 00 01 FF 09 00 00 00 00 00 01 00 B8 0D 00 00 01"
    )
    ours = build_prelogin()
    assert len(ours) == len(sample) == 47
    assert ours[:8] == sample[:8]
    assert ours[8:34] == sample[8:34]  # the option table: VERSION first, then the others
    parsed = parse_prelogin_reply(sample[8:])  # an answer has the same layout
    assert (parsed.version, parsed.encryption) == ("9.0.0", 1)


def test_prelogin_reply_parses_version_and_encryption() -> None:
    """The VERSION option becomes major.minor.build, the ENCRYPTION option its byte."""
    parsed = parse_prelogin_reply(prelogin_reply())
    assert (parsed.version, parsed.major, parsed.encryption) == ("16.0.4135", 16, 2)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00\x00\x06\x00\x06", b"\x01\x00\x06\x00\x01\xff\x00", b"\x00\x00\x30\x00\x06\xff"],
)
def test_malformed_prelogin_reply_is_protocol_mismatch(payload: bytes) -> None:
    """No terminator, no VERSION or an option past the end: a protocol_mismatch, not a crash."""
    with pytest.raises(CheckFailure) as raised:
        parse_prelogin_reply(payload)
    assert raised.value.result is Result.PROTOCOL_MISMATCH


def test_svr_resp_splits_records_at_server_name() -> None:
    """An empty value's `;;` does not end a record; each instance keeps its own TCP port."""
    body = (
        b"ServerName;S1;InstanceName;A;IsClustered;No;Version;15.0.2000.5;tcp;1433;np;;;"
        b"ServerName;S1;InstanceName;B;IsClustered;No;Version;15.0.2000.5;np;\\\\S1\\pipe;;"
    )
    instances = parse_svr_resp(b"\x05" + len(body).to_bytes(2, "little") + body)
    assert [(i.name, i.tcp_port) for i in instances] == [("A", 1433), ("B", None)]


async def test_prelogin_ok_with_version_and_encryption() -> None:
    """Without credentials the pre-login reports SQL Server's version and encryption setting."""
    async with tds_server(USER, PASSWORD) as fake:
        result = await _mssql(fake.port)
    assert result.result is Result.OK, result.detail
    assert result.peer == PeerInfo(product="SQL Server", version="16.0.4135")
    assert result.detail == "SQL Server 2022 (16.0.4135), encryption not supported"
    assert {Phase.CONNECT, Phase.HANDSHAKE} <= set(result.phases)
    assert Phase.AUTH not in result.phases
    assert fake.logins == []  # no login attempt in the server's log


async def test_login_ok_reads_the_version(pool: BlockingPool) -> None:
    """With the right credentials pymssql logs in on the pool and `SELECT @@VERSION` is quoted."""
    async with tds_server(USER, PASSWORD) as fake:
        settings = MssqlSettings(username=USER, password=PASSWORD)
        result = await _mssql(fake.port, settings, pool=pool)
    assert result.result is Result.OK, result.detail
    assert f"login as {USER} ok: Microsoft SQL Server 2022" in result.detail
    assert Phase.AUTH in result.phases
    assert fake.logins == [(USER, True)]


async def test_wrong_password_is_auth_failed_with_18456(pool: BlockingPool) -> None:
    """A wrong password is auth_failed naming SQL Server's error 18456; the password is absent."""
    async with tds_server(USER, PASSWORD) as fake:
        settings = MssqlSettings(username=USER, password="not-the-password")
        result = await _mssql(fake.port, settings, pool=pool)
    assert result.result is Result.AUTH_FAILED
    assert result.detail.startswith("SQL Server error 18456 (login failed)")
    assert "not-the-password" not in result.detail
    assert result.peer == PeerInfo(product="SQL Server", version="16.0.4135")
    assert fake.logins == [(USER, False)]


async def test_hung_login_times_out_and_frees_the_worker(pool: BlockingPool) -> None:
    """A server that never answers LOGIN7: timeout during auth, and pymssql's own login
    timeout (whole seconds, rounded up from the time left) hands the worker back."""
    async with tds_server(USER, PASSWORD) as fake:
        fake.answer_logins = False
        settings = MssqlSettings(username=USER, password=PASSWORD)
        result = await _mssql(fake.port, settings, pool=pool, timeout_seconds=SHORT_TIMEOUT_S)
        assert await asyncio.to_thread(pool.wait_idle, WORKER_RETURN_BOUND_S)
    assert result.result is Result.TIMEOUT
    assert result.detail == f"no answer within {SHORT_TIMEOUT_S:g}s during auth"
    assert fake.logins == [(USER, True)]


async def test_named_instance_port_from_the_browser() -> None:
    """An `instance` is looked up through the Browser and the pre-login goes to its TCP port."""
    async with (
        tds_server(USER, PASSWORD) as fake,
        browser({"MSSQLSERVER": 1, "SQLEXPRESS": fake.port}) as sql_browser,
    ):
        settings = MssqlSettings(instance="sqlexpress", browser_port=sql_browser.port)
        result = await _mssql(free_tcp_port(), settings)
    assert result.result is Result.OK, result.detail
    assert result.detail.startswith(
        f"instance sqlexpress on TCP port {fake.port} (from the Browser)"
    )
    assert sql_browser.received == [b"\x04sqlexpress\x00"]


async def test_unknown_instance_is_a_timeout_naming_the_instance() -> None:
    """The Browser stays silent for an instance it does not know: a timeout saying so."""
    async with browser({"SQLEXPRESS": 1}) as sql_browser:
        settings = MssqlSettings(instance="OTHER", browser_port=sql_browser.port)
        result = await _mssql(1, settings, timeout_seconds=SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert "for instance OTHER" in result.detail
    assert "the instance is unknown there" in result.detail


async def test_instance_with_closed_browser_port_is_refused() -> None:
    """Nothing on the Browser's UDP port: refused, before any TCP connection."""
    settings = MssqlSettings(instance="SQLEXPRESS", browser_port=free_udp_port())
    result = await _mssql(1, settings)
    assert result.result is Result.REFUSED
    assert "UDP port" in result.detail


async def test_closed_port_is_refused() -> None:
    """Nothing listens on the TCP port: refused."""
    result = await _mssql(free_tcp_port())
    assert result.result is Result.REFUSED


async def test_http_server_is_protocol_mismatch(nginx: Nginx) -> None:
    """nginx answers the binary pre-login with HTTP: protocol_mismatch quoting it."""
    result = await _mssql(nginx.http_port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail == "not a TDS server: it sent 'HTTP/1.1'"


async def test_peer_closing_without_answer_is_service_error() -> None:
    """A peer that closes at once (or a strict-encryption-only server) is a service_error."""
    async with fake_server(closes_at_once) as port:
        result = await _mssql(port)
    assert result.result is Result.SERVICE_ERROR
    assert "without a pre-login answer" in result.detail


async def test_oversized_tds_packet_is_protocol_mismatch() -> None:
    """A tabular-result header announcing more than a pre-login answer can hold is refused."""
    async with fake_server(sends_then_waits(b"\x04\x01\xff\xff\x00\x00\x01\x00")) as port:
        result = await _mssql(port)
    assert result.result is Result.PROTOCOL_MISMATCH


def test_settings_need_username_and_password_together() -> None:
    """A username without a password (or the reverse) is a configuration error."""
    with pytest.raises(pydantic.ValidationError, match="username and password go together"):
        MssqlSettings(username=USER)


def test_settings_reject_a_malformed_instance_name() -> None:
    """`HOST\\INSTANCE` syntax or a long name in `instance` is rejected with the rule."""
    with pytest.raises(pydantic.ValidationError, match="not a SQL Server instance name"):
        MssqlBrowserSettings(instance="db1\\SQLEXPRESS")


async def test_browser_lists_instances_and_ports() -> None:
    """CLNT_UCAST_EX lists every instance with its TCP port, in the detail and the peer info."""
    async with browser({"MSSQLSERVER": 1433, "SQLEXPRESS": 49172}) as sql_browser:
        result = await _browser(sql_browser.port)
    assert result.result is Result.OK, result.detail
    assert result.detail == "2 instance(s) on FAKESQL: MSSQLSERVER tcp 1433, SQLEXPRESS tcp 49172"
    assert result.peer == PeerInfo(
        product="SQL Server Browser", version="MSSQLSERVER:1433 SQLEXPRESS:49172"
    )
    assert sql_browser.received == [b"\x03"]


async def test_browser_peer_info_is_bounded() -> None:
    """Forty instances: the peer info names sixteen and counts the rest, as the detail does."""
    async with browser({f"I{n}": 2000 + n for n in range(40)}) as sql_browser:
        result = await _browser(sql_browser.port)
    assert result.result is Result.OK
    assert result.peer is not None
    assert result.peer.version.endswith("I15:2015 +24")
    assert result.detail.endswith("I15 tcp 2015 and 24 more")


async def test_browser_with_listed_instance_is_ok() -> None:
    """A configured instance that the Browser lists is ok (names compare without case)."""
    async with browser({"SQLEXPRESS": 49172}) as sql_browser:
        result = await _browser(sql_browser.port, MssqlBrowserSettings(instance="SqlExpress"))
    assert result.result is Result.OK


async def test_browser_unknown_instance_is_service_error() -> None:
    """A configured instance the Browser does not list is service_error naming what it lists."""
    async with browser({"SQLEXPRESS": 49172}) as sql_browser:
        result = await _browser(sql_browser.port, MssqlBrowserSettings(instance="REPORTING"))
    assert result.result is Result.SERVICE_ERROR
    assert result.detail.startswith("instance REPORTING is not listed; 1 instance(s) on FAKESQL")


async def test_browser_silent_port_is_timeout() -> None:
    """A UDP port that swallows the request: timeout saying the port is filtered or mute."""
    async with udp_peer(silent) as peer:
        result = await _browser(peer.port, timeout_seconds=SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert "the port is filtered or the service does not answer" in result.detail


async def test_browser_closed_port_is_refused() -> None:
    """ICMP port unreachable on the Browser's port: refused."""
    result = await _browser(free_udp_port())
    assert result.result is Result.REFUSED


async def test_browser_non_ssrp_answer_is_protocol_mismatch() -> None:
    """A UDP service that answers with something else (an echo) is a protocol_mismatch."""
    async with udp_peer(lambda data: b"hello " + data) as peer:
        result = await _browser(peer.port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail.startswith("not a SQL Server Browser answer")


def test_catalogue_flows_run_the_real_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SQL Server flow of the catalogue runs `mssql` or `mssql_browser`, with its settings."""
    monkeypatch.setenv("SQL_PW", PASSWORD)
    config = parse_config(
        "source: application_server\n"
        "targets: {database_server: [db1]}\n"
        "flows:\n"
        "  mssql_app_db: {instance: SQLEXPRESS, username: monitor, password: {env: SQL_PW}}\n"
        "  mssql_browser_app_db: {instance: SQLEXPRESS}\n",
        "inline.yaml",
    )
    jobs = {job.flow_id: job for job in config.jobs}
    assert (jobs["mssql_app_db"].check, jobs["mssql_browser_app_db"].check) == (
        "mssql",
        "mssql_browser",
    )
    assert str(jobs["mssql_browser_app_db"].target) == "db1:1434"
    settings = jobs["mssql_app_db"].settings
    assert isinstance(settings, MssqlSettings)
    assert settings.instance == "SQLEXPRESS"
    assert isinstance(settings.password, SecretRef)
    flows = {flow.id: flow for flow in FLOWS}
    for flow_id in ("mssql_app_db", "mssql_reporting", "mssql_ilmt", "mssql_bigfix", "mssql_sccm"):
        assert flows[flow_id].check == "mssql"
    assert flows["mssql_browser_app_db"].check == "mssql_browser"


def test_misspelt_setting_is_named() -> None:
    """A misspelt key in an SQL Server flow block is a configuration error naming it."""
    with pytest.raises(ConfigError, match="instnace"):
        parse_config(
            "source: application_server\ntargets: {database_server: [db1]}\n"
            "flows: {mssql_app_db: {instnace: SQLEXPRESS}}\n",
            "inline.yaml",
        )


@pytest.mark.parametrize(
    ("code", "message", "result", "detail"),
    [
        (
            18456,
            b"Login failed for user 'monitor'.DB-Lib error message 20018, severity 14:\n",
            Result.AUTH_FAILED,
            "SQL Server error 18456 (login failed): Login failed for user 'monitor'.",
        ),
        (
            18486,
            b"DB-Lib error message 20018",
            Result.AUTH_FAILED,
            "SQL Server error 18486 (account locked out)",
        ),
        (
            20009,
            b"DB-Lib error message 20009, severity 9:\nUnable to connect\nNet-Lib error during Connection refused (111)\n",
            Result.REFUSED,
            "pymssql error 20009: connection refused",
        ),
        (
            20003,
            b"DB-Lib error message 20003, severity 6:\nAdaptive Server connection timed out\n",
            Result.TIMEOUT,
            "pymssql error 20003: DB-Lib error message 20003, severity 6: Adaptive Server connection timed out",
        ),
        (
            20002,
            b"DB-Lib error message 20002, severity 9:\nAdaptive Server connection failed\n",
            Result.SERVICE_ERROR,
            "pymssql error 20002: DB-Lib error message 20002, severity 9: Adaptive Server connection failed",
        ),
    ],
)
def test_pymssql_errors_are_classified(
    code: int, message: bytes, result: Result, detail: str
) -> None:
    """pymssql's `OperationalError((code, message))` becomes a class with the number in the detail."""
    error = pymssql.OperationalError((code, message))
    assert CHECKS["mssql"].classify is not None
    assert CHECKS["mssql"].classify(error, Phase.AUTH) == (result, detail)
    assert CHECKS["mssql"].classify(ValueError("other"), Phase.AUTH) is None
