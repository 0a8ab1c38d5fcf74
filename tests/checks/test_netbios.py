"""`netbios_ns` and `netbios_ssn` against a real Samba, a Windows-like fake, nginx and hostile
peers on UDP and TCP."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import pydantic
import pytest
from impacket import nmb

from exporter.catalogue import FLOWS_BY_ID
from exporter.checks import CHECKS, CheckSettings, Target
from exporter.checks.netbios import (
    MAX_NODE_STATUS_REPLY_BYTES,
    NetbiosNsSettings,
    NetbiosSsnSettings,
    build_node_status_request,
    build_session_request,
    parse_node_status,
)
from exporter.config import parse_config
from exporter.errors import CheckFailure, ConfigError
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.runner import run_check
from tests.checks.fakes import HOST, Handler, closes_at_once, fake_server, sends_then_waits, silent
from tests.fakes.netbios import (
    ACTIVE,
    GROUP,
    MAC,
    OWN_NAME,
    WINDOWS_NAME_TABLE,
    WORKGROUP,
    name_service,
    node_status_response,
    session_service,
)
from tests.peers.nginx import Nginx
from tests.peers.samba import Samba
from tests.peers.udp import echo, udp_peer

SHORT_TIMEOUT_S = 0.5
FILTERED = "the port is filtered or the service does not answer this request"
CLIENT_TIMEOUT_S = 5
CLOSED_TCP_PORT = 140  # nothing listens on it in the Samba namespace
CLOSED_UDP_PORT = 139  # smbd has TCP 139; UDP 139 is nobody's
WINDOWS_PEER = PeerInfo(product=OWN_NAME, version=f"workgroup {WORKGROUP}, MAC 00:15:5d:01:02:a3")
TRANSACTION_ID = 0x4A2B


async def _ns(
    host: str,
    port: int,
    timeout_seconds: float = 5.0,
    settings: NetbiosNsSettings | None = None,
) -> CheckResult:
    return await _run("netbios_ns", host, port, settings or NetbiosNsSettings(), timeout_seconds)


async def _ssn(
    host: str,
    port: int,
    timeout_seconds: float = 5.0,
    called_name: str | None = None,
) -> CheckResult:
    settings = (
        NetbiosSsnSettings() if called_name is None else NetbiosSsnSettings(called_name=called_name)
    )
    return await _run("netbios_ssn", host, port, settings, timeout_seconds)


async def _run(
    check: str, host: str, port: int, settings: CheckSettings, timeout_seconds: float
) -> CheckResult:
    outcome = await run_check(CHECKS[check], Target(host, port), settings, timeout_seconds)
    assert not outcome.defect, outcome.result.detail
    return outcome.result


# --- wire formats -----------------------------------------------------------------------------


def test_node_status_request_is_the_rfc_1002_layout() -> None:
    """The request is the 50 bytes of RFC 1002 4.2.17: one NBSTAT question for `*`."""
    expected = bytes.fromhex("4a2b 0000 0001 0000 0000 0000 20 434b") + b"A" * 30
    expected += bytes.fromhex("00 0021 0001")
    assert build_node_status_request(TRANSACTION_ID) == expected
    assert len(expected) == 50


def test_session_request_names_are_encoded_as_impacket_encodes_them() -> None:
    """Called and calling names in the session request match impacket's RFC 1001 encoder."""
    request = build_session_request("*SMBSERVER")
    assert request[:4] == bytes.fromhex("81 00 00 44")
    assert request[4:38] == nmb.encode_name("*SMBSERVER", nmb.TYPE_SERVER, "")
    assert request[38:] == nmb.encode_name("CERTEROFLOW", nmb.TYPE_WORKSTATION, "")


def test_called_name_setting_is_a_netbios_name() -> None:
    """The called name is upper-cased; a long name, a dot, a space or an unknown key is refused."""
    assert NetbiosSsnSettings(called_name="pc042").called_name == "PC042"
    assert NetbiosSsnSettings().called_name == "*SMBSERVER"
    for bad in ("A" * 16, "pc042.corp", "pc 042", ""):
        with pytest.raises(pydantic.ValidationError, match="is not a NetBIOS name"):
            NetbiosSsnSettings(called_name=bad)
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        NetbiosSsnSettings.model_validate({"calling_name": "X"})
    assert NetbiosNsSettings(retransmissions=2).retransmissions == 2


