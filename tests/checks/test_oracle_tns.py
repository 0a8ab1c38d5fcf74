"""`oracle_tns` check against a fake TNS listener (proven by python-oracledb and nmap), nginx and
misbehaving servers.

Oracle cannot be installed here. The fake listener (tests/peers/tns_listener.py) answers the
connection phase and refuses every login with ORA-01017; python-oracledb (sync and asyncio) and
nmap's `oracle-tns-version` are its independent clients below. The account errors a fake with no
users cannot produce (ORA-28000, ORA-28001, ORA-01034) are shown on the exception objects
python-oracledb's thin mode raises (its `_Error` with the server's code, as
`Message._check_and_raise_exception` builds them).
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
from collections.abc import Iterator

import oracledb
import pydantic
import pytest
from oracledb.errors import _Error

from exporter.checks import CHECKS, Target
from exporter.checks.oracle_tns import (
    MAX_INLINE_CONNECT_DATA,
    OracleTnsSettings,
    classify,
    decode_vsnnum,
)
from exporter.classify import classify as classify_any
from exporter.config import parse_config
from exporter.errors import ConfigError
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.runner import run_check
from tests.checks.fakes import (
    HOST,
    Handler,
    closes_at_once,
    fake_server,
    sends_then_waits,
    silent,
    wait_for_client_to_leave,
)
from tests.peers.nginx import Nginx
from tests.peers.ports import free_tcp_port
from tests.peers.tns_listener import (
    ACCEPT,
    HEADER,
    MARKER,
    REDIRECT,
    REFUSE,
    TTC_DATA_TYPES,
    TTC_FUNCTION,
    TTC_PROTOCOL,
    TnsListener,
    accept,
    packet,
    refuse,
    run_tns_listener,
)

SHORT_TIMEOUT_S = 1.0
SERVICE = "orclpdb1"
NMAP = "/usr/bin/nmap"
# -sV prints what the script found; intensity 0 sends no other version probe (5 s, not 55)
NMAP_OPTIONS = ("-n", "-Pn", "-sV", "--version-intensity", "0")
AUTH_PHASE_ONE = 118  # TTC function code of the first authentication message
LISTENER_19C = PeerInfo(product="Oracle TNS listener", version="19.0.0.0.0")


@pytest.fixture
def listener() -> Iterator[TnsListener]:
    """A fake listener named LISTENER (19c) knowing the service orclpdb1."""
    with run_tns_listener(services=(SERVICE,)) as fake:
        yield fake


async def _check(
    port: int, settings: OracleTnsSettings | None = None, timeout_seconds: float = 5.0
) -> CheckResult:
    outcome = await run_check(
        CHECKS["oracle_tns"], Target(HOST, port), settings or OracleTnsSettings(), timeout_seconds
    )
    assert not outcome.defect
    return outcome.result


async def test_ping_is_ok_with_alias_and_version(listener: TnsListener) -> None:
    """A ping answered with ERR=0 is ok; alias and decoded VSNNUM are reported."""
    result = await _check(listener.port)
    assert result.result is Result.OK
    assert result.detail == "listener LISTENER answered the ping (19.0.0.0.0)"
    assert result.peer == LISTENER_19C
    assert listener.requests == ["(CONNECT_DATA=(COMMAND=ping))"]
    assert {Phase.CONNECT, Phase.HANDSHAKE} <= set(result.phases)


async def test_undisclosed_version_is_said_so() -> None:
    """VSNNUM=0 (current listeners) is no version, and the detail says it is not disclosed."""
    with run_tns_listener(alias="LISTENER_PROD", vsnnum=0) as fake:
        result = await _check(fake.port)
    assert result.result is Result.OK
    assert result.detail == "listener LISTENER_PROD answered the ping (version not disclosed)"
    assert result.peer == PeerInfo(product="Oracle TNS listener", version="")


def test_vsnnum_decoding() -> None:
    """VSNNUM decodes to Oracle's five-part version as nmap decodes it; 0 means undisclosed."""
    assert decode_vsnnum(202375680) == "12.1.0.2.0"
    assert decode_vsnnum(318767104) == "19.0.0.0.0"
    assert decode_vsnnum(153092352) == "9.2.0.1.0"
    assert decode_vsnnum(0) == ""


