"""`vsphere` check against a fake vCenter and ESXi (proven by nmap), nginx and hostile servers.

vCenter and ESXi cannot be installed here. The fake (tests/peers/vsphere_fake.py) answers
RetrieveServiceContent, Login and Logout as the vSphere Web Services API reference words them,
and nmap's `vmware-version` script reads its answer as an independent client below.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Iterator

import pydantic
import pytest

from exporter.checks import CHECKS, Target
from exporter.checks.vsphere import VsphereSettings
from exporter.checks.xml_http import MAX_BODY_BYTES
from exporter.config import parse_config
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.runner import run_check
from tests.checks.fakes import HOST, Handler, drip, fake_server, wait_for_client_to_leave
from tests.peers.nginx import Nginx
from tests.peers.pki import Pki
from tests.peers.ports import free_tcp_port
from tests.peers.vsphere_fake import (
    ESXI,
    PASSWORD,
    USER,
    VCENTER,
    Product,
    VsphereFake,
    envelope,
    fault,
    run_vsphere_fake,
    service_content,
)

NMAP = "/usr/bin/nmap"
SHORT_TIMEOUT_S = 1.0
VCENTER_PEER = PeerInfo(product="VMware vCenter Server", version="8.0.2 build-22617221")
ESXI_PEER = PeerInfo(product="VMware ESXi", version="8.0.2 build-23305546")
# Nine levels of ten references each: a billion "lol"s if a parser expanded them.
BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol0 "lol">\n'
    + b"".join(b'<!ENTITY lol%d "%s">\n' % (n, b"&lol%d;" % (n - 1) * 10) for n in range(1, 10))
    + b"]>\n<lolz>&lol9;</lolz>"
)


@pytest.fixture
def vcenter(pki: Pki) -> Iterator[VsphereFake]:
    """A fake vCenter with the valid certificate of the test PKI."""
    with run_vsphere_fake(VCENTER, pki.valid.cert, pki.valid.key) as fake:
        yield fake


def settings(pki: Pki, **login: str) -> VsphereSettings:
    """The check's settings trusting the test CA, with an optional login."""
    return VsphereSettings.model_validate({"ca_file": str(pki.ca_cert), **login})


async def _check(
    port: int, check_settings: VsphereSettings, timeout_seconds: float = 5.0
) -> CheckResult:
    outcome = await run_check(
        CHECKS["vsphere"], Target(HOST, port), check_settings, timeout_seconds
    )
    assert not outcome.defect
    return outcome.result


async def test_vcenter_answers_its_service_content(vcenter: VsphereFake, pki: Pki) -> None:
    """RetrieveServiceContent names a vCenter: product, version, build and API as peer info."""
    result = await _check(vcenter.port, settings(pki))
    assert result.result is Result.OK
    assert result.detail.startswith(
        "VMware vCenter Server 8.0.2 build-22617221 (vCenter, API 8.0.2.0), certificate expires in"
    )
    assert result.peer == VCENTER_PEER
    assert {Phase.CONNECT, Phase.TLS, Phase.HANDSHAKE} == set(result.phases)
    assert result.tls_cert_expiry_seconds == pki.valid.not_after.timestamp()
    assert vcenter.calls == ["RetrieveServiceContent"]
    assert vcenter.soap_actions == [""]  # as nmap sends it: every API version answers


@pytest.mark.parametrize(
    ("product", "peer", "role"), [(VCENTER, VCENTER_PEER, "vCenter"), (ESXI, ESXI_PEER, "ESXi")]
)
async def test_login_is_accepted_and_logged_out(
    pki: Pki, product: Product, peer: PeerInfo, role: str
) -> None:
    """With credentials: Login on the named session manager, then Logout with the cookie."""
    with run_vsphere_fake(product, pki.valid.cert, pki.valid.key) as fake:
        result = await _check(fake.port, settings(pki, username=USER, password=PASSWORD))
    assert result.result is Result.OK
    assert result.detail.startswith(
        f"{product.full_name} ({role}, API 8.0.2.0), login as '{USER}' accepted and logged out,"
    )
    assert result.peer == peer
    assert Phase.AUTH in result.phases
    assert fake.calls == ["RetrieveServiceContent", "Login", "Logout"]
    assert fake.soap_actions == ["", "urn:vim25/8.0.2.0", "urn:vim25/8.0.2.0"]
    assert fake.logins == [(USER, True)]
    assert (fake.logouts, fake.open_sessions) == (1, 0)


async def test_wrong_password_is_auth_failed(vcenter: VsphereFake, pki: Pki) -> None:
    """The InvalidLogin fault is auth_failed with the server's sentence; nothing to log out."""
    result = await _check(vcenter.port, settings(pki, username=USER, password="wrong"))
    assert result.result is Result.AUTH_FAILED
    assert result.detail == (
        "Login answered with fault InvalidLogin: "
        "'Cannot complete login due to an incorrect user name or password.'"
    )
    assert result.peer == VCENTER_PEER
    assert vcenter.calls == ["RetrieveServiceContent", "Login"]


