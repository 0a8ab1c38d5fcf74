"""`mssql` TLS: the handshake inside PRELOGIN packets (TDS 7.x) and TDS 8.0 strict encryption,
against the spec-written SQL Server with the test PKI's certificates and against hostile peers."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator

import pydantic
import pytest

from exporter.blocking import BlockingPool
from exporter.checks import CHECKS, Target
from exporter.checks.mssql import MAX_HANDSHAKE_PACKETS, MssqlSettings
from exporter.config import parse_config
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.runner import run_check
from tests.checks.fakes import (
    HOST,
    Handler,
    fake_server,
    sends_then_waits,
    wait_for_client_to_leave,
)
from tests.fakes.tds import (
    ENCRYPT_NOT_SUP,
    ENCRYPT_OFF,
    ENCRYPT_ON,
    ENCRYPT_REQ,
    HEADER,
    prelogin_reply,
    tds_server,
)
from tests.peers.pki import Pki

USER = "monitor"
PASSWORD = "Corr3ct-Horse"
SHORT_TIMEOUT_S = 0.5
VERSION = "16.0.4135"
CLIENT_HELLO_BOUND = 64 * 1024  # what a hostile peer reads of our handshake before it misbehaves


def _verifying(pki: Pki, **settings: object) -> MssqlSettings:
    return MssqlSettings.model_validate(
        {"ca_file": str(pki.ca_cert), "server_name": "localhost", **settings}
    )


@pytest.fixture
def pool() -> Iterator[BlockingPool]:
    """The blocking pool a login runs on, as the exporter owns it."""
    with BlockingPool(2) as blocking:
        yield blocking


async def _mssql(
    port: int,
    settings: MssqlSettings,
    *,
    pool: BlockingPool | None = None,
    timeout_seconds: float = 5.0,
) -> CheckResult:
    outcome = await run_check(
        CHECKS["mssql"], Target(HOST, port), settings, timeout_seconds, blocking=pool
    )
    assert not outcome.defect
    return outcome.result


def _packet(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(kind, 0x01, HEADER.size + len(payload), 0, 1, 0) + payload


async def _read_packet(reader: asyncio.StreamReader) -> bytes:
    _, _, length, _, _, _ = HEADER.unpack(await reader.readexactly(HEADER.size))
    return await reader.readexactly(min(length, CLIENT_HELLO_BOUND) - HEADER.size)


def forces_encryption_then(*replies: bytes, close: bool = False) -> Handler:
    """A peer that answers the pre-login with ENCRYPT_REQ, reads the ClientHello packet, then
    sends `replies` (raw bytes) and waits, or closes."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_packet(reader)
        writer.write(_packet(0x04, prelogin_reply(ENCRYPT_REQ)))
        await _read_packet(reader)
        if close:
            writer.close()
            return
        writer.write(b"".join(replies))
        await wait_for_client_to_leave(reader)

    return handler


async def test_valid_certificate_is_ok_with_tls_version_and_expiry(pki: Pki) -> None:
    """A server forcing encryption: the handshake inside PRELOGIN verifies, and the peer info,
    the detail and the expiry series say so."""
    async with tds_server(USER, PASSWORD, encryption=ENCRYPT_ON, certificate=pki.valid) as fake:
        result = await _mssql(fake.port, _verifying(pki))
    assert result.result is Result.OK, result.detail
    assert result.peer == PeerInfo(product="SQL Server", version=f"{VERSION}, TLSv1.2")
    assert result.detail.startswith(
        f"SQL Server 2022 ({VERSION}), encryption required, TLSv1.2 handshake in PRELOGIN, "
        "certificate expires in 90 days"
    )
    assert result.tls_cert_expiry_seconds == pki.valid.not_after.timestamp()
    assert result.tls_chain_expiry_seconds == pki.valid.not_after.timestamp()
    assert {Phase.CONNECT, Phase.HANDSHAKE, Phase.TLS} <= set(result.phases)
    assert fake.client_encryption == [ENCRYPT_OFF]
    assert fake.handshakes == ["TLSv1.2"]
    assert fake.logins == []  # still no login attempt in the server's log


