"""`smb` check against a real Samba smbd, nginx, the spec-written SMB2 fake and hostile peers."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator

import pytest
from impacket import nmb
from impacket.smbconnection import SessionError, SMBConnection
from pydantic import ValidationError

from exporter.blocking import BlockingPool
from exporter.checks import CHECKS, Target
from exporter.checks.smb import (
    GuestSessionError,
    NtlmChallenge,
    SmbSettings,
    SmbStatusError,
    classify,
    parse_ntlm_challenge,
    status_name,
)
from exporter.config import parse_config
from exporter.errors import CheckFailure
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
from tests.fakes.smb2 import (
    CORP_NAMES,
    STATUS_ACCESS_DENIED,
    STATUS_NOT_SUPPORTED,
    Smb2Fake,
    challenge_message,
    neg_token_resp,
)
from tests.peers.nginx import Nginx
from tests.peers.ports import free_tcp_port
from tests.peers.samba_smb import ADMIN_SHARE, DENIED_SHARE, SambaSmb

SHORT_TIMEOUT_S = 1.0
WRONG_PASSWORD = "not-the-smb-password"
WINDOWS_2019 = "Windows 10 1809/Server 2019 build 17763"
CORP_FACTS = f"{WINDOWS_2019}; NetBIOS 'DC1' in 'CORP', DNS 'dc1.corp.example'"
DRIP_BYTES = 200  # a slow peer sends at most this many bytes, one at a time
DRIP_INTERVAL_S = 0.05


@pytest.fixture(scope="module")
def pool() -> Iterator[BlockingPool]:
    """The blocking pool impacket's login runs on."""
    with BlockingPool(4) as workers:
        yield workers


async def _check(
    pool: BlockingPool,
    port: int,
    settings: SmbSettings | None = None,
    timeout_seconds: float = 5.0,
) -> CheckResult:
    outcome = await run_check(
        CHECKS["smb"], Target(HOST, port), settings or SmbSettings(), timeout_seconds, blocking=pool
    )
    assert not outcome.defect
    return outcome.result


def _account(samba: SambaSmb, **settings: str) -> SmbSettings:
    return SmbSettings.model_validate(
        {"username": samba.user, "password": samba.password, **settings}
    )


# --- a real Samba -----------------------------------------------------------------------------


async def test_anonymous_discovery_of_samba(pool: BlockingPool, samba_smb: SambaSmb) -> None:
    """Without an account: dialect, signing, Samba's NTLM version and names; no auth phase."""
    result = await _check(pool, samba_smb.port)
    assert result.result is Result.OK
    assert result.detail.startswith(
        "SMB 3.1.1, signing required; Samba (NTLM version 6.1.0); "
        f"NetBIOS '{samba_smb.netbios_name}' in '{samba_smb.netbios_name}', DNS '"
    )
    assert result.peer == PeerInfo("Samba", "SMB 3.1.1, signing required")
    assert set(result.phases) == {Phase.CONNECT, Phase.HANDSHAKE}


async def test_tree_connect_to_admin_share(pool: BlockingPool, samba_smb: SambaSmb) -> None:
    """With the account: a login and a tree connect to ADMIN$, timed as `auth`."""
    result = await _check(pool, samba_smb.port, _account(samba_smb))
    assert result.result is Result.OK
    assert result.detail.endswith(f"; tree connect to {ADMIN_SHARE} as {samba_smb.user}")
    assert Phase.AUTH in result.phases
    assert result.peer == PeerInfo("Samba", "SMB 3.1.1, signing required")


async def test_domain_in_the_user_name(pool: BlockingPool, samba_smb: SambaSmb) -> None:
    """`DOMAIN\\user` is split into the NTLM domain and the user, and works as the two do."""
    name = f"{samba_smb.netbios_name}\\{samba_smb.user}"
    result = await _check(pool, samba_smb.port, _account(samba_smb, username=name))
    assert result.result is Result.OK
    assert result.detail.endswith(f"; tree connect to {ADMIN_SHARE} as {name}")