async def test_backend_down_is_service_error(pki: Pki) -> None:
    """The reverse proxy's 503 (API service down) is service_error, not a mismatch."""
    with run_vsphere_fake(VCENTER, pki.valid.cert, pki.valid.key, unavailable=True) as fake:
        result = await _check(fake.port, settings(pki))
    assert result.result is Result.SERVICE_ERROR
    assert result.detail.startswith("HTTP 503 Service Unavailable (Server: ")
    assert result.detail.endswith(
        "on /sdk: the reverse proxy answers but the vSphere API service behind it does not "
        "(backend down or starting)"
    )


async def test_closed_port_is_refused(pki: Pki) -> None:
    """Nothing listening: refused."""
    result = await _check(free_tcp_port(), settings(pki))
    assert result.result is Result.REFUSED


async def test_https_server_that_is_not_vsphere_is_protocol_mismatch(
    nginx: Nginx, pki: Pki
) -> None:
    """nginx answers POST /sdk with 404: an HTTPS server, not the vSphere API."""
    result = await _check(nginx.valid_port, settings(pki))
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail.startswith("HTTP 404 Not Found (Server: nginx/")
    assert result.detail.endswith(
        "on /sdk: not the vSphere API (it answers 200, or 500 with a SOAP fault)"
    )
    assert result.peer is None


async def test_plain_http_port_is_protocol_mismatch(nginx: Nginx, pki: Pki) -> None:
    """A plain HTTP port does not speak TLS at all."""
    result = await _check(nginx.http_port, settings(pki))
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail.startswith("peer does not speak TLS")


@pytest.mark.parametrize(
    ("pair", "reason"),
    [("expired", "certificate has expired"), ("wrong_host", "IP address mismatch")],
)
async def test_bad_certificate_is_tls_error(pki: Pki, pair: str, reason: str) -> None:
    """An expired or wrong-host certificate is tls_error; its expiry is still reported."""
    cert = getattr(pki, pair)
    with run_vsphere_fake(VCENTER, cert.cert, cert.key) as fake:
        result = await _check(fake.port, settings(pki))
    assert result.result is Result.TLS_ERROR
    assert reason in result.detail
    assert result.tls_cert_expiry_seconds == cert.not_after.timestamp()
    assert fake.calls == []


async def test_insecure_skip_verify_reaches_a_self_signed_style_server(pki: Pki) -> None:
    """`insecure_skip_verify` accepts the certificate (a VMCA-signed host without its CA)."""
    with run_vsphere_fake(ESXI, pki.wrong_host.cert, pki.wrong_host.key) as fake:
        result = await _check(fake.port, VsphereSettings(insecure_skip_verify=True))
    assert result.result is Result.OK
    assert result.peer == ESXI_PEER


# --- hostile and odd peers -------------------------------------------------------------------


def tls_answers(pki: Pki, reply: bytes, *, drip_seconds: float | None = None) -> Handler:
    """A TLS server that reads one request and answers `reply` (byte by byte when dripping)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.valid.cert, pki.valid.key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await writer.start_tls(context)
        await reader.readuntil(b"\r\n\r\n")
        if drip_seconds is None:
            writer.write(reply)
        else:
            await drip(writer, reply, drip_seconds)
        await wait_for_client_to_leave(reader)

    return handler


def http_reply(body: bytes, status: str = "200 OK", content_type: str = "text/xml") -> bytes:
    """One HTTP/1.1 answer with its Content-Length."""
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.mark.parametrize(
    ("reply", "result", "detail"),
    [
        (
            http_reply(b"<soapenv:Envelope><unclosed"),
            Result.PROTOCOL_MISMATCH,
            "HTTP 200 OK on /sdk: not XML (unbound prefix: line 1, column 0) where a SOAP "
            "envelope was expected",
        ),
        (
            http_reply(BILLION_LAUGHS),
            Result.PROTOCOL_MISMATCH,
            "HTTP 200 OK on /sdk: refused XML with DTDForbidden (entity or DTD) instead of a "
            "SOAP envelope",
        ),
        (
            http_reply(b"<html><body>vSphere</body></html>"),
            Result.PROTOCOL_MISMATCH,
            "HTTP 200 OK on /sdk: XML that is not a SOAP envelope ('html'), not the vSphere API",
        ),
        (
            http_reply(envelope("<SomethingElse/>")),
            Result.PROTOCOL_MISMATCH,
            "HTTP 200 OK on /sdk: a SOAP answer without service content, not the vSphere API",
        ),
        (
            http_reply(fault("NotSupported", "The operation is not supported."), "500 Error"),
            Result.SERVICE_ERROR,
            "RetrieveServiceContent answered with fault NotSupported: "
            "'The operation is not supported.'",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2097152\r\n\r\n" + b"<" * 1024,
            Result.PROTOCOL_MISMATCH,
            "response body larger than 1024 KiB, more than any answer to this request",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n"
            + b"<a>" * (MAX_BODY_BYTES // 3 + 2),
            Result.PROTOCOL_MISMATCH,
            "response body larger than 1024 KiB, more than any answer to this request",
        ),
        (
            http_reply(b"{}", content_type="application/json"),
            Result.PROTOCOL_MISMATCH,
            "HTTP 200 OK on /sdk with 'application/json' instead of XML: not the vSphere API",
        ),
        (
            b"SSH-2.0-OpenSSH_9.2\r\n",
            Result.PROTOCOL_MISMATCH,
            "not an HTTP response: 'SSH-2.0-OpenSSH_9.2'",
        ),
        (
            b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000,
            Result.PROTOCOL_MISMATCH,
            "response headers exceed 64 KiB",
        ),
    ],
    ids=[
        "garbage-xml",
        "xml-bomb",
        "not-soap",
        "no-service-content",
        "fault",
        "huge-declared-body",
        "huge-streamed-body",
        "json",
        "not-http",
        "endless-header",
    ],
)
async def test_hostile_answers_are_classified(
    pki: Pki, reply: bytes, result: Result, detail: str
) -> None:
    """Garbage, a bomb, huge bodies and other protocols get a class and a bounded detail."""
    async with fake_server(tls_answers(pki, reply)) as port:
        checked = await _check(port, settings(pki))
    assert (checked.result, checked.detail) == (result, detail)


async def test_slow_drip_times_out_at_the_deadline(pki: Pki) -> None:
    """A peer dripping its answer a byte at a time is cut at the check's deadline."""
    async with fake_server(tls_answers(pki, http_reply(envelope("")), drip_seconds=0.05)) as port:
        checked = await _check(port, settings(pki), timeout_seconds=SHORT_TIMEOUT_S)
    assert checked.result is Result.TIMEOUT
    assert checked.detail == "no answer within 1s during handshake"
    assert checked.duration_seconds < SHORT_TIMEOUT_S + 0.5