async def test_known_service_is_ok_after_a_resend() -> None:
    """A registered service: the listener asks for a resend, then accepts; that is ok."""
    with run_tns_listener(services=(SERVICE,), resend_first=True) as fake:
        result = await _check(fake.port, OracleTnsSettings(service_name=SERVICE))
    assert result.result is Result.OK
    assert result.detail.endswith(f", service {SERVICE} accepted")
    service_requests = [r for r in fake.requests if "SERVICE_NAME" in r]
    assert len(service_requests) == 2  # the CONNECT, then the same CONNECT again
    assert f"(SERVICE_NAME={SERVICE})" in service_requests[0]


async def test_unknown_service_is_service_error(listener: TnsListener) -> None:
    """A service the listener does not know (ERR=12514) is service_error naming ORA-12514."""
    result = await _check(listener.port, OracleTnsSettings(service_name="nosuch"))
    assert result.result is Result.SERVICE_ERROR
    assert result.detail == "service 'nosuch' is not registered with the listener (ORA-12514)"
    assert result.peer == LISTENER_19C


async def test_long_connect_data_is_sent_in_a_data_packet(listener: TnsListener) -> None:
    """Connect data over 230 bytes follows the CONNECT in a DATA packet and still arrives whole."""
    name = "s" * MAX_INLINE_CONNECT_DATA
    result = await _check(listener.port, OracleTnsSettings(service_name=name))
    assert result.result is Result.SERVICE_ERROR
    assert "ORA-12514" in result.detail
    assert f"(SERVICE_NAME={name})" in listener.requests[-1]
    assert listener.requests[-1].endswith(f"(PORT={listener.port})))")


async def test_ping_refused_with_an_error_is_service_error() -> None:
    """A listener answering the ping with ERR=1189 (remote commands refused) is service_error."""
    text = "(DESCRIPTION=(TMP=)(VSNNUM=318767104)(ERR=1189)(ERROR_STACK=(ERROR=(CODE=1189))))"
    async with fake_server(sends_then_waits(refuse(text))) as port:
        result = await _check(port)
    assert result.result is Result.SERVICE_ERROR
    assert "TNS-01189" in result.detail
    assert result.peer == LISTENER_19C


async def test_refused_on_closed_port() -> None:
    """A closed port is refused."""
    result = await _check(free_tcp_port())
    assert result.result is Result.REFUSED


