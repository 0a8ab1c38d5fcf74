"""`tls` check against a real nginx (valid, expired, wrong-host certificates) and non-TLS peers."""

from __future__ import annotations

import re
import ssl

import pytest

from exporter.checks import CHECKS, Target
from exporter.checks.net import TlsSettings
from exporter.result import CheckResult, Phase, Result
from exporter.runner import run_check
from tests.checks.fakes import HOST, closes_at_once, fake_server, serves_tls, silent
from tests.peers.netns import IsolatedHost
from tests.peers.nginx import Nginx
from tests.peers.pki import CertPair, Pki
from tests.peers.ports import free_tcp_port
from tests.peers.sshd import Sshd

NAMESPACE_PORT = 8443
SHORT_TIMEOUT_S = 1.0


def _verifying(pki: Pki) -> TlsSettings:
    return TlsSettings(ca_file=str(pki.ca_cert), server_name="localhost")


def _server_context(pair: CertPair) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pair.cert, pair.key)
    return context


async def _tls(
    port: int, settings: TlsSettings, host: str = HOST, timeout_seconds: float = 5.0
) -> CheckResult:
    outcome = await run_check(CHECKS["tls"], Target(host, port), settings, timeout_seconds)
    return outcome.result


async def test_ok_with_trusted_certificate(nginx: Nginx, pki: Pki) -> None:
    """A valid certificate from the trusted CA is ok, reporting version and the exact expiry."""
    result = await _tls(nginx.valid_port, _verifying(pki))
    assert result.result is Result.OK
    assert result.peer is not None
    assert result.peer.product == "TLS"
    assert re.fullmatch(r"TLSv1\.[23]", result.peer.version)
    assert result.tls_cert_expiry_seconds == pki.valid.not_after.timestamp()
    assert {Phase.CONNECT, Phase.TLS} <= set(result.phases)
    assert result.address == "127.0.0.1"
    assert f"handshake with 127.0.0.1:{nginx.valid_port}" in result.detail
    assert "certificate expires in" in result.detail


async def test_expired_certificate_is_tls_error_with_expiry(nginx: Nginx, pki: Pki) -> None:
    """An expired certificate is a tls_error saying "expired" and still reports its expiry."""
    result = await _tls(nginx.expired_port, _verifying(pki))
    assert result.result is Result.TLS_ERROR
    assert "expired" in result.detail
    assert result.tls_cert_expiry_seconds == pki.expired.not_after.timestamp()
    assert Phase.TLS in result.phases


async def test_wrong_host_certificate_is_tls_error(nginx: Nginx, pki: Pki) -> None:
    """A certificate for another name is a tls_error naming the hostname mismatch."""
    result = await _tls(nginx.wrong_host_port, _verifying(pki))
    assert result.result is Result.TLS_ERROR
    assert "hostname mismatch" in result.detail.lower()
    assert result.tls_cert_expiry_seconds == pki.wrong_host.not_after.timestamp()


async def test_untrusted_ca_is_tls_error(nginx: Nginx, pki: Pki) -> None:
    """Without the test CA in the trust store, the valid certificate is rejected as untrusted."""
    result = await _tls(nginx.valid_port, TlsSettings(server_name="localhost"))
    assert result.result is Result.TLS_ERROR
    assert "certificate rejected" in result.detail
    assert "issuer" in result.detail
    assert result.tls_cert_expiry_seconds == pki.valid.not_after.timestamp()


async def test_insecure_skip_verify_accepts_expired(nginx: Nginx, pki: Pki) -> None:
    """insecure_skip_verify makes the expired port ok while still reporting the expiry."""
    settings = TlsSettings(ca_file=str(pki.ca_cert), insecure_skip_verify=True)
    result = await _tls(nginx.expired_port, settings)
    assert result.result is Result.OK
    assert result.tls_cert_expiry_seconds == pki.expired.not_after.timestamp()
    assert result.peer is not None
    assert result.peer.product == "TLS"


async def test_protocol_mismatch_against_sshd(sshd: Sshd, pki: Pki) -> None:
    """An SSH server, which talks first and not in TLS records, is a protocol_mismatch."""
    result = await _tls(sshd.port, _verifying(pki))
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "does not speak TLS" in result.detail
    assert Phase.TLS in result.phases


async def test_protocol_mismatch_against_plain_http(nginx: Nginx, pki: Pki) -> None:
    """A plain-HTTP port answers the ClientHello with an HTTP 400: a protocol_mismatch."""
    result = await _tls(nginx.http_port, _verifying(pki))
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "does not speak TLS" in result.detail
    assert result.tls_cert_expiry_seconds is None