async def test_wrong_password_is_auth_failed(pool: BlockingPool, samba_smb: SambaSmb) -> None:
    """STATUS_LOGON_FAILURE is auth_failed with its name; the discovered facts stay."""
    settings = _account(samba_smb, password=WRONG_PASSWORD)
    result = await _check(pool, samba_smb.port, settings)
    assert result.result is Result.AUTH_FAILED
    assert result.detail == (
        "session setup refused: STATUS_LOGON_FAILURE (0xC000006D): unknown user or wrong password"
    )
    assert result.peer == PeerInfo("Samba", "SMB 3.1.1, signing required")


async def test_guest_session_is_auth_failed(pool: BlockingPool, samba_smb: SambaSmb) -> None:
    """An unknown user mapped to guest is not a login: auth_failed, no tree connect tried."""
    settings = SmbSettings(username="nosuchuser", password=WRONG_PASSWORD)
    result = await _check(pool, samba_smb.port, settings)
    assert result.result is Result.AUTH_FAILED
    assert result.detail == (
        "session setup gave a guest session: the server did not accept the account"
    )


async def test_share_denied_is_auth_failed(pool: BlockingPool, samba_smb: SambaSmb) -> None:
    """A share the account may not use is auth_failed STATUS_ACCESS_DENIED."""
    result = await _check(pool, samba_smb.port, _account(samba_smb, share=DENIED_SHARE))
    assert result.result is Result.AUTH_FAILED
    assert result.detail == (
        f"tree connect to {DENIED_SHARE} refused: STATUS_ACCESS_DENIED (0xC0000022): "
        "the account may not use this share"
    )


async def test_missing_share_is_service_error(pool: BlockingPool, samba_smb: SambaSmb) -> None:
    """A share that does not exist is service_error STATUS_BAD_NETWORK_NAME."""
    result = await _check(pool, samba_smb.port, _account(samba_smb, share="C$"))
    assert result.result is Result.SERVICE_ERROR
    assert result.detail == (
        "tree connect to C$ failed: STATUS_BAD_NETWORK_NAME (0xC00000CC): no such share"
    )


async def test_smb1_only_server_is_named(pool: BlockingPool, samba_smb1_only: SambaSmb) -> None:
    """A server that drops SMB2 but answers NT LM 0.12 is service_error "SMB1 only"."""
    result = await _check(pool, samba_smb1_only.port)
    assert result.result is Result.SERVICE_ERROR
    assert result.detail.startswith(
        "the server speaks SMB1 only (NT LM 0.12) and dropped the SMB2 NEGOTIATE"
    )
    assert result.peer == PeerInfo("SMB server", "SMB 1 (NT LM 0.12) only")


