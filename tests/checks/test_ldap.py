"""`ldap` / `ldaps` checks against a real OpenLDAP slapd, nginx and small fake servers."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from exporter.blocking import BlockingPool
from exporter.checks import CHECKS, CheckSettings, Target
from exporter.checks.ldap import (
    AD_DATA_CODES,
    LdapResultError,
    LdapSettings,
    LdapsSettings,
    ad_reason,
    classify,
    result_code_name,
)
from exporter.config import parse_config
from exporter.result import CheckResult, Phase, Result
from exporter.runner import run_check
from tests.checks.fakes import HOST, Handler, fake_server, sends_then_waits, silent
from tests.peers.nginx import Nginx
from tests.peers.pki import Pki
from tests.peers.ports import free_tcp_port
from tests.peers.slapd import SUFFIX, Slapd, run_slapd

SHORT_TIMEOUT_S = 1.0
WRONG_PASSWORD = "not-alices-password"
LDAPWHOAMI = "/usr/bin/ldapwhoami"


@pytest.fixture(scope="module")
def pool() -> Iterator[BlockingPool]:
    """The blocking pool the checks' ldap3 calls run on."""
    with BlockingPool(4) as workers:
        yield workers


@pytest.fixture(scope="module")
def slapd_not_gc(pki: Pki) -> Iterator[Slapd]:
    """A slapd whose RootDSE says, as an AD domain controller may, that it is no global catalog."""
    root_dse = {"dnsHostName": "dc2.example.test", "isGlobalCatalogReady": "FALSE"}
    with run_slapd(pki, root_dse=root_dse) as server:
        yield server


@pytest.fixture(scope="module")
def slapd_plain_expired(pki: Pki) -> Iterator[Slapd]:
    """A slapd with OpenLDAP's own RootDSE only, serving an expired certificate."""
    with run_slapd(pki, cert=pki.expired) as server:
        yield server


async def _check(
    pool: BlockingPool,
    check: str,
    port: int,
    settings: CheckSettings,
    timeout_seconds: float = 5.0,
) -> CheckResult:
    outcome = await run_check(
        CHECKS[check], Target(HOST, port), settings, timeout_seconds, blocking=pool
    )
    assert not outcome.defect
    return outcome.result


def _trusting(slapd: Slapd, **settings: object) -> dict[str, object]:
    return {"ca_file": str(slapd.ca_cert), **settings}


