"""The fault matrix (tests/fault_matrix.py) run for real, one test per fault.

Each test builds its fault once — a network namespace whose packet filter drops, resets or
rejects everything it receives, a name that does not resolve, a misbehaving peer on loopback,
or a TLS peer showing a certificate a client must refuse — and runs every cell of that fault
against it concurrently, so the whole matrix costs about one timeout per fault. A failure names
every cell that disagreed, with the class and detail it got.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from exporter.blocking import BlockingPool
from exporter.checks import CHECKS, CheckSettings, Target
from exporter.result import Phase
from exporter.runner import RunOutcome, run_check
from tests.checks.fakes import (
    HOST,
    Handler,
    drip,
    fake_server,
    sends_then_waits,
    serves_tls,
    silent,
    wait_for_client_to_leave,
)
from tests.fakes.tds import ENCRYPT_ON, tds_server
from tests.fault_matrix import CELLS, NOT_YET, Cell, Fault, cells_of, render_diagnosis
from tests.peers.netns import IsolatedHost, isolated_host
from tests.peers.nginx import Nginx
from tests.peers.pki import CertPair, Pki
from tests.peers.samba_smb import SambaSmb
from tests.peers.slapd import Slapd
from tests.peers.snmpd import SHA256_AES, Snmpd
from tests.peers.sshd import Sshd
from tests.peers.tns_listener import run_tns_listener
from tests.peers.udp import echo as udp_echo
from tests.peers.udp import silent as udp_silent
from tests.peers.udp import udp_peer
from tests.peers.vsphere_fake import USER as VSPHERE_USER
from tests.peers.vsphere_fake import VCENTER, run_vsphere_fake
from tests.peers.xapi_fake import USER as XAPI_USER
from tests.peers.xapi_fake import run_xapi_fake

DIAGNOSIS = Path(__file__).resolve().parent.parent / "docs" / "diagnosis.md"
PORT = 3201  # inside SAP's dispatcher range, so every TCP and UDP check accepts it
UNRESOLVABLE = "nonexistent.invalid"  # RFC 6761 6.4: never resolves
SILENCE_TIMEOUT_S = 1.0  # for faults that end in a timeout: the cost of the whole fault's test
ANSWER_TIMEOUT_S = 5.0  # for faults that answer at once: a margin on a loaded machine
DRIP_INTERVAL_S = 0.3  # a byte every 0.3 s: three bytes within the timeout, never a full header
POOL_WORKERS = 8
ICMP_RATELIMIT = "/proc/sys/net/ipv4/icmp_ratelimit"
# the iptables argv tail each network fault puts in the namespace's INPUT chain: every packet
# meets it, so one namespace serves every check (and a check's port never matters)
RULES: Mapping[Fault, tuple[tuple[str, ...], ...]] = {
    Fault.SYN_DROPPED: (("-A", "INPUT", "-j", "DROP"),),
    Fault.DATAGRAM_DROPPED: (("-A", "INPUT", "-j", "DROP"),),
    Fault.TCP_RESET: (("-A", "INPUT", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"),),
    Fault.ADMIN_PROHIBITED: (
        ("-A", "INPUT", "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"),
    ),
    Fault.HOST_UNREACHABLE: (
        ("-A", "INPUT", "-j", "REJECT", "--reject-with", "icmp-host-unreachable"),
    ),
    Fault.NO_ROUTE: (("-A", "INPUT", "-j", "REJECT", "--reject-with", "icmp-net-unreachable"),),
    Fault.UDP_PORT_UNREACHABLE: (
        ("-A", "INPUT", "-p", "udp", "-j", "REJECT", "--reject-with", "icmp-port-unreachable"),
    ),
}
TIMES_OUT = frozenset({Fault.SYN_DROPPED, Fault.DATAGRAM_DROPPED, Fault.SILENT, Fault.SLOW_DRIP})
# What the right service would start its answer with: a slow drip of it is a peer that is the
# right service but too slow, and half of it then a close is a peer that fails mid-answer.
# Each is only the start of an answer (a header announcing more), so even delivered whole it
# leaves the check waiting: a drip can end only at the deadline, however the machine is loaded.
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"  # RFC 4253 4.2 identification string
TLS_RECORD = bytes.fromhex("160303007a02")  # RFC 8446 5.1 record header + ServerHello type
HTTP_STATUS = b"HTTP/1.1 200 OK\r\nServer: nginx\r\n"
ANSWER_START: Mapping[str, bytes] = {
    "tls": TLS_RECORD,
    "https": TLS_RECORD,
    "ldaps": TLS_RECORD,
    "vsphere": TLS_RECORD,
    "http": HTTP_STATUS,
    "xenapi": HTTP_STATUS,
    "ssh": SSH_BANNER,
    "mssql": bytes.fromhex("0401002b00000100"),  # MS-TDS 2.2.3.1 header of a PRELOGIN reply
    "ldap": bytes.fromhex("3084000000400201"),  # RFC 4511 / X.690 SEQUENCE, 4-byte length
    "netbios_ssn": bytes.fromhex("83000001"),  # RFC 1002 4.3.4 negative session response
    "smb": bytes.fromhex("000000a0fe534d42"),  # RFC 1002 4.3.5 session message + MS-SMB2 2.2.1
    "db2": bytes.fromhex("0050d00200010048"),  # DRDA DDM header (length, D0, format)
    "oracle_tns": bytes.fromhex("0020000002000000"),  # TNS header of an ACCEPT packet
    "sap": bytes.fromhex("0000002a"),  # SAP NI 4-byte length prefix
}
# the wrong service a check meets: an HTTP server, except for the checks that speak HTTP
MEETS_SSH = frozenset({"http", "xenapi"})
SELF_SIGNED_DAYS = 30
TDS_USER = "monitor"
WRONG_BASIC = base64.b64encode(b"monitor:not-the-password").decode()
UNAUTHORIZED = (
    b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="certero"\r\n'
    b"Content-Length: 0\r\n\r\n"
)
ORACLE_SERVICE = "orclpdb1"


@pytest.fixture
def pool() -> Iterator[BlockingPool]:
    """The blocking pool for the checks built on blocking libraries (ldap3, smbprotocol...)."""
    with BlockingPool(POOL_WORKERS) as workers:
        yield workers


def _settings(cell: Cell, base: Mapping[str, object]) -> CheckSettings:
    """The cell's settings model: what the fault supplies, overridden by the cell's own."""
    settings: CheckSettings = CHECKS[cell.check].settings_model.model_validate(
        {**base, **dict(cell.settings)}
    )
    return settings


async def _run_cells(
    cells: tuple[Cell, ...],
    targets: Mapping[str, Target],
    pool: BlockingPool,
    timeout_seconds: float,
    bases: Mapping[str, Mapping[str, object]] | None = None,
) -> dict[Cell, RunOutcome]:
    """Run every cell against its check's target at once, with the settings the fault gives
    its check in `bases` (a CA file, an account); the outcomes by cell."""
    runs = [
        run_check(
            CHECKS[cell.check],
            targets[cell.check],
            _settings(cell, (bases or {}).get(cell.check, {})),
            timeout_seconds,
            blocking=pool,
        )
        for cell in cells
    ]
    return dict(zip(cells, await asyncio.gather(*runs), strict=True))


def _disagreements(outcomes: Mapping[Cell, RunOutcome]) -> list[str]:
    """Every cell whose class or detail words differ from the table, or that hit a defect."""
    wrong = []
    for cell, outcome in outcomes.items():
        result = outcome.result
        missing = [word for word in cell.words if word not in result.detail]
        if result.result is not cell.expected or missing or outcome.defect:
            wrong.append(
                f"{cell.label}: expected {cell.expected} with {list(cell.words)}, got "
                f"{result.result.value} {result.detail!r}"
                + (" (an unclassified exception)" if outcome.defect else "")
            )
    return wrong


def _built(fault: Fault) -> tuple[Cell, ...]:
    """The cells of `fault` that are built (not marked not yet)."""
    return tuple(cell for cell in cells_of(fault) if cell.expected is not NOT_YET)


@pytest.mark.parametrize("fault", [fault for fault in Fault if fault in RULES])
async def test_network_fault(fault: Fault, pool: BlockingPool) -> None:
    """A packet filter in front of the destination: every check names what the network did."""
    cells = _built(fault)
    with isolated_host(RULES[fault]) as host:
        _icmp_errors_unlimited(host)
        targets = {cell.check: Target(host.address, PORT) for cell in cells}
        timeout = SILENCE_TIMEOUT_S if fault in TIMES_OUT else ANSWER_TIMEOUT_S
        outcomes = await _run_cells(cells, targets, pool, timeout)
    wrong = _disagreements(outcomes)
    assert not wrong, "\n".join(wrong)
    assert all(outcome.result.address == host.address for outcome in outcomes.values())


def _icmp_errors_unlimited(host: IsolatedHost) -> None:
    """Lift the namespace's ICMP error rate limit: every check's packets get their reject at
    once, not one per second (RFC 1812 4.3.2.8 lets routers limit; this one need not)."""
    # /proc/sys/net shows the namespace of the process that opens it (no procps needed)
    host.run(["/bin/sh", "-c", f"echo 0 > {ICMP_RATELIMIT}"])
    assert host.run(["/bin/cat", ICMP_RATELIMIT]).strip() == "0"


async def test_unresolvable_name(pool: BlockingPool) -> None:
    """A name that does not resolve is a dns_error for every check, before any packet."""
    cells = _built(Fault.DNS)
    targets = {cell.check: Target(UNRESOLVABLE, PORT) for cell in cells}
    outcomes = await _run_cells(cells, targets, pool, ANSWER_TIMEOUT_S)
    wrong = _disagreements(outcomes)
    assert not wrong, "\n".join(wrong)
    assert all(Phase.CONNECT not in outcome.result.phases for outcome in outcomes.values())


def drips(data: bytes) -> Handler:
    """A peer that is the right service but too slow: `data` a byte at a time, then silence."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await drip(writer, data, DRIP_INTERVAL_S)
        await wait_for_client_to_leave(reader)

    return handler


