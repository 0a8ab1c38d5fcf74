"""`snmp` check against a real net-snmp agent, namespaces with packet filters, and fake agents."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pydantic
import pytest
from pyasn1.error import PyAsn1Error
from pysnmp.error import PySnmpError
from pysnmp.proto.api import v2c

from exporter.checks import CHECKS, Target
from exporter.checks import snmp as snmp_check
from exporter.checks.snmp import (
    AUTH_PROTOCOLS,
    DEFAULT_COMMUNITY,
    MAX_REPLY_BYTES,
    PRIV_PROTOCOLS,
    REPORTS,
    SnmpSettings,
    decode_v2c,
    encode_v2c_get,
    excerpt,
)
from exporter.errors import CheckFailure
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.runner import run_check
from tests.fakes.snmp import (
    FAKE_DESCR,
    FAKE_NAME,
    FAKE_OBJECT_ID,
    default_values,
    v2c_agent,
    v2c_response,
    v3_reporter,
)
from tests.peers.netns import IsolatedHost
from tests.peers.ports import free_udp_port
from tests.peers.pysnmp_agent import USERS as PYSNMP_USERS
from tests.peers.pysnmp_agent import PysnmpAgent
from tests.peers.snmpd import (
    SHA256_AES,
    SHA_AES,
    SHA_AUTH_ONLY,
    SYS_DESCR,
    SYS_NAME,
    USERS,
    Snmpd,
    V3User,
)
from tests.peers.udp import echo, silent, udp_peer

HOST = "127.0.0.1"
TIMEOUT_S = 3.0
SILENCE_TIMEOUT_S = 0.5  # a silent peer costs the test this much: keep it short
NAMESPACE_PORT = 8161
WRONG_PASSWORD = "S3CR3T-SNMP-WRONG-pw-77"
FUZZ_CASES = 300  # mutated answers fed to the decoder; bounded so the test stays fast
V3_FUZZ_CASES = 60  # mutated answers of the real agent, per message; each is one check
CONCURRENT_CHECKS = 45  # five rounds of v2c and every v3 user, all at once


async def _run(port: int, settings: SnmpSettings, timeout_s: float = TIMEOUT_S) -> CheckResult:
    outcome = await run_check(CHECKS["snmp"], Target(HOST, port), settings, timeout_s)
    assert not outcome.defect, outcome.result.detail
    return outcome.result


def _v3(user: V3User, **changes: str) -> SnmpSettings:
    """Settings that log in as `user`, with any of its fields replaced."""
    fields: dict[str, str | None] = {
        "username": user.name,
        "auth_protocol": user.auth_protocol,
        "auth_password": user.auth_password,
        "priv_protocol": user.priv_protocol,
        "priv_password": user.priv_password,
    }
    fields.update(changes)
    return SnmpSettings.model_validate(
        {name: value for name, value in fields.items() if value is not None}
    )


# --- a real agent ---------------------------------------------------------------------------


async def test_v2c_ok_reports_sys_name_and_descr_as_peer_info(snmpd: Snmpd) -> None:
    """The community's GET is ok; sysDescr and sysName are the peer info, the rest in the detail."""
    result = await _run(snmpd.port, SnmpSettings(community=snmpd.community))
    assert result.result is Result.OK, result.detail
    assert result.peer == PeerInfo(product=SYS_DESCR, version=SYS_NAME)
    assert result.detail.startswith(f"SNMPv2c: {SYS_NAME}, '{SYS_DESCR}', ")
    assert "sysObjectID 1.3.6.1.4.1.8072.3.2.10" in result.detail  # net-snmp's Linux agent
    assert set(result.phases) == {Phase.HANDSHAKE}


@pytest.mark.parametrize("user", USERS, ids=[user.name for user in USERS])
async def test_v3_user_ok(snmpd: Snmpd, user: V3User) -> None:
    """Every v3 user of the agent, at its own level and with its own protocols, is ok."""
    result = await _run(snmpd.port, _v3(user))
    assert result.result is Result.OK, result.detail
    level = {"priv": "authPriv", "auth": "authNoPriv", "noauth": "noAuthNoPriv"}[user.level]
    assert result.detail.startswith(f"SNMPv3 {level} as {user.name}: {SYS_NAME}, ")
    assert result.peer == PeerInfo(product=SYS_DESCR, version=SYS_NAME)
    assert {Phase.HANDSHAKE, Phase.AUTH} <= set(result.phases)  # discovery, then the GET