async def test_chain_expiry_is_the_intermediate(pki: Pki) -> None:
    """A leaf sent with its intermediate: the chain's expiry is the intermediate's, earlier."""
    async with tds_server(USER, PASSWORD, encryption=ENCRYPT_ON, certificate=pki.chained) as fake:
        result = await _mssql(fake.port, _verifying(pki))
    assert result.result is Result.OK, result.detail
    assert result.tls_cert_expiry_seconds == pki.chained.not_after.timestamp()
    assert result.tls_chain_expiry_seconds == pki.intermediate_not_after.timestamp()


async def test_expired_certificate_is_tls_error_with_expiry(pki: Pki) -> None:
    """An expired certificate is a tls_error in the tls check's words, its expiry reported."""
    async with tds_server(USER, PASSWORD, encryption=ENCRYPT_ON, certificate=pki.expired) as fake:
        result = await _mssql(fake.port, _verifying(pki))
    assert result.result is Result.TLS_ERROR
    assert result.detail == "certificate rejected: certificate has expired"
    assert result.tls_cert_expiry_seconds == pki.expired.not_after.timestamp()
    assert Phase.TLS in result.phases
    assert result.peer == PeerInfo(product="SQL Server", version=VERSION)


async def test_wrong_host_certificate_is_tls_error(pki: Pki) -> None:
    """A certificate for another name is a tls_error naming the hostname mismatch."""
    async with tds_server(
        USER, PASSWORD, encryption=ENCRYPT_ON, certificate=pki.wrong_host
    ) as fake:
        result = await _mssql(fake.port, _verifying(pki))
    assert result.result is Result.TLS_ERROR
    assert "hostname mismatch" in result.detail.lower()
    assert result.tls_cert_expiry_seconds == pki.wrong_host.not_after.timestamp()


async def test_unknown_ca_is_tls_error(pki: Pki) -> None:
    """Without the test CA in the trust store the certificate is rejected as untrusted."""
    async with tds_server(USER, PASSWORD, encryption=ENCRYPT_ON, certificate=pki.valid) as fake:
        result = await _mssql(fake.port, MssqlSettings(server_name="localhost"))
    assert result.result is Result.TLS_ERROR
    assert result.detail == "certificate rejected: unable to get local issuer certificate"
    assert result.tls_cert_expiry_seconds == pki.valid.not_after.timestamp()


async def test_insecure_skip_verify_accepts_expired_and_reports_expiry(pki: Pki) -> None:
    """insecure_skip_verify accepts the expired certificate and still reports its expiry."""
    async with tds_server(USER, PASSWORD, encryption=ENCRYPT_ON, certificate=pki.expired) as fake:
        result = await _mssql(fake.port, MssqlSettings(insecure_skip_verify=True))
    assert result.result is Result.OK, result.detail
    assert result.tls_cert_expiry_seconds == pki.expired.not_after.timestamp()


async def test_encrypt_off_skips_tls(pki: Pki) -> None:
    """`encrypt: off` reads the pre-login only, even from a server forcing encryption."""
    async with tds_server(USER, PASSWORD, encryption=ENCRYPT_ON, certificate=pki.expired) as fake:
        result = await _mssql(fake.port, _verifying(pki, encrypt="off"))
    assert result.result is Result.OK, result.detail
    assert result.detail == (
        f"SQL Server 2022 ({VERSION}), encryption required, TLS not checked (encrypt: off)"
    )
    assert Phase.TLS not in result.phases
    assert result.tls_cert_expiry_seconds is None
    assert fake.handshakes == []


async def test_auto_leaves_login_only_encryption_unchecked(pki: Pki) -> None:
    """A server encrypting only the login (ENCRYPT_OFF): `auto` makes no handshake and says how
    to check the certificate."""
    async with tds_server(USER, PASSWORD, encryption=ENCRYPT_OFF, certificate=pki.expired) as fake:
        result = await _mssql(fake.port, _verifying(pki))
    assert result.result is Result.OK, result.detail
    assert result.detail == (
        f"SQL Server 2022 ({VERSION}), encryption off (login packet only), "
        "certificate not checked (encrypt: require checks it)"
    )
    assert fake.handshakes == []


