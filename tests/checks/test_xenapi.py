"""`xenapi` check against a fake XAPI (proven by the XenAPI package), nginx and hostile servers.

XenServer cannot be installed here. The fake (tests/peers/xapi_fake.py) answers XAPI's XML-RPC
as its wire protocol and error list describe it, and the official `XenAPI` Python package is
its independent client below: a login, a wrong password and a pool member.
"""

from __future__ import annotations

import asyncio
import xmlrpc.client
from collections.abc import Iterator

import pydantic
import pytest
import XenAPI

from exporter.checks import CHECKS, Target
from exporter.checks.xenapi import CLEAR_TEXT_WARNING, XenApiSettings
from exporter.checks.xml_http import MAX_BODY_BYTES
from exporter.config import parse_config
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.runner import run_check
from tests.checks.fakes import HOST, Handler, drip, fake_server, wait_for_client_to_leave
from tests.peers.nginx import Nginx
from tests.peers.pki import Pki
from tests.peers.ports import free_tcp_port
from tests.peers.xapi_fake import (
    PASSWORD,
    SOFTWARE_VERSION,
    USER,
    XapiFake,
    failure,
    run_xapi_fake,
    success,
)

SHORT_TIMEOUT_S = 1.0
MASTER = "192.0.2.10"
XENSERVER_PEER = PeerInfo(product="XenServer", version="8.4.0 build 8.4.0-20240215")
BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol0 "lol">\n'
    + b"".join(b'<!ENTITY lol%d "%s">\n' % (n, b"&lol%d;" % (n - 1) * 10) for n in range(1, 10))
    + b"]>\n<methodResponse><params><param><value>&lol9;</value></param></params>"
    + b"</methodResponse>"
)


@pytest.fixture
def xapi() -> Iterator[XapiFake]:
    """A fake XAPI pool master on plain HTTP."""
    with run_xapi_fake() as fake:
        yield fake


async def _check(
    port: int, settings: XenApiSettings | None = None, timeout_seconds: float = 5.0
) -> CheckResult:
    outcome = await run_check(
        CHECKS["xenapi"], Target(HOST, port), settings or XenApiSettings(), timeout_seconds
    )
    assert not outcome.defect
    return outcome.result


LOGIN = XenApiSettings.model_validate({"username": USER, "password": PASSWORD})


async def test_null_session_is_refused_with_session_invalid(xapi: XapiFake) -> None:
    """Without credentials, XAPI's typed SESSION_INVALID for a null session proves XAPI."""
    result = await _check(xapi.port)
    assert result.result is Result.OK
    assert result.detail == "XAPI refused a null session with SESSION_INVALID"
    assert result.peer == PeerInfo(product="XAPI")
    assert set(result.phases) == {Phase.CONNECT, Phase.HANDSHAKE}
    assert xapi.calls == ["pool.get_all"]


async def test_login_reads_the_software_version_and_logs_out(xapi: XapiFake) -> None:
    """A login gives the host's product and version as peer info, and the session ends."""
    result = await _check(xapi.port, LOGIN)
    assert result.result is Result.OK
    assert (
        result.detail
        == "XenServer 8.4.0 build 8.4.0-20240215: login as 'root' accepted, logged out"
    )
    assert result.peer == XENSERVER_PEER
    assert Phase.AUTH in result.phases
    assert xapi.calls == [
        "session.login_with_password",
        "session.get_this_host",
        "host.get_software_version",
        "session.logout",
    ]
    assert (xapi.logins, xapi.logouts, xapi.sessions) == ([(USER, True)], 1, set())


async def test_wrong_password_is_auth_failed(xapi: XapiFake) -> None:
    """SESSION_AUTHENTICATION_FAILED is auth_failed; the typed failure still names XAPI."""
    result = await _check(
        xapi.port, XenApiSettings.model_validate({"username": USER, "password": "wrong"})
    )
    assert result.result is Result.AUTH_FAILED
    assert result.detail == "login as 'root' refused: SESSION_AUTHENTICATION_FAILED"
    assert result.peer == PeerInfo(product="XAPI")
    assert xapi.calls == ["session.login_with_password"]