async def test_http_server_is_protocol_mismatch(nginx: Nginx) -> None:
    """nginx answers the CONNECT with an HTTP 400, which is no TNS packet: protocol_mismatch."""
    result = await _check(nginx.http_port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail == "not an Oracle TNS listener: it sent 'HTTP/1.1'"


async def test_silent_listener_times_out() -> None:
    """A server that accepts and never answers the CONNECT times out during the handshake."""
    async with fake_server(silent) as port:
        result = await _check(port, timeout_seconds=SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert "during handshake" in result.detail


async def test_closed_without_an_answer_is_service_error() -> None:
    """A server that closes before answering is a service_error about the close."""
    async with fake_server(closes_at_once) as port:
        result = await _check(port)
    assert result.result is Result.SERVICE_ERROR
    assert "closed" in result.detail


async def test_oversized_packet_is_protocol_mismatch() -> None:
    """A TNS header announcing 64 KiB is refused before its body is read."""
    async with fake_server(sends_then_waits(HEADER.pack(0xFFFF, 0, REFUSE, 0, 0))) as port:
        result = await _check(port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "longer than any listener answer" in result.detail


async def test_refuse_without_description_is_protocol_mismatch() -> None:
    """A REFUSE whose text is no listener description is a protocol_mismatch."""
    async with fake_server(sends_then_waits(refuse("hello"))) as port:
        result = await _check(port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "without a listener description" in result.detail


async def test_endless_resend_is_service_error() -> None:
    """A peer asking for the CONNECT again and again is stopped after three resends."""
    async with fake_server(sends_then_waits(packet(11, b"") * 10)) as port:
        result = await _check(port)
    assert result.result is Result.SERVICE_ERROR
    assert "asked for the CONNECT again 3 times" in result.detail


PING_OK = refuse("(DESCRIPTION=(TMP=)(VSNNUM=318767104)(ERR=0)(ALIAS=LISTENER))")


def answers(ping_reply: bytes, connect_reply: bytes) -> Handler:
    """A listener answering a ping with one packet and any other CONNECT with another."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(HEADER.size)
        body = await reader.readexactly(HEADER.unpack(header)[0] - HEADER.size)
        writer.write(ping_reply if b"(COMMAND=ping)" in body else connect_reply)
        await wait_for_client_to_leave(reader)

    return handler


async def test_redirect_means_the_service_is_known() -> None:
    """A REDIRECT to a dispatcher (shared server, RAC) says the service is registered: ok."""
    address = b"(ADDRESS=(PROTOCOL=TCP)(HOST=10.0.0.2)(PORT=1522))\0(DESCRIPTION=)"
    redirect = packet(REDIRECT, struct.pack(">H", len(address)) + address)
    async with fake_server(answers(PING_OK, redirect)) as port:
        result = await _check(port, OracleTnsSettings(service_name=SERVICE))
    assert result.result is Result.OK
    assert result.detail.endswith(f"service {SERVICE} known (redirected to a handler)")


async def test_other_refusal_of_a_service_names_its_code() -> None:
    """A REFUSE with another error (12528: blocking new connections) is service_error with it."""
    blocked = refuse("(DESCRIPTION=(TMP=)(VSNNUM=318767104)(ERR=12528))")
    async with fake_server(answers(PING_OK, blocked)) as port:
        result = await _check(port, OracleTnsSettings(service_name=SERVICE))
    assert result.result is Result.SERVICE_ERROR
    assert result.detail == (
        f"service '{SERVICE}': the service is blocking new connections (ORA-12528)"
    )


async def test_unexpected_packet_types_are_protocol_mismatch() -> None:
    """An ACCEPT to a ping, or a MARKER to a CONNECT, is not what a listener sends."""
    async with fake_server(answers(packet(ACCEPT, b"\0" * 24), PING_OK)) as port:
        ping = await _check(port)
    async with fake_server(answers(PING_OK, packet(MARKER, b"\1\0\1"))) as port:
        service = await _check(port, OracleTnsSettings(service_name=SERVICE))
    assert ping.result is service.result is Result.PROTOCOL_MISMATCH
    assert "answered a ping with TNS packet type 2" in ping.detail
    assert "answered a CONNECT with TNS packet type 12" in service.detail


async def test_wrong_credentials_against_the_fake_are_auth_failed(listener: TnsListener) -> None:
    """With credentials, python-oracledb logs in for real; the server's ORA-01017 is auth_failed."""
    settings = OracleTnsSettings(service_name=SERVICE, username="scott", password="tiger")
    result = await _check(listener.port, settings)
    assert result.result is Result.AUTH_FAILED
    assert "ORA-01017" in result.detail
    assert "tiger" not in result.detail
    assert Phase.AUTH in result.phases
    assert "(PROGRAM=certero-flow-exporter)" in listener.requests[-1]
    assert [message for message, _ in listener.ttc] == [TTC_PROTOCOL, TTC_DATA_TYPES, TTC_FUNCTION]


async def test_database_older_than_12_1_is_service_error() -> None:
    """An ACCEPT at protocol version 310 (11g) stops thin mode at DPY-3010, which is named."""
    settings = OracleTnsSettings(service_name=SERVICE, username="scott", password="tiger")
    with run_tns_listener(services=(SERVICE,), accept_version=310) as old:
        result = await _check(old.port, settings)
    assert result.result is Result.SERVICE_ERROR
    assert "DPY-3010" in result.detail
    assert old.ttc == []


async def test_silent_login_times_out_at_the_check_deadline() -> None:
    """A listener that answers ping and service but not the driver's CONNECT: the login is cut
    at the check's deadline and reported as a timeout during auth."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections <= 2:
            await answers(PING_OK, accept())(reader, writer)
        else:
            await wait_for_client_to_leave(reader)

    settings = OracleTnsSettings(service_name=SERVICE, username="scott", password="tiger")
    async with fake_server(handler) as port:
        result = await _check(port, settings, timeout_seconds=SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert "during auth" in result.detail
    assert connections == 3


def test_settings_validation() -> None:
    """A login needs a service and both credentials; a service name cannot inject descriptor."""
    with pytest.raises(pydantic.ValidationError, match="username and password go together"):
        OracleTnsSettings(service_name=SERVICE, username="scott")
    with pytest.raises(pydantic.ValidationError, match="needs service_name"):
        OracleTnsSettings(username="scott", password="tiger")
    with pytest.raises(pydantic.ValidationError, match="letters, digits"):
        OracleTnsSettings(service_name="x)(COMMAND=stop")


def test_catalogue_flow_runs_the_real_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalogue's oracle_tns flow runs this check with its settings, no fallback."""
    monkeypatch.setenv("CFE_ORACLE_PASSWORD", "tiger")
    config = parse_config(
        "source: endpoint_server\n"
        "targets: {oracle_databases: [127.0.0.1]}\n"
        f"flows: {{oracle_tns: {{service_name: {SERVICE}, username: scott, "
        "password: {env: CFE_ORACLE_PASSWORD}}}\n",
        "inline.yaml",
    )
    (job,) = [job for job in config.jobs if job.flow_id == "oracle_tns"]
    assert job.check == "oracle_tns"
    assert isinstance(job.settings, OracleTnsSettings)
    assert job.settings.service_name == SERVICE
    assert not [w for w in config.warnings if "oracle_tns" in w]


def test_config_names_the_flow_setting_at_fault() -> None:
    """A misspelt setting and a login without a service are config errors with their line."""
    head = "source: endpoint_server\ntargets: {oracle_databases: [db1]}\nflows:\n  oracle_tns:\n"
    with pytest.raises(ConfigError) as typo:
        parse_config(head + "    servce_name: orcl\n", "typo.yaml")
    assert str(typo.value) == (
        "typo.yaml:5: flows.oracle_tns.servce_name: unknown field; did you mean 'service_name'?"
    )
    with pytest.raises(ConfigError) as login:
        parse_config(head + "    username: scott\n    password: {env: UNSET}\n", "login.yaml")
    assert str(login.value) == (
        "login.yaml:4: flows.oracle_tns: a login (username/password) needs service_name"
    )


# --- python-oracledb as an independent client of the fake listener ---------------------------


def _oracledb_error(port: int, service: str) -> oracledb.Error:
    with pytest.raises(oracledb.Error) as caught:
        oracledb.connect(
            user="scott", password="tiger", dsn=f"{HOST}:{port}/{service}", tcp_connect_timeout=5
        )
    return caught.value


def test_oracledb_gets_ora_12514_from_the_fake(listener: TnsListener) -> None:
    """python-oracledb reads the fake's REFUSE as ORA-12514 (DPY-6001 inside DPY-6005)."""
    exc = _oracledb_error(listener.port, "nosuch")
    (error,) = exc.args
    assert error.full_code == "DPY-6005"
    assert "DPY-6001" in str(error)
    assert "(Similar to ORA-12514)" in str(error)
    assert classify(exc, Phase.AUTH) == (
        Result.SERVICE_ERROR,
        "login failed: the service is not registered with the listener (ORA-12514)",
    )


def test_oracledb_gets_ora_01017_from_the_fake(listener: TnsListener) -> None:
    """python-oracledb (sync) negotiates with the fake and reads its ERROR message as ORA-01017."""
    exc = _oracledb_error(listener.port, SERVICE)
    assert exc.args[0].full_code == "ORA-01017"
    assert "invalid username/password; logon denied" in str(exc)
    assert "(SERVICE_NAME=orclpdb1)" in listener.requests[-1]
    assert listener.ttc[-1] == (TTC_FUNCTION, AUTH_PHASE_ONE)


async def test_oracledb_asyncio_gets_ora_01017_from_the_fake(listener: TnsListener) -> None:
    """python-oracledb's asyncio driver, as the check calls it, reads the same ORA-01017."""
    with pytest.raises(oracledb.Error) as caught:
        await oracledb.connect_async(
            user="scott", password="tiger", dsn=f"{HOST}:{listener.port}/{SERVICE}", retry_count=0
        )
    assert caught.value.args[0].full_code == "ORA-01017"
    assert [message for message, _ in listener.ttc] == [TTC_PROTOCOL, TTC_DATA_TYPES, TTC_FUNCTION]
    assert listener.ttc[-1] == (TTC_FUNCTION, AUTH_PHASE_ONE)


def test_nmap_identifies_the_fake_listener(listener: TnsListener) -> None:
    """nmap's oracle-tns-version script decodes the fake's version from its version probe."""
    done = subprocess.run(
        [NMAP, *NMAP_OPTIONS, "-p", str(listener.port), "--script", "+oracle-tns-version", HOST],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "Oracle TNS listener 19.0.0.0.0" in done.stdout
    assert "(CONNECT_DATA=(COMMAND=version))" in listener.requests


# --- the login's error mapping on python-oracledb's own exception objects ---------------------


def _database_error(message: str, code: int) -> oracledb.Error:
    """The exception thin mode raises for a server error: `_Error(message, code)` → its type."""
    error = _Error(message, code=code)
    return error.exc_type(error)


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (1017, "ORA-01017: invalid credential or not authorized; logon denied", "ORA-01017"),
        (28000, "ORA-28000: The account is locked.", "ORA-28000"),
        (28001, "ORA-28001: the password has expired", "ORA-28001"),
    ],
)
def test_wrong_credentials_are_auth_failed(code: int, message: str, expected: str) -> None:
    """ORA-01017 and the account errors are auth_failed with their code in the detail."""
    result, detail = classify_any(_database_error(message, code), Phase.AUTH, classify)
    assert result is Result.AUTH_FAILED
    assert expected in detail


def test_instance_down_is_service_error() -> None:
    """ORA-01034 (instance not available) is a service_error quoting Oracle's text."""
    exc = _database_error("ORA-01034: ORACLE not available", 1034)
    result, detail = classify_any(exc, Phase.AUTH, classify)
    assert result is Result.SERVICE_ERROR
    assert "ORA-01034" in detail


async def test_driver_connect_failure_is_classified_by_its_cause() -> None:
    """DPY-6005 from a closed port is refused: the chained ConnectionRefusedError decides."""
    with pytest.raises(oracledb.Error) as caught:
        await oracledb.connect_async(
            user="scott", password="tiger", dsn=f"{HOST}:{free_tcp_port()}/x", retry_count=0
        )
    assert caught.value.args[0].full_code == "DPY-6005"
    result, _ = classify_any(caught.value, Phase.AUTH, classify)
    assert result is Result.REFUSED


def test_other_errors_are_left_to_the_generic_mapping() -> None:
    """Anything that is not a python-oracledb error falls through (None)."""
    assert classify(ConnectionResetError(), Phase.HANDSHAKE) is None