async def test_require_asks_for_encryption_and_checks_the_certificate(pki: Pki) -> None:
    """`require` sends ENCRYPT_ON: a server encrypting only on request answers ENCRYPT_ON and
    its certificate is verified."""
    async with tds_server(USER, PASSWORD, encryption=ENCRYPT_OFF, certificate=pki.expired) as fake:
        result = await _mssql(fake.port, _verifying(pki, encrypt="require"))
    assert result.result is Result.TLS_ERROR
    assert result.detail == "certificate rejected: certificate has expired"
    assert fake.client_encryption == [ENCRYPT_ON]


async def test_require_against_a_server_without_encryption_is_tls_error() -> None:
    """`require` against ENCRYPT_NOT_SUP is a tls_error saying the server cannot encrypt."""
    async with tds_server(USER, PASSWORD) as fake:
        result = await _mssql(fake.port, MssqlSettings(encrypt="require"))
    assert result.result is Result.TLS_ERROR
    assert result.detail == (
        "the server does not support encryption (its pre-login answer says ENCRYPT_NOT_SUP) "
        "and encrypt: require asks for it"
    )
    assert result.peer == PeerInfo(product="SQL Server", version=VERSION)
    assert fake.client_encryption == [ENCRYPT_ON]


async def test_login_goes_inside_tls(pki: Pki, pool: BlockingPool) -> None:
    """With `require` and credentials pymssql's LOGIN7 reaches the fake inside TLS."""
    async with tds_server(USER, PASSWORD, encryption=ENCRYPT_ON, certificate=pki.valid) as fake:
        settings = _verifying(pki, encrypt="require", username=USER, password=PASSWORD)
        result = await _mssql(fake.port, settings, pool=pool)
    assert result.result is Result.OK, result.detail
    assert "TLSv1.2 handshake in PRELOGIN" in result.detail
    assert f"login as {USER} ok: Microsoft SQL Server 2022" in result.detail
    assert fake.handshakes == ["TLSv1.2", "TLSv1.2"]  # the check's, then pymssql's
    assert fake.encrypted_logins == [True]


async def test_strict_is_tls_first_with_alpn(pki: Pki) -> None:
    """`strict` (TDS 8.0): TLS with ALPN tds/8.0 from the first byte, the pre-login inside."""
    async with tds_server(USER, PASSWORD, certificate=pki.valid, strict=True) as fake:
        result = await _mssql(fake.port, _verifying(pki, encrypt="strict"))
    assert result.result is Result.OK, result.detail
    assert result.detail.startswith(
        f"SQL Server 2022 ({VERSION}), encryption on, TDS 8.0 strict encryption over TLSv1.3"
    )
    assert result.peer == PeerInfo(product="SQL Server", version=f"{VERSION}, TLSv1.3")
    assert result.tls_cert_expiry_seconds == pki.valid.not_after.timestamp()
    assert fake.alpn == ["tds/8.0"]
    assert fake.client_encryption == [ENCRYPT_NOT_SUP]  # inside TLS already, as FreeTDS sends


async def test_strict_expired_certificate_is_tls_error(pki: Pki) -> None:
    """A TDS 8.0 server with an expired certificate: tls_error, no pre-login sent."""
    async with tds_server(USER, PASSWORD, certificate=pki.expired, strict=True) as fake:
        result = await _mssql(fake.port, _verifying(pki, encrypt="strict"))
    assert result.result is Result.TLS_ERROR
    assert result.detail == "certificate rejected: certificate has expired"
    assert result.tls_cert_expiry_seconds == pki.expired.not_after.timestamp()
    assert Phase.HANDSHAKE not in result.phases
    assert fake.client_encryption == []


async def test_strict_against_a_peer_without_tls_is_protocol_mismatch() -> None:
    """`strict` against a peer answering the ClientHello in clear text: protocol_mismatch."""
    async with fake_server(sends_then_waits(b"HTTP/1.1 400 Bad Request\r\n\r\n")) as port:
        result = await _mssql(port, MssqlSettings(encrypt="strict"))
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail.startswith("peer does not speak TLS")
    assert Phase.TLS in result.phases