async def test_pool_member_is_ok_and_names_its_master() -> None:
    """HOST_IS_SLAVE: XAPI is up on a pool member; the detail names the pool master."""
    with run_xapi_fake(master_address=MASTER) as fake:
        result = await _check(fake.port, LOGIN)
    assert result.result is Result.OK
    assert result.detail == (
        f"XAPI of a pool member (HOST_IS_SLAVE): logins go to the pool master '{MASTER}'"
    )
    assert result.peer == PeerInfo(product="XAPI")


async def test_tls_on_443_is_verified_and_reports_the_expiry(pki: Pki) -> None:
    """With `tls: true` the login runs over verified TLS and the certificate expiry is kept."""
    settings = XenApiSettings.model_validate(
        {"tls": True, "ca_file": str(pki.ca_cert), "username": USER, "password": PASSWORD}
    )
    with run_xapi_fake(tls=(pki.valid.cert, pki.valid.key)) as fake:
        result = await _check(fake.port, settings)
    assert result.result is Result.OK
    assert result.detail.startswith("XenServer 8.4.0 build 8.4.0-20240215: login as 'root'")
    assert result.detail.endswith(", logged out, certificate expires in 90 days")
    assert Phase.TLS in result.phases
    assert result.tls_cert_expiry_seconds == pki.valid.not_after.timestamp()
    assert settings.load_warnings() == ()


@pytest.mark.parametrize(
    ("pair", "reason"),
    [("expired", "certificate has expired"), ("wrong_host", "IP address mismatch")],
)
async def test_bad_certificate_is_tls_error(pki: Pki, pair: str, reason: str) -> None:
    """An expired or wrong-host certificate with `tls: true` is tls_error; nothing is called."""
    cert = getattr(pki, pair)
    with run_xapi_fake(tls=(cert.cert, cert.key)) as fake:
        result = await _check(
            fake.port, XenApiSettings.model_validate({"tls": True, "ca_file": str(pki.ca_cert)})
        )
    assert result.result is Result.TLS_ERROR
    assert reason in result.detail
    assert fake.calls == []


async def test_closed_port_is_refused() -> None:
    """Nothing listening: refused."""
    result = await _check(free_tcp_port())
    assert result.result is Result.REFUSED