def test_catalogue_flow_runs_the_smb_check(
    samba_smb: SambaSmb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """smb_endpoints runs this check on 445 by default, the account and share as configured."""
    monkeypatch.setenv("CFE_SMB_PW", samba_smb.password)
    config = parse_config(
        f"targets: {{endpoint_networks: ['127.0.0.1:{samba_smb.port}']}}\n"
        "flows:\n"
        f"  smb_endpoints: {{username: {samba_smb.user}, password: {{env: CFE_SMB_PW}},"
        f" share: {DENIED_SHARE}}}\n",
        "inline.yaml",
    )
    (job,) = [job for job in config.jobs if job.flow_id == "smb_endpoints"]
    assert job.check == "smb"
    assert isinstance(job.settings, SmbSettings)
    assert job.settings.share == DENIED_SHARE
    default = parse_config("targets: {endpoint_networks: [192.0.2.1]}\n", "inline.yaml")
    (sweep,) = [job for job in default.jobs if job.flow_id == "smb_endpoints"]
    assert (sweep.check, sweep.target.port) == ("smb", 445)
    assert isinstance(sweep.settings, SmbSettings)
    assert (sweep.settings.username, sweep.settings.share) == (None, ADMIN_SHARE)


# --- a Windows host as the spec-written fake presents it --------------------------------------


async def test_windows_facts_and_no_authenticate_sent(pool: BlockingPool) -> None:
    """A Server 2019-like host: its build named, its names read; only NEGOTIATE and the NTLM
    NEGOTIATE were sent, never an AUTHENTICATE."""
    fake = Smb2Fake()
    async with fake_server(fake.handler()) as port:
        result = await _check(pool, port)
    assert result.result is Result.OK
    assert result.detail == f"SMB 3.0.2, signing required; {CORP_FACTS}"
    assert result.peer == PeerInfo(WINDOWS_2019, "SMB 3.0.2, signing required")
    assert fake.requests == [(1, 0, 0), (1, 1, 1)]  # NEGOTIATE, SESSION_SETUP with NTLM type 1


async def test_impacket_reads_the_fakes_windows_facts() -> None:
    """The fake, proven by impacket: it negotiates and reads the same build and names."""
    fake = Smb2Fake()

    def read() -> tuple[object, ...]:
        connection = SMBConnection("DC1", HOST, sess_port=port, timeout=5)
        try:
            with pytest.raises(SessionError) as refused:
                connection.login("someone", WRONG_PASSWORD)
            assert refused.value.getErrorCode() == 0xC000006D
            return (
                connection.getDialect(),
                connection.isSigningRequired(),
                connection.getServerOSMajor(),
                connection.getServerOSMinor(),
                connection.getServerOSBuild(),
                connection.getServerName(),
                connection.getServerDomain(),
                connection.getServerDNSHostName(),
                connection.getServerDNSDomainName(),
            )
        finally:
            connection.close()

    async with fake_server(fake.handler()) as port:
        facts = await asyncio.to_thread(read)
    assert facts == (0x0302, True, 10, 0, 17763, "DC1", "CORP", "dc1.corp.example", "corp.example")


async def test_interim_pending_answers_are_skipped(pool: BlockingPool) -> None:
    """STATUS_PENDING interim answers before the challenge do not end the exchange."""
    async with fake_server(Smb2Fake(interim_answers=2).handler()) as port:
        result = await _check(pool, port)
    assert result.result is Result.OK
    assert result.detail == f"SMB 3.0.2, signing required; {CORP_FACTS}"


async def test_endless_pending_answers_are_service_error(pool: BlockingPool) -> None:
    """More interim answers than any server sends: service_error, not an endless wait."""
    async with fake_server(Smb2Fake(interim_answers=10).handler()) as port:
        result = await _check(pool, port)
    assert result.result is Result.SERVICE_ERROR
    assert result.detail == "more than 4 interim (pending) SMB2 answers"


async def test_signing_not_required_and_no_version(pool: BlockingPool) -> None:
    """Signing only enabled, and a challenge without VERSION: said so, peer "SMB server"."""
    fake = Smb2Fake(dialect=0x0210, security_mode=0x0001, version=None)
    async with fake_server(fake.handler()) as port:
        result = await _check(pool, port)
    assert result.result is Result.OK
    assert result.detail == (
        "SMB 2.1, signing not required; NetBIOS 'DC1' in 'CORP', DNS 'dc1.corp.example'"
    )
    assert result.peer == PeerInfo("SMB server", "SMB 2.1, signing not required")


@pytest.mark.parametrize(
    ("fake", "result", "detail"),
    [
        (
            Smb2Fake(negotiate_status=STATUS_NOT_SUPPORTED),
            Result.SERVICE_ERROR,
            "SMB2 NEGOTIATE refused: STATUS_NOT_SUPPORTED (0xC00000BB) "
            "(offered dialects 2.0.2 to 3.1.1)",
        ),
        (
            Smb2Fake(session_setup_status=STATUS_ACCESS_DENIED),
            Result.SERVICE_ERROR,
            "the server refused the anonymous NTLM negotiate: STATUS_ACCESS_DENIED (0xC0000022) "
            "(discovery cannot read the OS and names)",
        ),
        (
            Smb2Fake(message_id_shift=7),
            Result.PROTOCOL_MISMATCH,
            "SMB2 answer to command 0 message 7, not to the request sent (command 0 message 0)",
        ),
        (
            Smb2Fake(dialect=0x0399),
            Result.PROTOCOL_MISMATCH,
            "the server chose dialect 0x0399, which was not offered",
        ),
        (
            Smb2Fake(info_offset_shift=4000),
            Result.PROTOCOL_MISMATCH,
            "NTLM target info (130 bytes at 4064) lies outside the 194-byte challenge",
        ),
    ],
)
async def test_refusals_and_malformed_answers(
    pool: BlockingPool, fake: Smb2Fake, result: Result, detail: str
) -> None:
    """Each refusal has its NTSTATUS name; each malformed answer says what was wrong."""
    async with fake_server(fake.handler()) as port:
        outcome = await _check(pool, port)
    assert (outcome.result, outcome.detail) == (result, detail)


async def test_login_on_a_stalled_server_ends_at_the_deadline(pool: BlockingPool) -> None:
    """A server silent on the login connection: timeout during auth, and the worker is freed."""
    fake = Smb2Fake(silent_from_connection=2)
    settings = SmbSettings(username="someone", password=WRONG_PASSWORD)
    async with fake_server(fake.handler()) as port:
        result = await _check(pool, port, settings, SHORT_TIMEOUT_S)
        assert pool.wait_idle(5.0)
    assert result.result is Result.TIMEOUT
    assert result.detail == "no answer within 1s during auth"
    assert result.peer == PeerInfo(WINDOWS_2019, "SMB 3.0.2, signing required")


async def test_refused_login_on_the_fake(pool: BlockingPool) -> None:
    """The fake refuses every AUTHENTICATE: auth_failed after the facts were read."""
    settings = SmbSettings(username="CORP\\someone", password=WRONG_PASSWORD)
    async with fake_server(Smb2Fake().handler()) as port:
        result = await _check(pool, port, settings)
    assert result.result is Result.AUTH_FAILED
    assert result.detail.startswith("session setup refused: STATUS_LOGON_FAILURE (0xC000006D)")


# --- not SMB, and hostile peers ---------------------------------------------------------------


async def test_closed_port_is_refused(pool: BlockingPool) -> None:
    """Nothing listening: refused."""
    result = await _check(pool, free_tcp_port())
    assert result.result is Result.REFUSED


async def test_http_server_is_protocol_mismatch(pool: BlockingPool, nginx: Nginx) -> None:
    """nginx answers the NEGOTIATE with HTTP: protocol_mismatch quoting what it sent."""
    result = await _check(pool, nginx.http_port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail.startswith("not an SMB server: it sent 'HTTP/1.1 400 Bad Request")


def drips(prefix: bytes) -> Handler:
    """A peer that sends `prefix`, then one byte at a time, slowly, at most DRIP_BYTES of them."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(prefix)
        for _ in range(DRIP_BYTES):
            await writer.drain()
            await asyncio.sleep(DRIP_INTERVAL_S)
            writer.write(b"\x00")
        await wait_for_client_to_leave(reader)

    return handler


def truncates(data: bytes) -> Handler:
    """A peer that reads the request, answers `data` and closes in order (FIN, not a reset)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(4)
        await reader.readexactly(int.from_bytes(header, "big"))
        writer.write(data)
        writer.close()
        await writer.wait_closed()

    return handler


@pytest.mark.parametrize(
    ("handler", "result", "detail"),
    [
        (
            sends_then_waits(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
            Result.PROTOCOL_MISMATCH,
            "not an SMB server: it sent 'SSH-2.0-OpenSSH_9.2p1 Debian-2'",
        ),
        (
            sends_then_waits(b"\x00\x00\x00\x10GARBAGE-GARBAGE!"),
            Result.PROTOCOL_MISMATCH,
            "not an SMB server: it sent 'GARBAGE-GARBAGE!'",
        ),
        (
            sends_then_waits(b"\x00\xff\xff\xff\xfeSMB"),
            Result.PROTOCOL_MISMATCH,
            f"not an SMB server: announces a {0xFFFFFF}-byte message, more than any answer "
            "to these requests",
        ),
        (
            sends_then_waits(b"\x00\x00\x00\x08\xfeSMB\x40\x00\x00\x00"),
            Result.PROTOCOL_MISMATCH,
            "not an SMB server: an SMB2 message shorter than its header",
        ),
        (
            truncates(b"\x00\x00\x00\xf0\xfeSMB" + bytes(20)),
            Result.SERVICE_ERROR,
            "connection closed in the middle of an SMB message (24 of 240 bytes)",
        ),
        (silent, Result.TIMEOUT, "no answer within 1s during handshake"),
        (
            drips(b"\x00\x00\x00\xf0\xfeSMB"),
            Result.TIMEOUT,
            "no answer within 1s during handshake",
        ),
        (closes_at_once, Result.SERVICE_ERROR, "connection closed by peer during handshake"),
    ],
)
async def test_hostile_peers_are_classified_within_the_timeout(
    pool: BlockingPool, handler: Handler, result: Result, detail: str
) -> None:
    """Garbage, a huge length, a short or cut message, silence and a slow drip: each has its
    class before the deadline ends the run, and nothing is read beyond the bounds."""
    async with fake_server(handler) as port:
        outcome = await _check(pool, port, timeout_seconds=SHORT_TIMEOUT_S)
    assert (outcome.result, outcome.detail) == (result, detail)


# --- the NTLM challenge parser ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "named"),
    [
        ((10, 0, 17763), "Windows 10 1809/Server 2019 build 17763"),
        ((10, 0, 20348), "Windows Server 2022 build 20348"),
        ((10, 0, 26100), "Windows 11 24H2/Server 2025 build 26100"),
        ((10, 0, 19999), "Windows 10/Server 2016+ build 19999"),
        ((10, 0, 27000), "Windows 11/Server 2025+ build 27000"),
        ((10, 0, 22635), "Windows 11/Server 2025+ build 22635"),
        ((6, 3, 9600), "Windows 8.1/Server 2012 R2 build 9600"),
        ((6, 1, 7601), "Windows 7/Server 2008 R2 build 7601"),
        ((11, 2, 30000), "Windows 11.2 build 30000"),
        ((6, 1, 0), "Samba"),
        ((5, 2, 0), "non-Windows SMB server (NTLM version 5.2)"),
    ],
)
def test_operating_system_names(version: tuple[int, int, int], named: str) -> None:
    """NTLM VERSION → OS: known builds by name, families otherwise, build 0 is not Windows."""
    assert NtlmChallenge(version=version).operating_system() == named


def _version(major: int, minor: int, build: int) -> bytes:
    return bytes([major, minor]) + struct.pack("<H", build) + bytes(3) + b"\x0f"


def test_challenge_inside_spnego_and_raw() -> None:
    """The CHALLENGE is found inside a NegTokenResp and on its own, with the same facts."""
    token = challenge_message(CORP_NAMES, _version(10, 0, 20348))
    expected = NtlmChallenge(
        version=(10, 0, 20348),
        netbios_computer="DC1",
        netbios_domain="CORP",
        dns_computer="dc1.corp.example",
        dns_domain="corp.example",
        dns_tree="corp.example",
    )
    assert parse_ntlm_challenge(neg_token_resp(token)) == expected
    assert parse_ntlm_challenge(token) == expected
    assert expected.names() == "NetBIOS 'DC1' in 'CORP', DNS 'dc1.corp.example'"


def test_names_that_do_not_repeat_each_other() -> None:
    """A DNS domain outside the host's name and a different forest are both shown."""
    challenge = NtlmChallenge(
        version=None,
        netbios_computer="APP7",
        netbios_domain="EMEA",
        dns_computer="app7.emea.corp.example",
        dns_domain="ad.emea.example",
        dns_tree="corp.example",
    )
    assert challenge.names() == (
        "NetBIOS 'APP7' in 'EMEA', DNS 'app7.emea.corp.example', "
        "DNS domain 'ad.emea.example', forest 'corp.example'"
    )


def test_hostile_names_are_cut_and_cleaned() -> None:
    """Control characters are dropped and a name is cut at 255 characters."""
    names = {1: "EVIL\r\nNAME", 3: "x" * 400}
    challenge = parse_ntlm_challenge(challenge_message(names, _version(10, 0, 17763)))
    assert challenge.netbios_computer == "EVILNAME"
    assert challenge.dns_computer == "x" * 255


def test_av_pairs_read_are_bounded() -> None:
    """Past 32 pairs the rest of the target info is ignored; a pair longer than it ends it."""
    many = {100 + index: "z" for index in range(40)}
    many[3] = "late.example"  # after 40 unknown pairs: beyond the bound
    assert parse_ntlm_challenge(challenge_message(many, None)).dns_computer == ""
    token = bytearray(challenge_message({1: "HOST"}, None))
    first_pair = 48 + len("".encode("utf-16-le"))
    struct.pack_into("<H", token, first_pair + 2, 60_000)  # AvLen far past the end
    assert parse_ntlm_challenge(bytes(token)).netbios_computer == ""


@pytest.mark.parametrize(
    ("blob", "detail"),
    [
        (b"\x30\x03\x0a\x01\x02", "the SESSION_SETUP answer holds no NTLM challenge"),
        (b"NTLMSSP\x00\x02\x00\x00\x00", "NTLM challenge cut short (12 bytes)"),
        (
            b"NTLMSSP\x00\x03\x00\x00\x00" + bytes(40),
            "NTLM message type 3, not a CHALLENGE (2)",
        ),
    ],
)
def test_unusable_challenges(blob: bytes, detail: str) -> None:
    """No challenge, a cut one or another NTLM message: each is a classified failure."""
    with pytest.raises(CheckFailure) as failure:
        parse_ntlm_challenge(blob)
    assert failure.value.detail.startswith(detail)


# --- classification and settings --------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "result", "detail"),
    [
        (
            SmbStatusError("session setup", 0xC0000234),
            Result.AUTH_FAILED,
            "session setup refused: STATUS_ACCOUNT_LOCKED_OUT (0xC0000234): account locked out",
        ),
        (
            SmbStatusError("session setup", 0xC000015B),
            Result.AUTH_FAILED,
            "session setup refused: STATUS_LOGON_TYPE_NOT_GRANTED (0xC000015B): "
            "the account may not log on over the network",
        ),
        (
            SmbStatusError("session setup", 0xC000009A),
            Result.SERVICE_ERROR,
            "session setup refused: STATUS_INSUFFICIENT_RESOURCES (0xC000009A)",
        ),
        (
            SmbStatusError("tree connect to ADMIN$", 0xC00000CA),
            Result.AUTH_FAILED,
            "tree connect to ADMIN$ refused: STATUS_NETWORK_ACCESS_DENIED (0xC00000CA): "
            "the account may not use this share",
        ),
        (
            SmbStatusError("tree connect to ADMIN$", 0xC0000001),
            Result.SERVICE_ERROR,
            "tree connect to ADMIN$ refused: STATUS_UNSUCCESSFUL (0xC0000001)",
        ),
        (
            GuestSessionError(),
            Result.AUTH_FAILED,
            "session setup gave a guest session: the server did not accept the account",
        ),
        (nmb.NetBIOSTimeout(), Result.TIMEOUT, "no SMB answer during auth"),
        (
            nmb.NetBIOSError("Error while reading from remote"),
            Result.SERVICE_ERROR,
            "connection closed by the server during auth",
        ),
        (
            SmbStatusError("NEGOTIATE", STATUS_ACCESS_DENIED),
            Result.SERVICE_ERROR,
            "NEGOTIATE refused: STATUS_ACCESS_DENIED (0xC0000022)",
        ),
    ],
)
def test_library_errors_classified(error: BaseException, result: Result, detail: str) -> None:
    """Refusals by NTSTATUS, a guest session and impacket's transport errors have classes."""
    assert classify(error, Phase.AUTH) == (result, detail)
    assert classify(ValueError("x"), Phase.AUTH) is None


def test_unknown_status_is_named_by_its_code() -> None:
    """An NTSTATUS no table knows is shown by its number."""
    assert status_name(0xC0FFEE00) == "NTSTATUS (0xC0FFEE00)"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"username": "root"}, "username and password go together"),
        ({"password": "p"}, "username and password go together"),
        ({"username": "", "password": "p"}, "username must not be empty"),
        (
            {"username": "CORP\\svc", "password": "p", "domain": "CORP"},
            "give the domain either in username",
        ),
        ({"share": ""}, "share is a share name of 1 to 80 characters"),
        ({"share": "C$\\Windows"}, "share is a share name of 1 to 80 characters"),
        ({"share": "x" * 81}, "share is a share name of 1 to 80 characters"),
        ({"shares": "ADMIN$"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_settings(given: dict[str, object], message: str) -> None:
    """Half an account, a domain given twice, a path for a share and unknown keys are refused."""
    with pytest.raises(ValidationError, match=message.replace("$", r"\$")):
        SmbSettings.model_validate(given)


def test_account_forms() -> None:
    """`DOMAIN\\user` splits; `user@domain` and a plain user keep the `domain` setting."""
    assert SmbSettings(username="CORP\\svc", password="p").account() == ("svc", "CORP")
    assert SmbSettings(username="svc@corp.example", password="p").account() == (
        "svc@corp.example",
        "",
    )
    assert SmbSettings(username="svc", password="p", domain="CORP").account() == ("svc", "CORP")