@pytest.mark.parametrize("user", PYSNMP_USERS, ids=[user.name for user in PYSNMP_USERS])
async def test_v3_user_of_the_pysnmp_agent_ok(pysnmp_agent: PysnmpAgent, user: V3User) -> None:
    """3DES and the "Cisco" AES key extension, which net-snmp lacks, against pysnmp's engine."""
    result = await _run(pysnmp_agent.port, _v3(user))
    assert result.result is Result.OK, result.detail
    assert result.detail.startswith(f"SNMPv3 authPriv as {user.name}: ")
    assert "'PySNMP engine version" in result.detail


async def test_decryption_error_report_of_a_real_agent_is_auth_failed(
    pysnmp_agent: PysnmpAgent,
) -> None:
    """pysnmp's agent reports a request it cannot decrypt (RFC 3414 3.2 step 8); it is named."""
    user = PYSNMP_USERS[0]
    result = await _run(pysnmp_agent.port, _v3(user, priv_password=WRONG_PASSWORD))
    assert result.result is Result.AUTH_FAILED
    assert result.detail == (
        "SNMPv3 report usmStatsDecryptionErrors: wrong privacy password or protocol "
        f"(user {user.name}, authPriv)"
    )


async def test_concurrent_checks_of_every_user_share_nothing_but_caches(snmpd: Snmpd) -> None:
    """Checks of every user and v2c at once, as a sweep runs them: each gets its own answer."""
    settings = [SnmpSettings(community=snmpd.community), *(_v3(user) for user in USERS)]
    results = await asyncio.gather(
        *(_run(snmpd.port, settings[index % len(settings)]) for index in range(CONCURRENT_CHECKS))
    )
    assert [result.result for result in results] == [Result.OK] * CONCURRENT_CHECKS
    for index, result in enumerate(results):
        name = settings[index % len(settings)].username
        assert result.detail.startswith("SNMPv2c: " if name is None else "SNMPv3 ")
        assert name is None or f" as {name}: " in result.detail


async def test_ipv6_agent_is_ok() -> None:
    """An agent on ::1 answers like one on 127.0.0.1; the address tested is reported."""
    async with udp_peer(v2c_agent(), host="::1") as peer:
        outcome = await run_check(CHECKS["snmp"], Target("::1", peer.port), SnmpSettings(), 3.0)
    assert outcome.result.result is Result.OK, outcome.result.detail
    assert outcome.result.address == "::1"