async def test_plain_web_server_is_protocol_mismatch(nginx: Nginx) -> None:
    """nginx answers the XML-RPC POST with 404: a web server, not XAPI."""
    result = await _check(nginx.http_port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail.startswith("HTTP 404 Not Found (Server: nginx/")
    assert result.detail.endswith("to an XML-RPC POST on /: not XAPI")


# --- hostile and odd peers -------------------------------------------------------------------


def answers(reply: bytes, *, drip_seconds: float | None = None) -> Handler:
    """A plain HTTP server that reads one request and answers `reply` (dripping if asked)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if drip_seconds is None:
            writer.write(reply)
        else:
            await drip(writer, reply, drip_seconds)
        await wait_for_client_to_leave(reader)

    return handler


def http_reply(body: bytes, status: str = "200 OK") -> bytes:
    """One HTTP/1.1 answer with its Content-Length."""
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def response(value: dict[str, object] | list[str]) -> bytes:
    """An XML-RPC methodResponse carrying `value`."""
    return xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True).encode()


@pytest.mark.parametrize(
    ("reply", "result", "detail"),
    [
        (
            http_reply(b"<methodResponse><params><unclosed"),
            Result.PROTOCOL_MISMATCH,
            "not an XML-RPC response (ExpatError)",
        ),
        (
            http_reply(BILLION_LAUGHS),
            Result.PROTOCOL_MISMATCH,
            "refused XML with DTDForbidden (entity or DTD) instead of XML-RPC",
        ),
        (
            http_reply(xmlrpc.client.dumps(xmlrpc.client.Fault(1, "unknown method")).encode()),
            Result.PROTOCOL_MISMATCH,
            "XML-RPC fault 1 ('unknown method'): an XML-RPC server, not XAPI",
        ),
        (
            http_reply(response(["OpaqueRef:1"])),
            Result.PROTOCOL_MISMATCH,
            "XML-RPC answer to pool.get_all without XAPI's Status struct: not XAPI",
        ),
        (
            http_reply(response(success(["OpaqueRef:1"]))),
            Result.PROTOCOL_MISMATCH,
            "pool.get_all with a null session succeeded (\"['OpaqueRef:1']\"): XAPI refuses it "
            "with SESSION_INVALID",
        ),
        (
            http_reply(response(failure("INTERNAL_ERROR", "database not ready"))),
            Result.SERVICE_ERROR,
            "pool.get_all failed: INTERNAL_ERROR ['database not ready']",
        ),
        (
            http_reply(b"Service Unavailable", "503 Service Unavailable"),
            Result.SERVICE_ERROR,
            "HTTP 503 Service Unavailable to pool.get_all: XAPI is not available",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2097152\r\n\r\n",
            Result.PROTOCOL_MISMATCH,
            "response body larger than 1024 KiB, more than any answer to this request",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"10000\r\n" + b"<" * 0x10000 + b"\r\n") * (MAX_BODY_BYTES // 0x10000 + 1),
            Result.PROTOCOL_MISMATCH,
            "response body larger than 1024 KiB, more than any answer to this request",
        ),
        (
            b"\x00\xff garbage\r\n",
            Result.PROTOCOL_MISMATCH,
            "not an HTTP response: '\ufffd garbage'",
        ),
    ],
    ids=[
        "garbage-xml",
        "xml-bomb",
        "xmlrpc-fault",
        "no-status-struct",
        "null-session-accepted",
        "other-failure",
        "unavailable",
        "huge-declared-body",
        "huge-chunked-body",
        "not-http",
    ],
)
async def test_hostile_answers_are_classified(reply: bytes, result: Result, detail: str) -> None:
    """Garbage, a bomb, other XML-RPC servers and huge bodies get a class and a bounded detail."""
    async with fake_server(answers(reply)) as port:
        checked = await _check(port)
    assert (checked.result, checked.detail) == (result, detail)


async def test_slow_drip_times_out_at_the_deadline() -> None:
    """A peer dripping its answer a byte at a time is cut at the check's deadline."""
    reply = http_reply(response(failure("SESSION_INVALID", "OpaqueRef:NULL")))
    async with fake_server(answers(reply, drip_seconds=0.05)) as port:
        checked = await _check(port, timeout_seconds=SHORT_TIMEOUT_S)
    assert checked.result is Result.TIMEOUT
    assert checked.detail == "no answer within 1s during handshake"


async def test_failed_identity_read_still_logs_out() -> None:
    """A call failing after the login is service_error, the session is logged out, and the
    session reference the failure echoes is not shown."""
    calls: list[bytes] = []
    replies = [
        success("OpaqueRef:session-1"),
        failure("SESSION_NOT_REGISTERED", "OpaqueRef:session-1"),
        success(""),
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        calls.append(await reader.readexactly(length))
        writer.write(http_reply(response(replies[len(calls) - 1])))
        await wait_for_client_to_leave(reader)

    async with fake_server(handler) as port:
        checked = await _check(port, LOGIN)
    assert checked.result is Result.SERVICE_ERROR
    assert checked.detail == (
        "reading the host's software version failed: SESSION_NOT_REGISTERED [<session>]"
    )
    methods = [xmlrpc.client.loads(call)[1] for call in calls]
    assert methods == ["session.login_with_password", "session.get_this_host", "session.logout"]


# --- settings and config ---------------------------------------------------------------------


def test_settings_validation() -> None:
    """A login needs both the user and the password; unknown keys are refused."""
    with pytest.raises(pydantic.ValidationError, match="username and password go together"):
        XenApiSettings(username=USER)
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        XenApiSettings.model_validate({"ssl": True})
    with pytest.raises(pydantic.ValidationError, match="ca_file applies with tls: true only"):
        XenApiSettings(ca_file="/etc/ssl/xen-ca.pem")  # would be silently ignored otherwise
    assert XenApiSettings(tls=True, ca_file="/etc/ssl/xen-ca.pem").ca_file == "/etc/ssl/xen-ca.pem"


def test_catalogue_flow_runs_the_xenapi_check_and_warns_of_a_clear_text_login() -> None:
    """http_xenserver runs this check on port 80; a login without TLS is warned about at load."""
    config = parse_config(
        "targets: {xenserver: [xen1.corp.example], endpoint_networks: [127.0.0.1]}\n"
        f"flows: {{http_xenserver: {{username: root, password: '{PASSWORD}'}}}}\n",
        "inline.yaml",
    )
    (job,) = [job for job in config.jobs if job.flow_id == "http_xenserver"]
    assert (job.check, job.target.port) == ("xenapi", 80)
    assert f"flow http_xenserver: {CLEAR_TEXT_WARNING}" in config.warnings
    assert CLEAR_TEXT_WARNING == (
        "a login over plain HTTP (tls: false) sends the XAPI password in clear; "
        "set tls: true and port: 443"
    )


def test_login_over_tls_and_no_login_are_not_warned_about() -> None:
    """Neither a login over TLS on 443 nor a check without credentials is warned about."""
    config = parse_config(
        "targets: {xenserver: [xen1.corp.example, xen2.corp.example], "
        "endpoint_networks: [127.0.0.1]}\n"
        "flows: {http_xenserver: {tls: true, port: 443, username: root, "
        f"password: '{PASSWORD}'}}}}\n"
        "extra_flows: [{id: xapi_anonymous, check: xenapi, target: 'xen3.corp.example:80'}]\n",
        "inline.yaml",
    )
    ports = {job.target.port for job in config.jobs if job.check == "xenapi"}
    assert ports == {443, 80}
    assert not [warning for warning in config.warnings if "XAPI" in warning]


# --- the XenAPI package as an independent client of the fake ---------------------------------


def test_xenapi_package_logs_in_and_reads_the_version(xapi: XapiFake) -> None:
    """XenAPI's Session logs in, reads the software version and API version, and logs out."""
    session = XenAPI.Session(f"http://{HOST}:{xapi.port}/")
    try:
        session.login_with_password(USER, PASSWORD, "1.0", "certero-flow-exporter-tests")
        host = session.xenapi.session.get_this_host(session.handle)
        assert session.xenapi.host.get_software_version(host) == SOFTWARE_VERSION
        assert session.API_version == "2.21"
        session.xenapi.session.logout()
    finally:
        session("close")()
    assert xapi.logouts == 1
    assert xapi.sessions == set()


def test_xenapi_package_gets_the_authentication_failure(xapi: XapiFake) -> None:
    """A wrong password reaches XenAPI as Failure SESSION_AUTHENTICATION_FAILED."""
    session = XenAPI.Session(f"http://{HOST}:{xapi.port}/")
    try:
        with pytest.raises(XenAPI.Failure) as caught:
            session.login_with_password(USER, "wrong", "1.0", "certero-flow-exporter-tests")
    finally:
        session("close")()
    assert caught.value.details == ["SESSION_AUTHENTICATION_FAILED", USER, "Authentication failure"]


def test_xenapi_package_gets_host_is_slave_from_a_pool_member() -> None:
    """A pool member refuses the login with HOST_IS_SLAVE and the master's address."""
    with run_xapi_fake(master_address=MASTER) as fake:
        session = XenAPI.Session(f"http://{HOST}:{fake.port}/")
        try:
            with pytest.raises(XenAPI.Failure) as caught:
                session.login_with_password(USER, PASSWORD, "1.0", "certero-flow-exporter-tests")
        finally:
            session("close")()
    assert caught.value.details == ["HOST_IS_SLAVE", MASTER]