def closes_mid_answer(data: bytes) -> Handler:
    """A peer that reads the client's first message, sends the first half of the right
    answer's header, and closes."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(data[: len(data) // 2])
        await writer.drain()
        writer.close()

    return handler


async def closes_after_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A peer that reads the client's first message and closes instead of answering."""
    await reader.read(65536)
    writer.close()


async def _served(
    stack: contextlib.AsyncExitStack, handlers: Mapping[str, Handler]
) -> dict[str, Target]:
    """One loopback server per check, each with its handler; the targets by check."""
    targets = {}
    for check, handler in handlers.items():
        port = await stack.enter_async_context(fake_server(handler))
        targets[check] = Target(HOST, port)
    return targets


@pytest.mark.parametrize(
    "fault",
    [
        Fault.SILENT,
        Fault.SLOW_DRIP,
        Fault.CLOSES_MID_EXCHANGE,
        Fault.CLOSES_MID_ANSWER,
        Fault.WRONG_SERVICE,
    ],
)
async def test_peer_fault(fault: Fault, pool: BlockingPool, nginx: Nginx) -> None:
    """The port is open but the peer misbehaves: every check says how, within its timeout."""
    cells = _built(fault)
    async with contextlib.AsyncExitStack() as stack:
        targets: dict[str, Target] = {}
        for cell in cells:
            if CHECKS[cell.check].transport == "udp":
                # RFC 862 echo is the wrong service; a bound socket that never answers is silence
                answer = udp_echo if fault is Fault.WRONG_SERVICE else udp_silent
                peer = await stack.enter_async_context(udp_peer(answer))
                targets[cell.check] = Target(HOST, peer.port)
        cells_tcp = tuple(cell for cell in cells if cell.check not in targets)
        if fault is Fault.WRONG_SERVICE:
            ssh_port = await stack.enter_async_context(fake_server(sends_then_waits(SSH_BANNER)))
            for cell in cells_tcp:
                port = ssh_port if cell.check in MEETS_SSH else nginx.http_port
                targets[cell.check] = Target(HOST, port)
        else:
            handlers: dict[str, Handler] = {}
            for cell in cells_tcp:
                start = ANSWER_START[cell.check]
                handlers[cell.check] = {
                    Fault.SILENT: silent,
                    Fault.SLOW_DRIP: drips(start),
                    Fault.CLOSES_MID_EXCHANGE: closes_after_request,
                    Fault.CLOSES_MID_ANSWER: closes_mid_answer(start),
                }[fault]
            targets.update(await _served(stack, handlers))
        timeout = SILENCE_TIMEOUT_S if fault in TIMES_OUT else ANSWER_TIMEOUT_S
        outcomes = await _run_cells(cells, targets, pool, timeout)
    wrong = _disagreements(outcomes)
    assert not wrong, "\n".join(wrong)