def test_catalogue_flows_run_the_netbios_checks() -> None:
    """Both NetBIOS flows of the port table now run their own check, settings validated."""
    assert FLOWS_BY_ID["netbios_ns_endpoints"].check == "netbios_ns"
    assert FLOWS_BY_ID["netbios_ssn_endpoints"].check == "netbios_ssn"
    config = parse_config(
        "source: endpoint_server\n"
        "targets: {endpoint_networks: [192.0.2.10]}\n"
        "flows:\n"
        "  netbios_ssn_endpoints: {called_name: pc042}\n"
        "  netbios_ns_endpoints: {retransmissions: 1}\n",
        "netbios.yaml",
    )
    jobs = {job.flow_id: job for job in config.jobs}
    assert jobs["netbios_ssn_endpoints"].target == Target("192.0.2.10", 139)
    assert jobs["netbios_ns_endpoints"].target == Target("192.0.2.10", 137)
    with pytest.raises(ConfigError, match=r"flows\.netbios_ssn_endpoints\.called_nme: unknown"):
        parse_config(
            "source: endpoint_server\nflows:\n  netbios_ssn_endpoints: {called_nme: pc042}\n",
            "netbios.yaml",
        )


# --- the real Samba ---------------------------------------------------------------------------


async def test_name_service_reads_samba_name_workgroup_and_no_mac(samba: Samba) -> None:
    """nmbd's node status gives the machine name and workgroup as peer info; its MAC is zeros."""
    result = await _ns(samba.host, samba.netbios_ns_port)
    assert result.result is Result.OK, result.detail
    assert result.peer == PeerInfo(
        product=samba.netbios_name, version=f"workgroup {samba.workgroup}"
    )
    assert result.detail == (
        f"{samba.netbios_name}, workgroup/domain {samba.workgroup}, "
        "no MAC (all zeros, as Samba answers), 5 names, file server <20> registered"
    )
    assert set(result.phases) == {Phase.HANDSHAKE}
    assert result.address == samba.host


@pytest.mark.parametrize("called_name", ["*SMBSERVER", "CERTEROSMB", "SOMEONEELSE"])
async def test_session_service_positive_response(samba: Samba, called_name: str) -> None:
    """smbd on 139 accepts `*SMBSERVER`, its own name and, being Samba, any other name."""
    result = await _ssn(samba.host, samba.netbios_ssn_port, called_name=called_name)
    assert result.result is Result.OK, result.detail
    assert result.detail == f"positive session response: sessions to {called_name}<20> are accepted"
    assert {Phase.CONNECT, Phase.HANDSHAKE} <= set(result.phases)
    assert result.tcp_rtt_seconds is not None


async def test_retarget_response_names_the_new_address(samba: Samba) -> None:
    """Samba's `netbios retarget` answers with RETARGET (0x84): ok, naming address and port."""
    result = await _ssn(samba.host, samba.netbios_ssn_port, called_name=samba.retargeted_name)
    assert result.result is Result.OK, result.detail
    assert result.detail == (
        f"retarget session response: callers of {samba.retargeted_name}<20> "
        f"are sent to {samba.host}:{samba.smb_port}"
    )


async def test_closed_tcp_port_is_refused(samba: Samba) -> None:
    """A port of the Samba host where nothing listens answers with a reset: refused."""
    result = await _ssn(samba.host, CLOSED_TCP_PORT)
    assert result.result is Result.REFUSED
    assert result.detail == "connection refused (port closed or reset by a firewall)"


async def test_closed_udp_port_is_refused_through_icmp(samba: Samba) -> None:
    """The host's ICMP port unreachable for a UDP port without a listener makes it refused."""
    result = await _ns(samba.host, CLOSED_UDP_PORT)
    assert result.result is Result.REFUSED
    assert result.detail == (
        f"UDP port {CLOSED_UDP_PORT} unreachable: nothing listens there "
        "(ICMP port unreachable, or a firewall rejecting in its place)"
    )