async def test_garbage_instead_of_tls_is_classified_within_the_timeout() -> None:
    """A PRELOGIN packet carrying garbage where the ServerHello belongs: protocol_mismatch."""
    handler = forces_encryption_then(_packet(0x12, b"this is no TLS record at all" * 4))
    async with fake_server(handler) as port:
        result = await _mssql(port, MssqlSettings(), timeout_seconds=SHORT_TIMEOUT_S)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail == "peer does not speak TLS (wrong_version_number)"


async def test_non_tds_answer_to_the_client_hello_is_protocol_mismatch() -> None:
    """Bytes that are no TDS packet after the pre-login answer: protocol_mismatch quoting them."""
    handler = forces_encryption_then(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    async with fake_server(handler) as port:
        result = await _mssql(port, MssqlSettings(), timeout_seconds=SHORT_TIMEOUT_S)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail == "not a TLS handshake in TDS packets: the server sent 'HTTP/1.1'"


async def test_oversized_handshake_packet_is_protocol_mismatch() -> None:
    """A PRELOGIN header announcing more than a TDS packet can hold is refused unread."""
    handler = forces_encryption_then(struct.pack(">BBHHBB", 0x12, 0x01, 0xFFFF, 0, 1, 0))
    async with fake_server(handler) as port:
        result = await _mssql(port, MssqlSettings(), timeout_seconds=SHORT_TIMEOUT_S)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail.startswith("not a TLS handshake in TDS packets")


async def test_endless_handshake_packets_are_bounded() -> None:
    """A record announced long and sent a byte per packet: the packet count ends it."""
    record = b"\x16\x03\x03\x40\x00" + bytes(MAX_HANDSHAKE_PACKETS * 2)
    drip = b"".join(_packet(0x12, record[i : i + 1]) for i in range(len(record)))
    async with fake_server(forces_encryption_then(drip)) as port:
        result = await _mssql(port, MssqlSettings())
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail == (
        f"TLS handshake not finished after {MAX_HANDSHAKE_PACKETS} packets from the server"
    )


async def test_peer_stopping_mid_handshake_times_out_during_tls() -> None:
    """A server that answers the pre-login and then never answers the ClientHello: timeout."""
    async with fake_server(forces_encryption_then()) as port:
        result = await _mssql(port, MssqlSettings(), timeout_seconds=SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert result.detail == f"no answer within {SHORT_TIMEOUT_S:g}s during tls"


async def test_peer_closing_mid_handshake_is_tls_error() -> None:
    """A server that closes after the ClientHello: tls_error in the tls check's words."""
    async with fake_server(forces_encryption_then(close=True)) as port:
        result = await _mssql(port, MssqlSettings())
    assert result.result is Result.TLS_ERROR
    assert result.detail == "connection closed by peer during the TLS handshake"


def test_strict_with_a_login_is_refused() -> None:
    """pymssql cannot log in with TDS 8.0: `strict` with credentials is a configuration error."""
    with pytest.raises(pydantic.ValidationError, match="encrypt: strict cannot go with a login"):
        MssqlSettings(encrypt="strict", username=USER, password=PASSWORD)


def test_unknown_encrypt_value_is_refused() -> None:
    """`encrypt` takes auto, require, strict or off only."""
    with pytest.raises(pydantic.ValidationError, match="encrypt"):
        MssqlSettings.model_validate({"encrypt": "yes"})


def test_flow_block_takes_the_tls_settings() -> None:
    """A flow block takes `encrypt` and the tls check's own setting names."""
    config = parse_config(
        "source: application_server\n"
        "targets: {database_server: [db1]}\n"
        "flows:\n"
        "  mssql_app_db: {encrypt: require, ca_file: /etc/ssl/corp-ca.pem,"
        " server_name: db1.corp.example}\n",
        "inline.yaml",
    )
    settings = next(job.settings for job in config.jobs if job.flow_id == "mssql_app_db")
    assert isinstance(settings, MssqlSettings)
    assert (settings.encrypt, settings.ca_file, settings.server_name) == (
        "require",
        "/etc/ssl/corp-ca.pem",
        "db1.corp.example",
    )