def _self_signed(directory: Path) -> CertPair:
    """A leaf for localhost and 127.0.0.1 signed by its own key: no CA vouches for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    not_after = now + dt.timedelta(days=SELF_SIGNED_DAYS)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "self-signed.pem", directory / "self-signed.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return CertPair(cert_path, key_path, not_after)


def _leaf_only(pair: CertPair, directory: Path) -> CertPair:
    """The chained leaf without its intermediate, as a server that forgot the chain sends it."""
    leaf = x509.load_pem_x509_certificates(pair.cert.read_bytes())[0]
    path = directory / "leaf-only.pem"
    path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return CertPair(path, pair.key, pair.not_after)


def _certificate(fault: Fault, pki: Pki, directory: Path) -> CertPair:
    """The certificate the TLS peer shows for `fault`."""
    if fault is Fault.TLS_EXPIRED:
        return pki.expired
    if fault is Fault.TLS_WRONG_NAME:
        return pki.wrong_host
    if fault is Fault.TLS_SELF_SIGNED:
        return _self_signed(directory)
    return _leaf_only(pki.chained, directory)


@contextlib.asynccontextmanager
async def _tls_peers(cells: tuple[Cell, ...], pair: CertPair) -> AsyncIterator[dict[str, Target]]:
    """A TLS peer per check showing `pair`: TLS from the first byte, or inside TDS PRELOGIN."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pair.cert, pair.key)
    async with contextlib.AsyncExitStack() as stack:
        targets = {}
        for cell in cells:
            if cell.check == "mssql":
                fake = await stack.enter_async_context(
                    tds_server("monitor", "unused", encryption=ENCRYPT_ON, certificate=pair)
                )
                targets[cell.check] = Target(HOST, fake.port)
            else:
                handler = agrees_to_start_tls(context) if cell.check == "ldap" else None
                port = await stack.enter_async_context(fake_server(handler or serves_tls(context)))
                targets[cell.check] = Target(HOST, port)
        yield targets