async def test_refused_on_closed_port(pki: Pki) -> None:
    """A closed port is refused before any TLS is attempted."""
    result = await _tls(free_tcp_port(), _verifying(pki))
    assert result.result is Result.REFUSED
    assert "connection refused" in result.detail
    assert Phase.TLS not in result.phases


async def test_timeout_when_syn_is_dropped(isolated_host: IsolatedHost, pki: Pki) -> None:
    """A silently dropped SYN makes the check time out during connect."""
    isolated_host.tcp_listener(NAMESPACE_PORT)
    isolated_host.drop_all_tcp_to(NAMESPACE_PORT)
    result = await _tls(NAMESPACE_PORT, _verifying(pki), isolated_host.address, SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert "connect" in result.detail
    assert result.address == isolated_host.address


async def test_timeout_when_server_never_answers_client_hello(pki: Pki) -> None:
    """A server that accepts but never answers the ClientHello times out during tls."""
    async with fake_server(silent) as port:
        result = await _tls(port, _verifying(pki), timeout_seconds=SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert "during tls" in result.detail


async def test_tls_error_when_server_closes_during_handshake(pki: Pki) -> None:
    """A server that closes the connection instead of answering the ClientHello is a tls_error."""
    async with fake_server(closes_at_once) as port:
        result = await _tls(port, _verifying(pki))
    assert result.result is Result.TLS_ERROR
    assert "closed by peer during the TLS handshake" in result.detail
    assert Phase.TLS in result.phases


@pytest.mark.parametrize(
    ("trust_test_ca", "reason"),
    [(True, "certificate has expired"), (False, "unable to get local issuer certificate")],
)
async def test_rejected_certificate_then_stall_keeps_the_rejection(
    pki: Pki, trust_test_ca: bool, reason: str
) -> None:
    """A peer that stalls the second connection (made to read its rejected certificate) still
    yields tls_error "certificate rejected", not a timeout: the read is time-boxed."""
    settings = _verifying(pki) if trust_test_ca else TlsSettings(server_name="localhost")
    async with fake_server(serves_tls(_server_context(pki.expired), stall_from=2)) as port:
        outcome = await run_check(
            CHECKS["tls"], Target(HOST, port), settings, SHORT_TIMEOUT_S, capture_log=True
        )
    assert outcome.result.result is Result.TLS_ERROR
    assert outcome.result.detail == f"certificate rejected: {reason}"
    assert outcome.result.tls_cert_expiry_seconds is None
    log = "\n".join(outcome.log_lines)
    assert "could not read the rejected certificate error=TimeoutError" in log


async def test_rejected_certificate_is_read_on_a_second_connection(pki: Pki) -> None:
    """When the peer answers the second connection, the rejected certificate's expiry is kept."""
    async with fake_server(serves_tls(_server_context(pki.expired))) as port:
        result = await _tls(port, _verifying(pki), timeout_seconds=SHORT_TIMEOUT_S)
    assert result.result is Result.TLS_ERROR
    assert result.detail == "certificate rejected: certificate has expired"
    assert result.tls_cert_expiry_seconds == pki.expired.not_after.timestamp()


async def test_chain_expiry_is_the_earliest_of_the_presented_chain(pki: Pki) -> None:
    """An intermediate that expires before the leaf sets the chain's expiry; the leaf's is kept."""
    async with fake_server(serves_tls(_server_context(pki.chained))) as port:
        result = await _tls(port, _verifying(pki))
    assert result.result is Result.OK, result.detail
    assert result.tls_cert_expiry_seconds == pki.chained.not_after.timestamp()
    assert result.tls_chain_expiry_seconds == pki.intermediate_not_after.timestamp()


async def test_chain_of_a_rejected_certificate_is_read_too(pki: Pki) -> None:
    """A chain that fails verification still reports its earliest expiry (second connection)."""
    untrusting = TlsSettings(server_name="localhost")  # the system store lacks the test CA
    async with fake_server(serves_tls(_server_context(pki.chained))) as port:
        result = await _tls(port, untrusting)
    assert result.result is Result.TLS_ERROR
    assert result.tls_cert_expiry_seconds == pki.chained.not_after.timestamp()
    assert result.tls_chain_expiry_seconds == pki.intermediate_not_after.timestamp()


async def test_a_lone_leaf_is_its_own_chain(pki: Pki) -> None:
    """A server that presents only its leaf has a chain expiry equal to the leaf's."""
    async with fake_server(serves_tls(_server_context(pki.valid))) as port:
        result = await _tls(port, _verifying(pki))
    assert result.result is Result.OK
    assert result.tls_chain_expiry_seconds == result.tls_cert_expiry_seconds