async def test_wrong_community_is_a_timeout_that_says_what_silence_means(snmpd: Snmpd) -> None:
    """An agent drops an unknown community: the timeout names all three causes v2c cannot tell."""
    result = await _run(snmpd.port, SnmpSettings(community=WRONG_PASSWORD), SILENCE_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert result.detail.startswith("no SNMP reply within ")
    assert (
        f"(1 request sent): UDP {snmpd.port} is filtered, the agent is down, or the community "
        "is wrong (SNMPv2c cannot tell these apart" in result.detail
    )


async def test_unknown_user_is_auth_failed_naming_the_report(snmpd: Snmpd) -> None:
    """net-snmp reports usmStatsUnknownUserNames for a user it does not have."""
    result = await _run(snmpd.port, _v3(SHA256_AES, username="certero-nobody"))
    assert result.result is Result.AUTH_FAILED
    assert result.detail == (
        "SNMPv3 report usmStatsUnknownUserNames: the agent has no such user "
        "(user certero-nobody, authPriv)"
    )


async def test_wrong_auth_password_is_auth_failed_naming_the_report(snmpd: Snmpd) -> None:
    """A wrong authentication password gives net-snmp's usmStatsWrongDigests report."""
    result = await _run(snmpd.port, _v3(SHA256_AES, auth_password=WRONG_PASSWORD))
    assert result.result is Result.AUTH_FAILED
    assert result.detail.startswith(
        "SNMPv3 report usmStatsWrongDigests: wrong authentication password or protocol"
    )


async def test_wrong_auth_protocol_is_a_wrong_digest(snmpd: Snmpd) -> None:
    """The right password under another hash is a wrong digest too."""
    result = await _run(snmpd.port, _v3(SHA256_AES, auth_protocol="SHA-512"))
    assert result.result is Result.AUTH_FAILED
    assert "usmStatsWrongDigests" in result.detail


async def test_wrong_priv_password_is_auth_failed_after_discovery(snmpd: Snmpd) -> None:
    """net-snmp drops what it cannot decrypt; after a discovery answer that silence is named."""
    result = await _run(
        snmpd.port, _v3(SHA256_AES, priv_password=WRONG_PASSWORD), SILENCE_TIMEOUT_S
    )
    assert result.result is Result.AUTH_FAILED
    assert "the agent answered discovery in " in result.detail
    assert " ms (engine 8000" in result.detail
    assert "the priv_password or priv_protocol is most likely wrong" in result.detail


async def test_encrypted_silence_with_too_little_time_left_stays_a_timeout() -> None:
    """Silence after a slow discovery, with little time left, is not blamed on the priv key."""
    loop = asyncio.get_running_loop()
    reporter = v3_reporter("1.3.6.1.6.3.15.1.1.6.0")
    started = loop.time()

    def discovery_late_then_silent(request: bytes) -> Sequence[bytes]:
        # answer discovery only, late enough that the GET gets less than ten of its round trips
        answer = reporter(request)
        replies = answer if isinstance(answer, list) else [answer] if answer else []
        return replies if loop.time() - started < SILENCE_TIMEOUT_S / 2 else []

    async with _hostile(discovery_late_then_silent, delay_s=SILENCE_TIMEOUT_S * 0.6) as port:
        result = await _run(port, _v3(SHA256_AES), SILENCE_TIMEOUT_S)
    assert result.result is Result.TIMEOUT, result.detail
    assert result.detail.endswith("but not the authPriv request (too little time left)")


async def test_level_the_user_lacks_is_auth_failed_naming_the_report(snmpd: Snmpd) -> None:
    """Asking authPriv of an authNoPriv user is usmStatsUnsupportedSecLevels."""
    settings = _v3(SHA_AUTH_ONLY, priv_protocol="AES", priv_password=WRONG_PASSWORD)
    result = await _run(snmpd.port, settings)
    assert result.result is Result.AUTH_FAILED
    assert result.detail.startswith("SNMPv3 report usmStatsUnsupportedSecLevels")


async def test_closed_port_is_refused() -> None:
    """ICMP port unreachable is refused for v2c and for v3's discovery alike."""
    port = free_udp_port()
    for settings in (SnmpSettings(), _v3(SHA256_AES)):
        result = await _run(port, settings)
        assert result.result is Result.REFUSED, result.detail
        assert result.detail.startswith(f"UDP port {port} unreachable: nothing listens there")


async def test_dropped_requests_are_a_timeout(isolated_host: IsolatedHost) -> None:
    """A firewall dropping UDP 161's stand-in: v2c names its three causes, v3 rules out creds."""
    isolated_host.udp_echo(NAMESPACE_PORT)
    isolated_host.drop_all_udp_to(NAMESPACE_PORT)
    target = Target(isolated_host.address, NAMESPACE_PORT)
    outcome = await run_check(CHECKS["snmp"], target, SnmpSettings(), SILENCE_TIMEOUT_S)
    assert outcome.result.result is Result.TIMEOUT
    assert "is filtered, the agent is down, or the community is wrong" in outcome.result.detail
    outcome = await run_check(CHECKS["snmp"], target, _v3(SHA256_AES), SILENCE_TIMEOUT_S)
    assert outcome.result.result is Result.TIMEOUT
    assert "engine discovery sends no credentials" in outcome.result.detail


async def test_retransmissions_are_counted_in_the_detail() -> None:
    """No hidden retries: one request by default, and exactly as many more as configured."""
    async with udp_peer(silent) as peer:
        result = await _run(peer.port, SnmpSettings(retransmissions=2), SILENCE_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert "(3 requests sent)" in result.detail
    assert len(peer.received) == 3


# --- peers that are not agents, and agents that misbehave -----------------------------------


async def test_udp_echo_is_a_protocol_mismatch() -> None:
    """A UDP echo sends our GetRequest back: an SNMP message, but no agent's answer."""
    async with udp_peer(echo) as peer:
        result = await _run(peer.port, SnmpSettings())
    assert result.result is Result.PROTOCOL_MISMATCH
    assert (
        result.detail == "the peer sent an SNMP get-request PDU, not a response: not an SNMP agent"
    )


@dataclass
class _Hostile(asyncio.DatagramProtocol):
    """Answers each datagram with whatever `replies` makes of it (none, one or several),
    after `delay_s` when it is set."""

    replies: Callable[[bytes], Sequence[bytes]]
    delay_s: float = 0.0
    transport: asyncio.DatagramTransport | None = None
    pending: list[asyncio.TimerHandle] = field(default_factory=list)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        assert self.transport is not None
        for reply in self.replies(data):
            if self.delay_s:
                later = asyncio.get_running_loop().call_later
                self.pending.append(later(self.delay_s, self.transport.sendto, reply, addr))
            else:
                self.transport.sendto(reply, addr)


@contextlib.asynccontextmanager
async def _hostile(
    replies: Callable[[bytes], Sequence[bytes]], delay_s: float = 0.0
) -> AsyncIterator[int]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Hostile(replies, delay_s), local_addr=(HOST, 0)
    )
    try:
        yield int(transport.get_extra_info("sockname")[1])
    finally:
        for handle in protocol.pending:
            handle.cancel()
        transport.close()


def _v1_answer(request: bytes) -> Sequence[bytes]:
    answer = bytearray(v2c_response(request))
    header = 2 + (answer[1] & 0x7F if answer[1] & 0x80 else 0)  # SEQUENCE tag and length
    answer[header + 2] = 0  # the version INTEGER's one value octet: 0 is SNMPv1
    return [bytes(answer)]


HOSTILE_CASES: dict[str, tuple[Callable[[bytes], Sequence[bytes]], Result, str]] = {
    "lost": (lambda _: [], Result.TIMEOUT, "no SNMP reply within"),
    "duplicated": (lambda r: [v2c_response(r)] * 3, Result.OK, f"SNMPv2c: {FAKE_NAME}"),
    "truncated": (
        lambda r: [v2c_response(r)[:-7]],
        Result.PROTOCOL_MISMATCH,
        "not an SNMPv2c message",
    ),
    "oversized": (
        lambda r: [v2c_response(r) + bytes(MAX_REPLY_BYTES)],
        Result.PROTOCOL_MISMATCH,
        f"UDP reply larger than {MAX_REPLY_BYTES} bytes",
    ),
    "wrong request id": (
        lambda r: [v2c_response(r, request_id_shift=1)],
        Result.PROTOCOL_MISMATCH,
        "the reply answers another request (request-id ",
    ),
    "wrong id, then the right one": (
        lambda r: [v2c_response(r, request_id_shift=-1), v2c_response(r)],
        Result.PROTOCOL_MISMATCH,
        "the reply answers another request",
    ),
    "garbage": (
        lambda _: [random.Random(7).randbytes(200)],
        Result.PROTOCOL_MISMATCH,
        "not an SNMP message",
    ),
    "trailing bytes": (
        lambda r: [v2c_response(r) + b"\x00\x00"],
        Result.PROTOCOL_MISMATCH,
        "not an SNMPv2c message: 2 bytes after the message",
    ),
    "snmpv1": (_v1_answer, Result.PROTOCOL_MISMATCH, "the agent answered in SNMPv1, not SNMPv2c"),
    "one byte": (lambda _: [b"\x30"], Result.PROTOCOL_MISMATCH, "not an SNMP message"),
}


@pytest.mark.parametrize("case", HOSTILE_CASES)
async def test_hostile_udp_peer_gets_a_classified_result_in_time(case: str) -> None:
    """Lost, duplicated, truncated, oversized, mislabelled and garbage answers: never a crash."""
    replies, expected, words = HOSTILE_CASES[case]
    async with _hostile(replies) as port:
        result = await _run(port, SnmpSettings(), SILENCE_TIMEOUT_S)
    assert result.result is expected, result.detail
    assert words in result.detail


async def test_answer_after_the_deadline_is_a_timeout() -> None:
    """A slow agent's answer, due only after the check's timeout, is never waited for."""
    async with _hostile(lambda r: [v2c_response(r)], delay_s=SILENCE_TIMEOUT_S * 2) as port:
        result = await _run(port, SnmpSettings(), SILENCE_TIMEOUT_S)
    assert result.result is Result.TIMEOUT


def test_decoder_classifies_every_mutation_of_an_answer() -> None:
    """Bit flips, cuts and splices of a real answer end as a CheckFailure or an answer, never
    another exception (a bounded, seeded fuzz of the reply decoder)."""
    request = encode_v2c_get("public", 4242)
    answer = v2c_response(request)
    rng = random.Random(2024)
    outcomes: set[str] = set()
    for _ in range(FUZZ_CASES):
        data = bytearray(answer)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.5:
                data[position] = rng.randrange(256)
            elif choice < 0.75:
                del data[position:]
                if not data:
                    break
            else:
                data[position:position] = rng.randbytes(rng.randint(1, 8))
        try:
            decode_v2c(bytes(data), 4242)
            outcomes.add("decoded")
        except CheckFailure as exc:
            outcomes.add(exc.result.value)
    assert outcomes == {"decoded", Result.PROTOCOL_MISMATCH.value}


@pytest.mark.parametrize(
    ("error_status", "expected", "words"),
    [
        (16, Result.AUTH_FAILED, "error-status authorizationError (16) at variable 1"),
        (5, Result.SERVICE_ERROR, "error-status genErr (5) at variable 1"),
        (99, Result.SERVICE_ERROR, "error-status unknown error-status (99)"),
    ],
)
async def test_error_status_is_named(error_status: int, expected: Result, words: str) -> None:
    """An agent's error-status (RFC 3416 3) is named; authorizationError is about the credentials."""
    async with udp_peer(v2c_agent(error_status=error_status, error_index=1)) as peer:
        result = await _run(peer.port, SnmpSettings())
    assert result.result is expected
    assert words in result.detail


async def test_fake_agent_is_ok_and_partial_views_say_what_is_missing() -> None:
    """A view without sysName is still an agent's answer; a view without any value is not ok."""
    values = default_values()
    values[3] = v2c.NoSuchObject("")
    async with udp_peer(v2c_agent(values)) as peer:
        result = await _run(peer.port, SnmpSettings())
    assert result.result is Result.OK, result.detail
    assert result.detail == (
        f"SNMPv2c: sysName not given, '{FAKE_DESCR}', sysObjectID {FAKE_OBJECT_ID}, "
        "up 0:20:34, not shown: sysName"
    )
    nothing = [v2c.NoSuchObject("")] * 2 + [v2c.NoSuchInstance("")] * 2
    async with udp_peer(v2c_agent(nothing)) as peer:
        result = await _run(peer.port, SnmpSettings())
    assert result.result is Result.SERVICE_ERROR
    assert "shows none of the system group" in result.detail


async def test_peer_info_of_a_hostile_sys_descr_is_one_bounded_line() -> None:
    """Control characters and length in sysDescr never reach a label or a detail unbounded."""
    values = default_values()
    values[0] = v2c.OctetString(b"evil\nline\x00\x1b[31m" + b"x" * 300)
    async with udp_peer(v2c_agent(values)) as peer:
        result = await _run(peer.port, SnmpSettings())
    assert result.result is Result.OK, result.detail
    assert result.peer is not None
    assert result.peer.product.startswith("evil line")
    assert len(result.peer.product) <= 64
    assert "\n" not in result.detail
    assert "\x1b" not in result.detail


@pytest.mark.parametrize(
    "oid", [oid for oid in REPORTS if oid != "1.3.6.1.6.3.15.1.1.4.0"], ids=lambda o: REPORTS[o][0]
)
async def test_v3_report_is_named(oid: str) -> None:
    """Every report counter an agent may send is named; credential reports are auth_failed."""
    name, meaning, expected = REPORTS[oid]
    async with udp_peer(v3_reporter(oid)) as peer:
        result = await _run(peer.port, _v3(SHA256_AES))
    assert result.result is expected, result.detail
    assert result.detail.startswith(f"SNMPv3 report {name}: {meaning}")
    assert len(peer.received) == 2  # discovery, then the GET: the report is not retried


async def test_v3_decryption_error_report_is_auth_failed() -> None:
    """An agent that reports usmStatsDecryptionErrors (RFC 3414 3.2 step 8) says the priv key."""
    async with udp_peer(v3_reporter("1.3.6.1.6.3.15.1.1.6.0")) as peer:
        result = await _run(peer.port, _v3(SHA256_AES))
    assert result.result is Result.AUTH_FAILED
    assert result.detail == (
        "SNMPv3 report usmStatsDecryptionErrors: wrong privacy password or protocol "
        f"(user {SHA256_AES.name}, authPriv)"
    )


async def test_unauthenticated_time_window_report_is_not_trusted_for_a_resend() -> None:
    """Only an authenticated notInTimeWindow report may reset the clock; a bare one fails."""
    async with udp_peer(v3_reporter("1.3.6.1.6.3.15.1.1.2.0")) as peer:
        result = await _run(peer.port, _v3(SHA256_AES))
    assert result.result is Result.AUTH_FAILED
    assert "usmStatsNotInTimeWindows" in result.detail
    assert len(peer.received) == 2


class _Relay(asyncio.DatagramProtocol):
    """Relays each datagram to the real agent and its answer back, `mutate`d on the way.

    `mutate(index, answer)` gets the agent's answers numbered from 0 (discovery's, then the
    GET's) and returns what the check receives instead.
    """

    def __init__(self, agent_port: int, mutate: Callable[[int, bytes], bytes]) -> None:
        self.agent_port = agent_port
        self.mutate = mutate
        self.answers = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        task = asyncio.get_running_loop().create_task(self._forward(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _forward(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect((HOST, self.agent_port))
            await loop.sock_sendall(sock, data)
            async with asyncio.timeout(TIMEOUT_S):
                answer = await loop.sock_recv(sock, 65535)
        index, self.answers = self.answers, self.answers + 1
        assert self.transport is not None
        self.transport.sendto(self.mutate(index, answer), addr)


@contextlib.asynccontextmanager
async def _relay(agent_port: int, mutate: Callable[[int, bytes], bytes]) -> AsyncIterator[int]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Relay(agent_port, mutate), local_addr=(HOST, 0)
    )
    try:
        yield int(transport.get_extra_info("sockname")[1])
    finally:
        for task in protocol.tasks:
            task.cancel()
        transport.close()


def _mutated(data: bytes, rng: random.Random) -> bytes:
    """`data` with one to four bit flips, cuts or insertions; never empty."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        position = rng.randrange(len(out))
        choice = rng.random()
        if choice < 0.6:
            out[position] ^= 1 << rng.randrange(8)
        elif choice < 0.8 and position > 0:
            del out[position:]
        else:
            out[position:position] = rng.randbytes(rng.randint(1, 8))
    return bytes(out)


async def test_relayed_real_agent_is_ok(snmpd: Snmpd) -> None:
    """Through the relay, unchanged, the real agent's v3 answers are ok: the relay is neutral."""
    async with _relay(snmpd.port, lambda _, answer: answer) as port:
        result = await _run(port, _v3(SHA256_AES))
    assert result.result is Result.OK, result.detail


@pytest.mark.parametrize(("answer", "seed"), [(0, 11), (1, 12)], ids=["discovery", "get"])
async def test_mutated_v3_answers_of_a_real_agent_are_classified(
    snmpd: Snmpd, answer: int, seed: int
) -> None:
    """The real agent's discovery or GET answer, mutated in flight: always a classified result
    within the timeout, never a defect (bounded, seeded)."""
    rng = random.Random(seed)
    seen: set[Result] = set()

    def mutate(index: int, data: bytes) -> bytes:
        return _mutated(data, rng) if index == answer else data

    for _ in range(V3_FUZZ_CASES):
        async with _relay(snmpd.port, mutate) as port:
            outcome = await run_check(
                CHECKS["snmp"], Target(HOST, port), _v3(SHA256_AES), SILENCE_TIMEOUT_S
            )
        assert not outcome.defect, outcome.result.detail
        seen.add(outcome.result.result)
    assert Result.PROTOCOL_MISMATCH in seen
    assert seen <= {
        Result.OK,  # a flip in a part no check covers, such as a padding bit
        Result.PROTOCOL_MISMATCH,
        Result.AUTH_FAILED,
        Result.SERVICE_ERROR,
        Result.TIMEOUT,  # discovery mutated into another engine ID or clock: the agent drops
    }


async def test_time_window_report_resynchronises_once(
    snmpd: Snmpd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine clock off by an hour draws the agent's authenticated notInTimeWindow report;
    the GET is sent once more with the agent's clock and is ok (RFC 3414 4)."""
    discover = snmp_check._discover

    async def skewed(*args: Any) -> Any:
        engine = await discover(*args)
        return dataclasses.replace(engine, time=engine.time + 3600)

    monkeypatch.setattr(snmp_check, "_discover", skewed)
    outcome = await run_check(
        CHECKS["snmp"], Target(HOST, snmpd.port), _v3(SHA_AES), TIMEOUT_S, capture_log=True
    )
    assert outcome.result.result is Result.OK, outcome.result.detail
    synchronised = [line for line in outcome.log_lines if "snmp v3 time window" in line]
    assert len(synchronised) == 1
    assert sum("snmp v3 get" in line for line in outcome.log_lines) == 2


async def test_v3_answer_below_the_requests_security_level_is_a_mismatch() -> None:
    """An unauthenticated Response to an authenticated GET is refused (RFC 3412 7.1.7)."""
    async with udp_peer(v3_reporter(None)) as peer:
        result = await _run(peer.port, _v3(SHA_AUTH_ONLY))
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail == "the agent answered an authenticated request without authentication"


# --- the fakes, proven by net-snmp's own client ----------------------------------------------


async def _snmpget(port: int, *options: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "/usr/bin/snmpget",
        "-t",
        "1",
        "-r",
        "0",
        "-On",
        *options,
        f"udp:{HOST}:{port}",
        "1.3.6.1.2.1.1.1.0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"MIBS": "", "PATH": "/usr/bin:/bin"},
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def test_snmpget_reads_the_fake_v2c_agent() -> None:
    """net-snmp's snmpget decodes the fake's answer: the fake speaks RFC 3416 as the check reads it."""
    async with udp_peer(v2c_agent()) as peer:
        code, output = await _snmpget(peer.port, "-v2c", "-c", "any")
    assert code == 0, output
    assert f'.1.3.6.1.2.1.1.1.0 = STRING: "{FAKE_DESCR}"' in output


@pytest.mark.parametrize(
    ("oid", "words"),
    [
        ("1.3.6.1.6.3.15.1.1.6.0", "Decryption error"),
        ("1.3.6.1.6.3.15.1.1.3.0", "Unknown user name"),
    ],
)
async def test_snmpget_reads_the_fake_v3_reports(oid: str, words: str) -> None:
    """net-snmp's snmpget does discovery with the fake and reads its report as its own words."""
    user = SHA256_AES
    options = user.snmpget_options()
    async with udp_peer(v3_reporter(oid)) as peer:
        code, output = await _snmpget(peer.port, *options)
    assert code != 0
    assert words in output, output


# --- settings -------------------------------------------------------------------------------


def test_default_settings_are_v2c_with_the_public_community() -> None:
    """A flow with no settings asks v2c with `public`, as SNMP tools do by default."""
    settings = SnmpSettings()
    assert settings.community is None
    assert settings.username is None
    assert DEFAULT_COMMUNITY == "public"
    assert settings.retransmissions == 0


def test_protocol_names_are_net_snmps_in_any_case() -> None:
    """net-snmp's spellings are accepted in any case; AES-128 is AES."""
    assert tuple(AUTH_PROTOCOLS) == ("MD5", "SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512")
    assert PRIV_PROTOCOLS == ("DES", "3DES", "AES", "AES-192", "AES-256", "AES-192-C", "AES-256-C")
    settings = _v3(SHA256_AES, auth_protocol="sha-256", priv_protocol="aes-128")
    assert (settings.auth_protocol, settings.priv_protocol) == ("SHA-256", "AES")
    assert settings.level == "authPriv"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"auth_protocol": "SHA1", "username": "u", "auth_password": "longenough"},
            "unknown auth_protocol 'SHA1'; use one of MD5, SHA, SHA-224",
        ),
        ({"username": "u", "auth_protocol": "SHA"}, "auth_protocol and auth_password go together"),
        (
            {"username": "u", "priv_protocol": "AES", "priv_password": "longenough"},
            "privacy needs authentication",
        ),
        (
            {"auth_protocol": "SHA", "auth_password": "longenough"},
            "auth_protocol, auth_password need username (SNMPv3)",
        ),
        ({"username": "u", "community": "c"}, "community is for v2c and username for v3"),
        (
            {"username": "u", "auth_protocol": "SHA", "auth_password": "short"},
            "auth_password must be at least 8 characters",
        ),
        ({"username": "u" * 33}, "username must be 1 to 32 octets"),
        ({"username": "u", "auth_pasword": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_inconsistent_settings_are_refused_with_the_reason(
    fields: dict[str, Any], message: str
) -> None:
    """Each mistake in the v2c/v3 keys is refused when the config is read, saying which."""
    with pytest.raises(
        pydantic.ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        SnmpSettings(**fields)


async def test_short_password_by_reference_is_an_exporter_error(
    monkeypatch: pytest.MonkeyPatch, snmpd: Snmpd
) -> None:
    """A pass phrase read at run time that is too short is the config's fault: nothing is sent."""
    monkeypatch.setenv("CFE_TEST_SNMP_SHORT", "short")
    settings = SnmpSettings.model_validate(
        {
            "username": SHA256_AES.name,
            "auth_protocol": "SHA-256",
            "auth_password": {"env": "CFE_TEST_SNMP_SHORT"},
        }
    )
    result = await _run(snmpd.port, settings)
    assert result.result is Result.EXPORTER_ERROR
    assert result.detail == (
        "not checked: auth_password ({env: CFE_TEST_SNMP_SHORT}) is shorter than 8 characters "
        "(RFC 3414 11.2)"
    )


def test_excerpt_quotes_text_and_shows_binary_as_hex() -> None:
    """A text reply is quoted; BER or garbage shows as its first 16 bytes in hex."""
    assert excerpt(b"HTTP/1.1 400 Bad Request\r\n") == "'HTTP/1.1 400 Bad Request'"
    assert excerpt(bytes(range(20))) == (
        "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f … (20 bytes)"
    )
    assert excerpt(b"\x30\x03") == "30 03"


def test_classify_maps_codec_errors_and_leaves_the_rest() -> None:
    """pyasn1's and pysnmp's errors are protocol mismatches; other errors are not this hook's."""
    assert snmp_check.classify(PyAsn1Error("bad"), Phase.AUTH) == (
        Result.PROTOCOL_MISMATCH,
        "SNMP encoding error during auth: PyAsn1Error",
    )
    assert snmp_check.classify(PySnmpError("bad"), None) == (
        Result.PROTOCOL_MISMATCH,
        "SNMP error: PySnmpError",
    )
    assert snmp_check.classify(ValueError("x"), Phase.HANDSHAKE) is None