START_TLS_OID = b"1.3.6.1.4.1.1466.20037"  # RFC 4511 4.14.1


def _ber(tag: int, value: bytes) -> bytes:
    """One BER TLV with a short-form length (X.690 8.1.3.4): every value here is < 128 bytes."""
    return bytes([tag, len(value)]) + value


async def _read_ldap_message(reader: asyncio.StreamReader) -> bytes:
    """One LDAPMessage SEQUENCE (RFC 4511 4.1.1): its content, whatever the length's form."""
    header = await reader.readexactly(2)
    size = header[1]
    if size & 0x80:
        size = int.from_bytes(await reader.readexactly(size & 0x7F), "big")
    return await reader.readexactly(size)


def agrees_to_start_tls(context: ssl.SSLContext) -> Handler:
    """An LDAP server that answers the StartTLS extended request with success (RFC 4511
    4.14.2) and then shows its certificate in the TLS handshake."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _read_ldap_message(reader)
        message_id = request[: 2 + request[1]]  # the INTEGER TLV, echoed as it came
        result = bytes.fromhex("0a0100") + _ber(0x04, b"") + _ber(0x04, b"")  # success, "", ""
        response = _ber(0x78, result + _ber(0x8A, START_TLS_OID))  # [APPLICATION 24]
        writer.write(_ber(0x30, message_id + response))
        await writer.drain()
        with contextlib.suppress(ssl.SSLError):  # a client rejecting the certificate aborts
            await writer.start_tls(context)
            await wait_for_client_to_leave(reader)

    return handler


@pytest.mark.parametrize(
    "fault",
    [
        Fault.TLS_EXPIRED,
        Fault.TLS_SELF_SIGNED,
        Fault.TLS_WRONG_NAME,
        Fault.TLS_MISSING_INTERMEDIATE,
    ],
)
async def test_tls_fault(fault: Fault, pool: BlockingPool, pki: Pki, tmp_path: Path) -> None:
    """A certificate the client must refuse: every TLS-capable check says which fault it is."""
    cells = _built(fault)
    base = {"ca_file": str(pki.ca_cert), "server_name": "localhost"}
    async with _tls_peers(cells, _certificate(fault, pki, tmp_path)) as targets:
        bases = {cell.check: base for cell in cells}
        outcomes = await _run_cells(cells, targets, pool, ANSWER_TIMEOUT_S, bases)
    wrong = _disagreements(outcomes)
    assert not wrong, "\n".join(wrong)


WRONG_PASSWORD = "not-the-password"  # what every wrong-credentials cell logs in with


@contextlib.asynccontextmanager
async def _account_peer(
    check: str, request: pytest.FixtureRequest, pki: Pki
) -> AsyncIterator[tuple[Target, dict[str, object]]]:
    """The real or spec-written peer of `check` that has an account, and settings naming that
    account with a wrong password (a wrong SNMPv3 authentication password for snmp)."""
    if check == "ssh":
        sshd: Sshd = request.getfixturevalue("sshd")
        yield (
            Target(sshd.host, sshd.port),
            {"username": sshd.login_user, "password": WRONG_PASSWORD},
        )
    elif check in {"ldap", "ldaps"}:
        slapd: Slapd = request.getfixturevalue("slapd")
        port = slapd.ldap_port if check == "ldap" else slapd.ldaps_port
        tls = {"ca_file": str(pki.ca_cert)} if check == "ldaps" else {}
        yield (
            Target(slapd.host, port),
            {"bind_dn": slapd.user_dn, "password": WRONG_PASSWORD, **tls},
        )
    elif check == "smb":
        samba: SambaSmb = request.getfixturevalue("samba_smb")
        yield Target(samba.host, samba.port), {"username": samba.user, "password": WRONG_PASSWORD}
    elif check == "snmp":
        snmpd: Snmpd = request.getfixturevalue("snmpd")
        user = SHA256_AES
        yield (
            Target(snmpd.host, snmpd.port),
            {
                "username": user.name,
                "auth_protocol": user.auth_protocol,
                "auth_password": WRONG_PASSWORD,
                "priv_protocol": user.priv_protocol,
                "priv_password": user.priv_password,
            },
        )
    elif check == "mssql":
        async with tds_server(TDS_USER, "Corr3ct-Horse") as tds:
            yield Target(HOST, tds.port), {"username": TDS_USER, "password": WRONG_PASSWORD}
    elif check == "vsphere":
        with run_vsphere_fake(VCENTER, pki.valid.cert, pki.valid.key) as vcenter:
            yield (
                Target(HOST, vcenter.port),
                {
                    "ca_file": str(pki.ca_cert),
                    "username": VSPHERE_USER,
                    "password": WRONG_PASSWORD,
                },
            )
    elif check == "xenapi":
        with run_xapi_fake() as xapi:
            yield Target(HOST, xapi.port), {"username": XAPI_USER, "password": WRONG_PASSWORD}
    elif check == "oracle_tns":
        with run_tns_listener(services=(ORACLE_SERVICE,)) as listener:
            yield (
                Target(HOST, listener.port),
                {
                    "service_name": ORACLE_SERVICE,
                    "username": "scott",
                    "password": WRONG_PASSWORD,
                },
            )
    elif check in {"http", "https"}:
        server_tls: ssl.SSLContext | None = None
        if check == "https":
            server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server_tls.load_cert_chain(pki.valid.cert, pki.valid.key)
        async with fake_server(refuses_basic_auth(server_tls)) as port:
            yield (
                Target(HOST, port),
                {
                    "headers": {"Authorization": f"Basic {WRONG_BASIC}"},
                    **({"ca_file": str(pki.ca_cert)} if server_tls is not None else {}),
                },
            )
    else:
        raise LookupError(f"no peer with an account for {check}")


def refuses_basic_auth(tls: ssl.SSLContext | None) -> Handler:
    """A web server (TLS with `tls`) answering every request 401 with a Basic challenge,
    as one does to an Authorization header it does not accept (RFC 9110 11.6.1, 15.5.2)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if tls is not None:
            await writer.start_tls(tls)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(UNAUTHORIZED)
        await writer.drain()
        await wait_for_client_to_leave(reader)

    return handler