async def test_dropped_session_service_is_timeout_in_connect(samba: Samba) -> None:
    """An iptables DROP in front of smbd's 139 lets the connect time out."""
    with samba.namespace.dropping("tcp", samba.netbios_ssn_port):
        result = await _ssn(samba.host, samba.netbios_ssn_port, SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert result.detail == "no answer within 0.5s during connect"


async def test_dropped_name_service_is_timeout_saying_filtered(samba: Samba) -> None:
    """An iptables DROP in front of nmbd's 137 is silence: a timeout in UDP's words."""
    with samba.namespace.dropping("udp", samba.netbios_ns_port):
        result = await _ns(samba.host, samba.netbios_ns_port, SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert result.detail == f"no UDP reply within 0.5s (1 request sent): {FILTERED}"


async def test_http_server_is_protocol_mismatch(nginx: Nginx) -> None:
    """nginx answers the session request with an HTTP 400, no NetBIOS packet: protocol_mismatch."""
    result = await _ssn(HOST, nginx.http_port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail.startswith("not a NetBIOS session service: it sent 'HTTP'")


# --- a Windows-like node ----------------------------------------------------------------------


async def test_called_name_not_present_is_ok_with_detail() -> None:
    """Windows' NEGATIVE 0x82 for a name it does not hold still proves the session service."""
    async with fake_server(session_service()) as port:
        result = await _ssn(HOST, port, called_name="NOSUCHPC")
    assert result.result is Result.OK, result.detail
    assert result.detail == (
        "negative session response for NOSUCHPC<20>: called name not present (0x82); "
        "the session service answers, the host goes by another name"
    )


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (0x80, "not listening on the called name (0x80)"),
        (0x81, "not listening for the calling name (0x81)"),
        (0x83, "called name present, but insufficient resources (0x83)"),
        (0x8F, "unspecified error (0x8f)"),
        (0x99, "an error code RFC 1002 does not define (0x99)"),
    ],
)
async def test_other_negative_responses_are_service_errors(code: int, words: str) -> None:
    """A session service that will not serve us is the right service failing: service_error."""
    async with fake_server(session_service(negative_code=code)) as port:
        result = await _ssn(HOST, port)
    assert result.result is Result.SERVICE_ERROR
    assert result.detail == f"negative session response for *SMBSERVER<20>: {words}"


async def test_windows_node_status_gives_the_mac() -> None:
    """A node status carrying a MAC reports it beside the machine name and workgroup."""
    async with udp_peer(name_service()) as peer:
        result = await _ns(HOST, peer.port)
    assert result.result is Result.OK, result.detail
    assert result.peer == WINDOWS_PEER
    assert result.detail == (
        f"{OWN_NAME}, workgroup/domain {WORKGROUP}, MAC 00:15:5d:01:02:a3, "
        "3 names, file server <20> registered"
    )


async def test_domain_controller_is_named() -> None:
    """A node holding the domain's <1C> group name is reported as its domain controller."""
    table = (*WINDOWS_NAME_TABLE, (WORKGROUP, 0x1C, GROUP | ACTIVE))
    async with udp_peer(name_service(table)) as peer:
        result = await _ns(HOST, peer.port)
    assert result.result is Result.OK, result.detail
    assert f"domain controller of {WORKGROUP}, 4 names" in result.detail


async def test_impacket_sessions_prove_the_fake() -> None:
    """impacket's session client gets a session for the fake's name and is refused another.

    impacket sends its session request on port 139 only, so the request is made by its own
    `_request_session` on the fake's free port, the same code it runs on 139.
    """
    async with fake_server(session_service()) as port:

        def request_session(name: str) -> None:
            session = nmb.NetBIOSTCPSession(
                "CLIENT", name, HOST, sess_port=port, timeout=CLIENT_TIMEOUT_S
            )
            try:
                session._request_session(nmb.TYPE_SERVER, nmb.TYPE_WORKSTATION, CLIENT_TIMEOUT_S)
            finally:
                session.close()

        await asyncio.to_thread(request_session, OWN_NAME)
        with pytest.raises(nmb.NetBIOSError, match="Cannot request session"):
            await asyncio.to_thread(request_session, "NOSUCHPC")


async def test_impacket_node_status_proves_the_fake() -> None:
    """impacket's NBSTAT client reads the fake's names, group flags and MAC."""
    async with udp_peer(name_service()) as peer:
        client = nmb.NetBIOS(servport=peer.port)
        entries = await asyncio.to_thread(client.getnodestatus, "*", HOST, timeout=CLIENT_TIMEOUT_S)
    seen = [(e["NAME"].decode().strip(), e["TYPE"], e["NAME_FLAGS"]) for e in entries]
    assert seen == list(WINDOWS_NAME_TABLE)
    assert client.getmacaddress() == MAC.hex("-").upper()


# --- hostile session peers --------------------------------------------------------------------

POSITIVE = bytes.fromhex("82 00 00 00")
KEEP_ALIVE = bytes.fromhex("85 00 00 00")


@pytest.mark.parametrize(
    ("handler", "expected", "detail"),
    [
        (
            closes_at_once,
            Result.SERVICE_ERROR,
            "connection closed without an answer to the NetBIOS session request",
        ),
        (silent, Result.TIMEOUT, "no answer within 0.5s during handshake"),
        (sends_then_waits(b"\x82"), Result.TIMEOUT, "no answer within 0.5s during handshake"),
        (
            sends_then_waits(bytes.fromhex("83 00 00 01")),
            Result.TIMEOUT,
            "no answer within 0.5s during handshake",
        ),
        (
            sends_then_waits(bytes.fromhex("82 00 ff ff")),
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS session service: it sent",
        ),
        (
            sends_then_waits(bytes.fromhex("82 01 00 00")),
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS session service: it sent",
        ),
        (
            sends_then_waits(bytes.fromhex("83 00 00 02 82 00")),
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS session service: it sent",
        ),
        (
            sends_then_waits(bytes.fromhex("00 00 00 10") + b"\xfeSMB"),
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS session service: it sent",
        ),
        (
            sends_then_waits(b"SSH-2.0-OpenSSH_9.2p1\r\n"),
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS session service: it sent 'SSH-'",
        ),
        (sends_then_waits(KEEP_ALIVE * 2 + POSITIVE), Result.OK, "positive session response"),
        (
            sends_then_waits(KEEP_ALIVE * 5 + POSITIVE),
            Result.PROTOCOL_MISMATCH,
            "5 keep-alives and no answer",
        ),
    ],
    ids=[
        "closes",
        "silent",
        "one-byte-then-stall",
        "negative-without-code",
        "huge-length",
        "length-extension-flag",
        "negative-too-long",
        "session-message",
        "ssh-banner",
        "keep-alives-then-positive",
        "only-keep-alives",
    ],
)
async def test_hostile_session_peers_are_classified(
    handler: Handler, expected: Result, detail: str
) -> None:
    """Every misbehaving TCP peer gets a classified result within the timeout."""
    async with fake_server(handler) as port:
        result = await _ssn(HOST, port, SHORT_TIMEOUT_S)
    assert result.result is expected, result.detail
    assert result.detail.startswith(detail)


# --- hostile name service peers ---------------------------------------------------------------


def _reply_to(request: bytes) -> bytes:
    """The Windows-like fake's answer to `request`, under the request's transaction id."""
    (transaction_id,) = struct.unpack_from(">H", request)
    return node_status_response(transaction_id)


def _other_id(request: bytes) -> bytes:
    """An answer under a transaction id one higher than the request's."""
    (transaction_id,) = struct.unpack_from(">H", request)
    return node_status_response((transaction_id + 1) & 0xFFFF)


async def test_lost_request_is_answered_on_retransmission() -> None:
    """A lost first request with one retransmission: ok after two requests, saying so."""
    requests: list[bytes] = []

    def lose_first(request: bytes) -> bytes | None:
        requests.append(request)
        return _reply_to(request) if len(requests) > 1 else None

    async with udp_peer(lose_first) as peer:
        result = await _ns(HOST, peer.port, 1.0, NetbiosNsSettings(retransmissions=1))
    assert result.result is Result.OK, result.detail
    assert result.detail.endswith("(answered after 2 requests)")
    assert len(peer.received) == 2
    assert peer.received[0] == peer.received[1]  # a retransmission is the same request


async def test_every_request_lost_is_timeout() -> None:
    """A peer losing every request is a timeout counting the requests sent."""
    async with udp_peer(lambda _: None) as peer:
        result = await _ns(HOST, peer.port, SHORT_TIMEOUT_S, NetbiosNsSettings(retransmissions=2))
    assert result.result is Result.TIMEOUT
    assert result.detail == f"no UDP reply within 0.5s (3 requests sent): {FILTERED}"
    assert len(peer.received) == 3


async def test_duplicated_reply_is_read_once() -> None:
    """A reply sent twice is ok on the first copy; the second is never read."""
    async with udp_peer(lambda request: [_reply_to(request)] * 2) as peer:
        result = await _ns(HOST, peer.port)
    assert result.result is Result.OK, result.detail
    assert result.peer == WINDOWS_PEER
    assert len(peer.received) == 1


@pytest.mark.parametrize(
    ("answer", "expected", "detail"),
    [
        (
            _other_id,
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS node status response: it answers transaction",
        ),
        (
            lambda request: [_other_id(request), _reply_to(request)],
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS node status response: it answers transaction",
        ),
        (
            echo,
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS node status response: the request came back unchanged",
        ),
        (
            lambda request: _reply_to(request)[:11],
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS node status response: a 11-byte datagram, shorter than",
        ),
        (
            lambda request: _reply_to(request)[:40],
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS node status response: truncated in the answer's name",
        ),
        (
            lambda request: _reply_to(request)[:52],
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS node status response: truncated in the answer record",
        ),
        (
            lambda request: _reply_to(request)[:100],
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS node status response: RDLENGTH 101, but 44 bytes follow",
        ),
        (
            lambda request: _reply_to(request) + bytes(MAX_NODE_STATUS_REPLY_BYTES),
            Result.PROTOCOL_MISMATCH,
            f"UDP reply larger than {MAX_NODE_STATUS_REPLY_BYTES} bytes",
        ),
        (
            lambda _: b"\x00",
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS node status response: a 1-byte datagram",
        ),
        (lambda _: b"\xff" * 64, Result.PROTOCOL_MISMATCH, "not a NetBIOS node status response: "),
    ],
    ids=[
        "wrong-id",
        "wrong-id-then-right-id",
        "echo",
        "truncated-header",
        "truncated-name",
        "truncated-record",
        "truncated-rdata",
        "oversized",
        "empty",
        "garbage",
    ],
)
async def test_hostile_name_service_peers_are_classified(
    answer: Callable[[bytes], bytes | list[bytes]], expected: Result, detail: str
) -> None:
    """Wrong ids, echoes, truncated, oversized and garbage datagrams are protocol mismatches.

    The first datagram decides: a connected socket takes replies from the target only, and a
    wrong id from it is a broken peer, not a reply to an older request (each run has a fresh
    socket, port and random transaction id).
    """
    async with udp_peer(answer) as peer:
        result = await _ns(HOST, peer.port, SHORT_TIMEOUT_S)
    assert result.result is expected, result.detail
    assert result.detail.startswith(detail)
    assert len(peer.received) == 1


async def test_largest_valid_reply_is_accepted() -> None:
    """A table of 255 names is the largest answer and fits the reply bound exactly."""
    table = [(f"NAME{index:03d}", 0x00, GROUP) for index in range(255)]
    long_name_reply = node_status_response(TRANSACTION_ID, table)
    assert len(long_name_reply) <= MAX_NODE_STATUS_REPLY_BYTES
    async with udp_peer(name_service(table)) as peer:
        result = await _ns(HOST, peer.port)
    assert result.result is Result.OK, result.detail
    assert result.detail.startswith("no unique name, workgroup/domain NAME000, MAC")
    assert "255 names, no file server <20>" in result.detail


@pytest.mark.parametrize(
    ("change", "expected", "detail"),
    [
        (
            (3, 0x83),
            Result.SERVICE_ERROR,
            "the name service answered the node status request with RCODE 3: name error (NAM_ERR)",
        ),
        (
            (2, 0x84 | 0x28),
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS node status response: opcode 5",
        ),
        (
            (2, 0x04),
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS node status response: the response bit is not set",
        ),
        (
            (7, 0x00),
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS node status response: no answer record",
        ),
        (
            (47, 0x20),
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS node status response: answer of type 0x0020",
        ),
        (
            (56, 0x09),
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS node status response: NUM_NAMES 9 needs 163 bytes",
        ),
        (
            (12, 0x50),
            Result.PROTOCOL_MISMATCH,
            "not a NetBIOS node status response: label length 80",
        ),
    ],
    ids=[
        "rcode",
        "opcode",
        "not-a-response",
        "no-answer",
        "nb-not-nbstat",
        "too-many-names",
        "bad-label",
    ],
)
def test_inconsistent_fields_are_classified(
    change: tuple[int, int], expected: Result, detail: str
) -> None:
    """A reply whose header or counts contradict it is classified by the field that is wrong."""
    reply = bytearray(node_status_response(TRANSACTION_ID))
    position, value = change
    reply[position] = value
    with pytest.raises(CheckFailure) as caught:
        parse_node_status(bytes(reply), TRANSACTION_ID)
    assert caught.value.result is expected
    assert caught.value.detail.startswith(detail)


def test_no_prefix_or_corruption_of_a_reply_crashes_the_parser() -> None:
    """Every truncation and every single-byte corruption parses or fails classified, never raises
    anything else: no count or length in a reply is trusted."""
    reply = node_status_response(TRANSACTION_ID)
    variants = [reply[:cut] for cut in range(len(reply))]
    for position in range(len(reply)):
        for value in (0x00, 0x3F, 0x7F, 0xC0, 0xFF):
            corrupted = bytearray(reply)
            corrupted[position] = value
            variants.append(bytes(corrupted))
    outcomes: list[Result] = []
    for variant in variants:
        try:
            parse_node_status(variant, TRANSACTION_ID)
        except CheckFailure as failure:
            outcomes.append(failure.result)
        else:
            outcomes.append(Result.OK)
    assert set(outcomes) == {Result.OK, Result.PROTOCOL_MISMATCH, Result.SERVICE_ERROR}
    assert outcomes[: len(reply)] == [Result.PROTOCOL_MISMATCH] * len(reply)  # every truncation