def _whoami(slapd: Slapd, url: str, password: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LDAPTLS_CACERT": str(slapd.ca_cert)}
    command = [LDAPWHOAMI, "-x", "-H", url, "-D", slapd.user_dn, "-w", password, *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=10, check=False)


# --- the peer, proven by OpenLDAP's own client ----------------------------------------------


def test_peer_proven_by_ldapwhoami(slapd: Slapd) -> None:
    """ldapwhoami binds over ldap://, StartTLS and both ldaps:// ports; a wrong password is 49."""
    expected = f"dn:{slapd.user_dn}"
    plain = f"ldap://{slapd.host}:{slapd.ldap_port}"
    for url, extra in (
        (plain, ()),
        (plain, ("-ZZ",)),
        (f"ldaps://{slapd.host}:{slapd.ldaps_port}", ()),
        (f"ldaps://{slapd.host}:{slapd.gc_port}", ()),
    ):
        done = _whoami(slapd, url, slapd.password, *extra)
        assert (done.returncode, done.stdout.strip()) == (0, expected), done.stderr
    wrong = _whoami(slapd, plain, WRONG_PASSWORD)
    assert wrong.returncode == 49
    assert "Invalid credentials (49)" in wrong.stderr


# --- passing runs -----------------------------------------------------------------------------


async def test_root_dse_read_anonymously(pool: BlockingPool, slapd: Slapd) -> None:
    """Without credentials the RootDSE proves the server: product, host name, naming context."""
    result = await _check(pool, "ldap", slapd.ldap_port, LdapSettings())
    assert result.result is Result.OK
    assert result.peer is not None
    assert result.peer.product == "OpenLDAP"
    assert result.detail == (
        f"OpenLDAP at 127.0.0.1:{slapd.ldap_port}, dnsHostName 'dc1.example.test', "
        f"naming context '{SUFFIX}', LDAPv3, global catalog"
    )
    assert set(result.phases) == {Phase.CONNECT, Phase.HANDSHAKE}
    assert result.address == "127.0.0.1"
    assert result.tcp_rtt_seconds is not None


async def test_bind_and_whoami(pool: BlockingPool, slapd: Slapd) -> None:
    """With a DN and password the check binds and reports whom the server says we are."""
    settings = LdapSettings(bind_dn=slapd.user_dn, password=slapd.password)
    result = await _check(pool, "ldap", slapd.ldap_port, settings)
    assert result.result is Result.OK
    assert f"bound as 'dn:{slapd.user_dn}'" in result.detail
    assert set(result.phases) == {Phase.CONNECT, Phase.HANDSHAKE, Phase.AUTH}


async def test_start_tls(pool: BlockingPool, slapd: Slapd) -> None:
    """StartTLS on the plain port upgrades, verifies the certificate and then binds."""
    settings = LdapSettings.model_validate(
        _trusting(slapd, start_tls=True, bind_dn=slapd.user_dn, password=slapd.password)
    )
    result = await _check(pool, "ldap", slapd.ldap_port, settings)
    assert result.result is Result.OK
    assert Phase.TLS in result.phases
    assert result.tls_cert_expiry_seconds is not None
    assert "certificate expires in" in result.detail


@pytest.mark.parametrize("which", ["ldaps_port", "gc_port"])
async def test_ldaps(pool: BlockingPool, slapd: Slapd, which: str) -> None:
    """LDAPS on both TLS ports (636 and 3269 stand-ins): TLS, RootDSE and bind."""
    settings = LdapsSettings.model_validate(
        _trusting(slapd, bind_dn=slapd.user_dn, password=slapd.password, global_catalog=True)
    )
    result = await _check(pool, "ldaps", getattr(slapd, which), settings)
    assert result.result is Result.OK
    assert {Phase.CONNECT, Phase.TLS, Phase.HANDSHAKE, Phase.AUTH} <= set(result.phases)
    assert ", global catalog" in result.detail
    assert result.tls_cert_expiry_seconds is not None


# --- failures ---------------------------------------------------------------------------------


async def test_wrong_password_is_auth_failed(pool: BlockingPool, slapd: Slapd) -> None:
    """A wrong password is auth_failed with result code 49 and its name; never the password."""
    settings = LdapSettings(bind_dn=slapd.user_dn, password=WRONG_PASSWORD)
    result = await _check(pool, "ldap", slapd.ldap_port, settings)
    assert result.result is Result.AUTH_FAILED
    assert result.detail == "bind failed: invalidCredentials (49)"
    assert result.peer is not None  # the RootDSE was read before the bind
    assert WRONG_PASSWORD not in result.detail


@pytest.mark.parametrize("name", ["alice@example.test", "EXAMPLE\\alice"])
async def test_bind_name_goes_to_the_server_as_written(
    pool: BlockingPool, slapd: Slapd, name: str
) -> None:
    """user@domain and DOMAIN\\user are sent unchanged (AD accepts them); slapd answers 34."""
    settings = LdapSettings(bind_dn=name, password=slapd.password)
    result = await _check(pool, "ldap", slapd.ldap_port, settings)
    assert result.result is Result.AUTH_FAILED
    assert result.detail.startswith("bind failed: invalidDNSyntax (34)")


async def test_untrusted_certificate_is_tls_error(
    pool: BlockingPool, slapd: Slapd, pki: Pki
) -> None:
    """Without the test CA the server's certificate is rejected: tls_error, with its expiry."""
    result = await _check(pool, "ldaps", slapd.ldaps_port, LdapsSettings())
    assert result.result is Result.TLS_ERROR
    assert result.detail.startswith("certificate rejected: ")
    assert Phase.HANDSHAKE not in result.phases
    assert result.tls_cert_expiry_seconds == pki.valid.not_after.timestamp()  # still reported


async def test_expired_certificate_is_tls_error(
    pool: BlockingPool, slapd_plain_expired: Slapd
) -> None:
    """An expired server certificate fails on LDAPS and on StartTLS alike."""
    slapd = slapd_plain_expired
    ldaps = await _check(
        pool, "ldaps", slapd.ldaps_port, LdapsSettings.model_validate(_trusting(slapd))
    )
    start_tls = await _check(
        pool,
        "ldap",
        slapd.ldap_port,
        LdapSettings.model_validate(_trusting(slapd, start_tls=True)),
    )
    for result in (ldaps, start_tls):
        assert result.result is Result.TLS_ERROR
        assert result.detail == "certificate rejected: certificate has expired"


async def test_closed_port_is_refused(pool: BlockingPool) -> None:
    """Nothing listening: refused, for both checks."""
    port = free_tcp_port()
    for check, settings in (("ldap", LdapSettings()), ("ldaps", LdapsSettings())):
        result = await _check(pool, check, port, settings)
        assert result.result is Result.REFUSED


async def test_http_server_is_protocol_mismatch(pool: BlockingPool, nginx: Nginx) -> None:
    """nginx answers the LDAP request with HTTP: protocol_mismatch quoting what it sent."""
    result = await _check(pool, "ldap", nginx.http_port, LdapSettings())
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail.startswith("not an LDAP server: it sent 'HTTP/1.1 400 Bad Request")


async def test_https_server_is_protocol_mismatch(pool: BlockingPool, nginx: Nginx) -> None:
    """An HTTPS server behind a good certificate is still not LDAP."""
    settings = LdapsSettings(ca_file=str(nginx.pki.ca_cert))
    result = await _check(pool, "ldaps", nginx.valid_port, settings)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "HTTP/1.1 400" in result.detail


async def test_banner_of_another_protocol_is_protocol_mismatch(pool: BlockingPool) -> None:
    """A server that greets first (SSH) is not LDAP, whatever ldap3's decoder made of it."""
    async with fake_server(sends_then_waits(b"SSH-2.0-OpenSSH_9.2p1\r\n")) as port:
        result = await _check(pool, "ldap", port, LdapSettings(), SHORT_TIMEOUT_S)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail == "not an LDAP server: it sent 'SSH-2.0-OpenSSH_9.2p1'"


async def test_silent_listener_is_timeout(pool: BlockingPool) -> None:
    """A listener that never answers the RootDSE search times out in the handshake phase."""
    async with fake_server(silent) as port:
        result = await _check(pool, "ldap", port, LdapSettings(), SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert "handshake" in result.detail
    assert pool.wait_idle(SHORT_TIMEOUT_S * 2)  # the worker's socket timeout freed it


# --- the global catalog rule ------------------------------------------------------------------


async def test_not_a_global_catalog_is_service_error(
    pool: BlockingPool, slapd_not_gc: Slapd
) -> None:
    """isGlobalCatalogReady FALSE fails a flow that needs a global catalog, and only such a flow."""
    needs_gc = LdapsSettings.model_validate(_trusting(slapd_not_gc, global_catalog=True))
    result = await _check(pool, "ldaps", slapd_not_gc.gc_port, needs_gc)
    assert result.result is Result.SERVICE_ERROR
    assert result.detail == "not a global catalog: the RootDSE says isGlobalCatalogReady FALSE"
    assert result.peer is not None
    plain = LdapsSettings.model_validate(_trusting(slapd_not_gc))
    result = await _check(pool, "ldaps", slapd_not_gc.ldaps_port, plain)
    assert result.result is Result.OK
    assert "global catalog" not in result.detail


async def test_server_without_the_attribute_passes_unconfirmed(
    pool: BlockingPool, slapd_plain_expired: Slapd
) -> None:
    """A directory that publishes no isGlobalCatalogReady (not AD) passes, saying so."""
    settings = LdapSettings(global_catalog=True)
    result = await _check(pool, "ldap", slapd_plain_expired.ldap_port, settings)
    assert result.result is Result.OK
    assert result.detail.endswith(
        ", global catalog not confirmed (no isGlobalCatalogReady: not Active Directory)"
    )


def test_catalogue_flows_run_the_ldap_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """ldap_dc runs ldap, ldaps_dc and ldaps_gc run ldaps; only ldaps_gc needs a global catalog."""
    monkeypatch.setenv("LDAP_PW", WRONG_PASSWORD)
    config = parse_config(
        "targets: {domain_controllers: [127.0.0.1]}\n"
        "flows:\n"
        "  ldap_dc: {start_tls: true, bind_dn: 'EXAMPLE\\alice', password: {env: LDAP_PW}}\n",
        "inline.yaml",
    )
    jobs = {job.flow_id: job for job in config.jobs if job.flow_id.startswith("ldap")}
    assert {flow: (job.check, job.target.port) for flow, job in jobs.items()} == {
        "ldap_dc": ("ldap", 389),
        "ldaps_dc": ("ldaps", 636),
        "ldaps_gc": ("ldaps", 3269),
    }
    assert not any("ldap" in warning for warning in config.warnings)
    settings = {flow: job.settings for flow, job in jobs.items()}
    assert isinstance(settings["ldaps_gc"], LdapsSettings)
    assert settings["ldaps_gc"].global_catalog
    assert not LdapsSettings.model_validate(settings["ldaps_dc"].model_dump()).global_catalog
    assert isinstance(settings["ldap_dc"], LdapSettings)
    assert settings["ldap_dc"].bind_dn == "EXAMPLE\\alice"
    overridden = parse_config(
        "targets: {domain_controllers: [127.0.0.1]}\nflows: {ldaps_gc: {global_catalog: false}}\n",
        "inline.yaml",
    )
    (gc_job,) = [job for job in overridden.jobs if job.flow_id == "ldaps_gc"]
    assert isinstance(gc_job.settings, LdapsSettings)
    assert not gc_job.settings.global_catalog


async def test_catalogue_gc_flow_against_the_peer(pool: BlockingPool, slapd: Slapd) -> None:
    """The ldaps_gc flow, pointed at the stand-in's 3269 port, passes with peer info."""
    config = parse_config(
        f"targets: {{domain_controllers: ['127.0.0.1:{slapd.gc_port}']}}\n"
        f"flows: {{ldaps_gc: {{ca_file: '{slapd.ca_cert}'}}}}\n",
        "inline.yaml",
    )
    (job,) = [job for job in config.jobs if job.flow_id == "ldaps_gc"]
    outcome = await run_check(job.spec, job.target, job.settings, 5.0, blocking=pool)
    assert outcome.result.result is Result.OK
    assert outcome.result.peer is not None
    assert outcome.result.detail.endswith(", global catalog, certificate expires in 90 days")


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "given", "message"),
    [
        (LdapSettings, {"bind_dn": "cn=x"}, "bind_dn and password go together"),
        (LdapSettings, {"password": "p"}, "bind_dn and password go together"),
        (LdapSettings, {"bind_dn": "", "password": "p"}, "bind_dn must not be empty"),
        (LdapsSettings, {"start_tls": True}, "start_tls is for plain LDAP"),
        (LdapSettings, {"starttls": True}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_settings(
    model: type[LdapSettings], given: dict[str, object], message: str
) -> None:
    """Half a credential, StartTLS on LDAPS and unknown keys are refused."""
    with pytest.raises(ValidationError, match=message):
        model.model_validate(given)


# --- result codes and Active Directory's sub-codes --------------------------------------------

AD_MESSAGE = (
    "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data {}, v4563"
)


@pytest.mark.parametrize(("code", "words"), sorted(AD_DATA_CODES.items()))
def test_ad_sub_codes_decoded(code: str, words: str) -> None:
    """Each AD sub-code in a diagnostic message becomes words, in either letter case."""
    assert ad_reason(AD_MESSAGE.format(code)) == words
    assert ad_reason(AD_MESSAGE.format(code.upper())) == words


def test_ad_decoder_without_or_with_unknown_sub_code() -> None:
    """No sub-code gives None; an unknown one is named rather than guessed."""
    assert ad_reason("invalid DN") is None
    assert ad_reason(AD_MESSAGE.format("52f")) == "Active Directory sub-code 52f"


def test_ad_bad_password_classified() -> None:
    """AD's 49 with data 52e: auth_failed naming the code, its name, the reason and the message."""
    error = LdapResultError("bind", 49, AD_MESSAGE.format("52e"))
    result, detail = classify(error, Phase.AUTH) or (None, "")
    assert result is Result.AUTH_FAILED
    assert detail.startswith("bind failed: invalidCredentials (49): wrong password; server said ")
    assert "data 52e" in detail


@pytest.mark.parametrize(
    ("code", "result"),
    [
        (8, Result.AUTH_FAILED),  # strongerAuthRequired: AD wants TLS or signing first
        (48, Result.AUTH_FAILED),
        (50, Result.AUTH_FAILED),
        (1, Result.SERVICE_ERROR),
        (51, Result.SERVICE_ERROR),
        (52, Result.SERVICE_ERROR),
        (53, Result.SERVICE_ERROR),
        (99, Result.SERVICE_ERROR),
    ],
)
def test_result_codes_classified_with_their_names(code: int, result: Result) -> None:
    """Every code is a class with its RFC 4511 name (or its number) in the detail."""
    mapped = classify(LdapResultError("bind", code, ""), Phase.AUTH)
    assert mapped == (result, f"bind failed: {result_code_name(code)} ({code})")
    assert result_code_name(99) == "code 99"


def test_refused_root_dse_read_is_service_error() -> None:
    """A server refusing the anonymous RootDSE read (50) is not a credentials problem."""
    mapped = classify(LdapResultError("RootDSE search", 50, ""), Phase.HANDSHAKE)
    assert mapped == (Result.SERVICE_ERROR, "RootDSE search failed: insufficientAccessRights (50)")


# --- a hostile server ---------------------------------------------------------------------------


def _ldap_message(message_id: int, operation: bytes) -> bytes:
    """An LDAPMessage with short-form BER lengths (every message here is under 128 bytes)."""
    body = bytes([0x02, 0x01, message_id]) + operation
    return bytes([0x30, len(body)]) + body


def _ldap_result(tag: int, code: int, message: bytes) -> bytes:
    """An LDAPResult-shaped operation: resultCode, empty matchedDN, diagnosticMessage."""
    body = bytes([0x0A, 0x01, code, 0x04, 0x00, 0x04, len(message)]) + message
    return bytes([tag, len(body)]) + body


def echoes_bind_password() -> Handler:
    """A fake directory: an empty RootDSE, then a bind refused with the request echoed back."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            header = await reader.readexactly(2)
            length = header[1]
            if length & 0x80:  # long form: the next (length & 0x7f) bytes hold the length
                length = int.from_bytes(await reader.readexactly(length & 0x7F), "big")
            request = await reader.readexactly(length)
            message_id, operation = request[2], request[3]
            if operation == 0x63:  # searchRequest: one empty entry, then done
                entry = bytes([0x64, 0x04, 0x04, 0x00, 0x30, 0x00])
                writer.write(_ldap_message(message_id, entry))
                writer.write(_ldap_message(message_id, _ldap_result(0x65, 0, b"")))
            elif operation == 0x60:  # bindRequest: the password is the request's last bytes
                password = request[-len(ECHOED_PASSWORD) :]
                refusal = _ldap_result(0x61, 49, b"bad password " + password + b", data 52e")
                writer.write(_ldap_message(message_id, refusal))
            await writer.drain()

    return handler


ECHOED_PASSWORD = b"S3CR3T-ECHOED-9c1d"


async def test_password_echoed_by_the_server_is_redacted(pool: BlockingPool) -> None:
    """A server quoting the bind password in its diagnostic message never gets it shown."""
    settings = LdapSettings(bind_dn="cn=x", password=ECHOED_PASSWORD.decode())
    async with fake_server(echoes_bind_password()) as port:
        result = await _check(pool, "ldap", port, settings)
    assert result.result is Result.AUTH_FAILED
    assert result.detail == (
        "bind failed: invalidCredentials (49): wrong password; "
        "server said 'bad password <redacted>, data 52e'"
    )