async def test_wrong_credentials(
    request: pytest.FixtureRequest, pool: BlockingPool, pki: Pki
) -> None:
    """A wrong password against a peer that has the account: auth_failed, in the peer's words."""
    cells = _built(Fault.WRONG_CREDENTIALS)
    async with contextlib.AsyncExitStack() as stack:
        targets: dict[str, Target] = {}
        accounts: dict[str, dict[str, object]] = {}
        for cell in cells:
            target, account = await stack.enter_async_context(
                _account_peer(cell.check, request, pki)
            )
            targets[cell.check], accounts[cell.check] = target, account
        outcomes = await _run_cells(cells, targets, pool, ANSWER_TIMEOUT_S, accounts)
    wrong = _disagreements(outcomes)
    assert not wrong, "\n".join(wrong)
    assert not [cell for cell, out in outcomes.items() if WRONG_PASSWORD in out.result.detail]


def test_every_fault_has_a_test() -> None:
    """A row of a new fault must come with the code that builds it, or it is never run."""
    built_here = {
        *RULES,
        Fault.DNS,
        Fault.SILENT,
        Fault.SLOW_DRIP,
        Fault.CLOSES_MID_EXCHANGE,
        Fault.CLOSES_MID_ANSWER,
        Fault.WRONG_SERVICE,
        Fault.TLS_EXPIRED,
        Fault.TLS_SELF_SIGNED,
        Fault.TLS_WRONG_NAME,
        Fault.TLS_MISSING_INTERMEDIATE,
        Fault.WRONG_CREDENTIALS,
    }
    assert {cell.fault for cell in CELLS if cell.expected is not NOT_YET} <= built_here


def test_diagnosis_document_is_current() -> None:
    """docs/diagnosis.md is generated from the table; regenerate it when a row changes."""
    assert DIAGNOSIS.read_text(encoding="utf-8") == render_diagnosis(), (
        "docs/diagnosis.md is stale: run `python -m tests.fault_matrix > docs/diagnosis.md`"
    )