async def test_refused_logout_is_noted_and_the_check_passes(pki: Pki) -> None:
    """A session the server will not log out is said in the detail; the login did succeed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.valid.cert, pki.valid.key)
    answers = [
        http_reply(service_content(VCENTER, "urn:vim25")),
        http_reply(
            envelope('<LoginResponse xmlns="urn:vim25"><returnval/></LoginResponse>')
        ).replace(b"\r\n\r\n", b'\r\nSet-Cookie: vmware_soap_session="52ab"; Path=/\r\n\r\n', 1),
        http_reply(fault("NotAuthenticated", "The session is not authenticated."), "500 Error"),
    ]
    requests: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await writer.start_tls(context)
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answers[len(requests) - 1])
        await wait_for_client_to_leave(reader)

    async with fake_server(handler) as port:
        checked = await _check(port, settings(pki, username=USER, password=PASSWORD))
    assert checked.result is Result.OK
    assert checked.detail.startswith(
        "VMware vCenter Server 8.0.2 build-22617221 (vCenter, API 8.0.2.0), login as "
        f"'{USER}' accepted; logout failed (Logout answered with fault NotAuthenticated: "
        "'The session is not authenticated.')"
    )
    assert b'Cookie: vmware_soap_session="52ab"' in requests[2]


# --- settings and config ---------------------------------------------------------------------


def test_settings_validation() -> None:
    """A login needs both the user and the password; unknown keys are refused."""
    with pytest.raises(pydantic.ValidationError, match="username and password go together"):
        VsphereSettings(username=USER)
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        VsphereSettings.model_validate({"user": USER})


def test_catalogue_flow_runs_the_vsphere_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """https_vsphere runs this check with its settings on port 443, no fallback, no warning."""
    monkeypatch.setenv("CFE_VSPHERE_PASSWORD", PASSWORD)
    config = parse_config(
        "targets: {vsphere: [vc1.corp.example], endpoint_networks: [127.0.0.1]}\n"
        "flows: {https_vsphere: {ca_file: /etc/ssl/corp-ca.pem, username: monitor, "
        "password: {env: CFE_VSPHERE_PASSWORD}}}\n",
        "inline.yaml",
    )
    (job,) = [job for job in config.jobs if job.flow_id == "https_vsphere"]
    assert (job.check, job.target.port) == ("vsphere", 443)
    assert isinstance(job.settings, VsphereSettings)
    assert job.settings.ca_file == "/etc/ssl/corp-ca.pem"
    assert not [warning for warning in config.warnings if "https_vsphere" in warning]


# --- nmap as an independent client of the fake -----------------------------------------------


@pytest.mark.parametrize(
    ("product", "line"),
    [(VCENTER, "VMware vCenter Server 8.0.2"), (ESXI, "VMware ESXi 8.0.2")],
)
def test_nmap_vmware_version_reads_the_fake(pki: Pki, product: Product, line: str) -> None:
    """nmap's vmware-version script reads name, version, build and OS type from the fake."""
    with run_vsphere_fake(product, pki.valid.cert, pki.valid.key) as fake:
        done = subprocess.run(
            [NMAP, "-n", "-Pn", "-p", str(fake.port), "--script", "+vmware-version", HOST],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    assert f"Server version: {line}" in done.stdout
    assert f"Build: {product.build}" in done.stdout
    assert f"OS type: {product.os_type}" in done.stdout
    assert f"Product Line ID: {product.product_line}" in done.stdout
    assert fake.calls == ["RetrieveServiceContent"]
