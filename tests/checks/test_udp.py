"""The connected-datagram exchange of `checks/net.py`: one UDP request, one reply, or why not.

No shipped check is a bare UDP request (SNMP, the SQL Server Browser and NetBIOS each speak
their own protocol over it), so a check defined here sends a fixed datagram and expects it back.
It runs through `run_check`, as the scheduler runs every check, so the classes and details
below are the ones an operator sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pydantic
import pytest
from pydantic import Field

from exporter.checks import CheckContext, CheckSpec, Target
from exporter.checks.net import (
    MAX_DATAGRAM_BYTES,
    MAX_RETRANSMISSIONS,
    UdpSettings,
    exchange_datagram,
)
from exporter.errors import CheckFailure
from exporter.result import CheckResult, Phase, Result
from exporter.runner import run_check
from tests.peers.netns import IsolatedHost
from tests.peers.ports import free_udp_port
from tests.peers.udp import UdpPeer, echo, silent, udp_peer

REQUEST = b"certero-flow-exporter udp request"
NAMESPACE_PORT = 8161
SILENCE_TIMEOUT_S = 0.5
DNS_TIMEOUT_S = 20.0
FILTERED = "the port is filtered or the service does not answer this request"


class EchoSettings(UdpSettings):
    """The UDP settings every check shares, plus the reply limit a real check fixes itself."""

    max_reply_bytes: int = Field(default=512, ge=1, le=MAX_DATAGRAM_BYTES)


async def run_echo(target: Target, settings: EchoSettings, context: CheckContext) -> CheckResult:
    """Send REQUEST and expect it back."""
    reply = await exchange_datagram(
        context,
        target,
        REQUEST,
        max_reply_bytes=settings.max_reply_bytes,
        retransmissions=settings.retransmissions,
    )
    if reply.data != REQUEST:
        raise CheckFailure(Result.PROTOCOL_MISMATCH, "the reply is not the request echoed")
    return context.ok(f"echo from {reply.peer[0]} after {reply.requests_sent} request(s)")


async def run_echo_then_stall(
    target: Target, settings: EchoSettings, context: CheckContext
) -> CheckResult:
    """An echo, then a step that never ends: its timeout must not be called a UDP silence."""
    await run_echo(target, settings, context)
    with context.phase(Phase.AUTH):
        await asyncio.Event().wait()
    raise AssertionError("unreachable: the event is never set")


async def run_stall_while_waiting(
    _target: Target, _settings: EchoSettings, context: CheckContext
) -> CheckResult:
    """A step waiting on a silent peer past the run's own deadline."""
    context.timeout_detail = f"no UDP reply within 0.5s (1 request sent): {FILTERED}"
    with context.phase(Phase.HANDSHAKE):
        await asyncio.Event().wait()
    raise AssertionError("unreachable: the event is never set")


ECHO = CheckSpec(name="udp_echo", settings_model=EchoSettings, run=run_echo, summary="UDP echo")
ECHO_THEN_STALL = CheckSpec(
    name="udp_echo_then_stall",
    settings_model=EchoSettings,
    run=run_echo_then_stall,
    summary="UDP echo, then silence",
)
STALL_WHILE_WAITING = CheckSpec(
    name="udp_stall",
    settings_model=EchoSettings,
    run=run_stall_while_waiting,
    summary="silence past the deadline",
)


async def run(
    host: str,
    port: int,
    timeout_seconds: float = 5.0,
    spec: CheckSpec[EchoSettings] = ECHO,
    **settings: int,
) -> CheckResult:
    outcome = await run_check(spec, Target(host, port), EchoSettings(**settings), timeout_seconds)
    return outcome.result


@pytest.fixture
async def udp_echo() -> AsyncIterator[UdpPeer]:
    """A UDP echo peer on 127.0.0.1, closed when the test ends."""
    async with udp_peer(echo) as peer:
        yield peer


async def test_reply_is_returned_with_the_peer_address(udp_echo: UdpPeer) -> None:
    """A reply comes back as bytes with the address it came from, timed as the handshake."""
    context = CheckContext(5.0)
    reply = await exchange_datagram(
        context, Target("127.0.0.1", udp_echo.port), REQUEST, max_reply_bytes=512
    )
    assert reply.data == REQUEST
    assert reply.peer == ("127.0.0.1", udp_echo.port)
    assert reply.requests_sent == 1
    assert set(context.phases) == {Phase.HANDSHAKE}  # UDP has no connect to time
    assert context.timeout_detail is None


async def test_echo_peer_is_ok(udp_echo: UdpPeer) -> None:
    """A peer that answers makes the check ok, after exactly one request."""
    result = await run("127.0.0.1", udp_echo.port)
    assert result.result is Result.OK, result.detail
    assert result.detail == "echo from 127.0.0.1 after 1 request(s)"
    assert result.address == "127.0.0.1"
    assert udp_echo.received == [REQUEST]


async def test_closed_port_is_refused_with_the_udp_detail() -> None:
    """ICMP port unreachable is refused, in UDP words rather than TCP's."""
    port = free_udp_port()
    result = await run("127.0.0.1", port)
    assert result.result is Result.REFUSED
    assert result.detail == (
        f"UDP port {port} unreachable: nothing listens there "
        "(ICMP port unreachable, or a firewall rejecting in its place)"
    )
    assert "connection refused" not in result.detail
    assert Phase.HANDSHAKE in result.phases


async def test_silent_peer_is_timeout_saying_filtered_or_not_answering() -> None:
    """A bound port that never answers is a timeout that says what silence can mean."""
    async with udp_peer(silent) as peer:
        result = await run("127.0.0.1", peer.port, SILENCE_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert result.detail == f"no UDP reply within 0.5s (1 request sent): {FILTERED}"
    assert peer.received == [REQUEST]


async def test_retransmissions_are_sent_as_configured_and_no_more() -> None:
    """With two retransmissions a silent peer gets exactly three requests, and the detail says so."""
    async with udp_peer(silent) as peer:
        result = await run("127.0.0.1", peer.port, SILENCE_TIMEOUT_S, retransmissions=2)
    assert result.result is Result.TIMEOUT
    assert result.detail == f"no UDP reply within 0.5s (3 requests sent): {FILTERED}"
    assert peer.received == [REQUEST] * 3


async def test_an_answered_retransmission_is_ok() -> None:
    """A peer that loses the first request and answers the second is ok after two requests."""
    seen: list[bytes] = []

    def answer_second(data: bytes) -> bytes | None:
        seen.append(data)
        return data if len(seen) == 2 else None

    async with udp_peer(answer_second) as peer:
        result = await run("127.0.0.1", peer.port, retransmissions=1)
    assert result.result is Result.OK, result.detail
    assert result.detail == "echo from 127.0.0.1 after 2 request(s)"
    assert peer.received == [REQUEST] * 2


@pytest.mark.parametrize(
    ("max_reply_bytes", "expected"),
    [(len(REQUEST), Result.OK), (len(REQUEST) - 1, Result.PROTOCOL_MISMATCH)],
)
async def test_reply_size_is_bounded(
    udp_echo: UdpPeer, max_reply_bytes: int, expected: Result
) -> None:
    """A reply of exactly the limit is accepted; one byte more is a protocol mismatch."""
    result = await run("127.0.0.1", udp_echo.port, max_reply_bytes=max_reply_bytes)
    assert result.result is expected, result.detail
    if expected is Result.PROTOCOL_MISMATCH:
        assert result.detail == (
            f"UDP reply larger than {max_reply_bytes} bytes, more than any answer to this request"
        )


async def test_largest_datagram_beyond_the_limit_is_a_mismatch() -> None:
    """The largest IPv4 datagram (65,507 bytes) against a 512-byte limit is a protocol mismatch."""
    async with udp_peer(lambda _: b"x" * 65_507) as peer:
        result = await run("127.0.0.1", peer.port, max_reply_bytes=512)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail.startswith("UDP reply larger than 512 bytes")


async def test_ipv6_loopback_reply_and_refusal() -> None:
    """::1 works as 127.0.0.1 does: an echo is ok, a closed port is refused in UDP words."""
    async with udp_peer(echo, host="::1") as peer:
        result = await run("::1", peer.port)
    assert result.result is Result.OK, result.detail
    assert result.detail == "echo from ::1 after 1 request(s)"
    port = free_udp_port("::1")
    result = await run("::1", port)
    assert result.result is Result.REFUSED
    assert result.detail.startswith(f"UDP port {port} unreachable: nothing listens there")


async def test_host_name_is_resolved_for_datagrams() -> None:
    """A host name is resolved (phase resolve) and the address used is reported."""
    result = await run("localhost", free_udp_port(), DNS_TIMEOUT_S)
    assert result.result is Result.REFUSED, result.detail
    assert Phase.RESOLVE in result.phases
    assert result.address in {"127.0.0.1", "::1"}


async def test_unresolvable_name_is_dns_error() -> None:
    """A name that does not resolve is a dns_error before any datagram is sent."""
    result = await run("nonexistent.invalid", 161, DNS_TIMEOUT_S)
    assert result.result is Result.DNS_ERROR
    assert Phase.HANDSHAKE not in result.phases


async def test_run_deadline_reports_the_silence_of_the_waiting_step() -> None:
    """When the run's deadline ends the wait, the timeout still says what the silence means."""
    result = await run("127.0.0.1", 9, SILENCE_TIMEOUT_S, spec=STALL_WHILE_WAITING)
    assert result.result is Result.TIMEOUT
    assert result.detail == f"no UDP reply within 0.5s (1 request sent): {FILTERED}"


async def test_a_later_timeout_is_not_called_a_udp_silence(udp_echo: UdpPeer) -> None:
    """Once the reply is in, a step that stalls afterwards times out in its own words."""
    result = await run("127.0.0.1", udp_echo.port, SILENCE_TIMEOUT_S, spec=ECHO_THEN_STALL)
    assert result.result is Result.TIMEOUT
    assert result.detail == "no answer within 0.5s during auth"


async def test_udp_drop_is_timeout(isolated_host: IsolatedHost) -> None:
    """A firewall dropping UDP (`-p udp -j DROP`) in front of a live service is a timeout."""
    isolated_host.udp_echo(NAMESPACE_PORT)
    isolated_host.drop_all_udp_to(NAMESPACE_PORT)
    result = await run(isolated_host.address, NAMESPACE_PORT, SILENCE_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert result.detail == f"no UDP reply within 0.5s (1 request sent): {FILTERED}"


@pytest.mark.parametrize(
    ("reject_with", "expected", "detail"),
    [
        ("icmp-port-unreachable", Result.REFUSED, f"UDP port {NAMESPACE_PORT} unreachable"),
        ("icmp-admin-prohibited", Result.UNREACHABLE, "No route to host (no route, or rejected"),
        ("icmp-host-prohibited", Result.UNREACHABLE, "No route to host (no route, or rejected"),
        ("icmp-host-unreachable", Result.UNREACHABLE, "No route to host (no route, or rejected"),
        ("icmp-net-unreachable", Result.UNREACHABLE, "Network is unreachable (no route"),
    ],
)
async def test_udp_reject_is_classified_by_its_icmp_error(
    isolated_host: IsolatedHost, reject_with: str, expected: Result, detail: str
) -> None:
    """A firewall's ICMP answer decides the class: port unreachable refused, the rest unreachable."""
    isolated_host.udp_echo(NAMESPACE_PORT)
    isolated_host.reject_udp(NAMESPACE_PORT, reject_with)
    result = await run(isolated_host.address, NAMESPACE_PORT)
    assert result.result is expected, result.detail
    assert result.detail.startswith(detail)
    assert Phase.HANDSHAKE in result.phases


async def test_namespace_echo_is_ok(isolated_host: IsolatedHost) -> None:
    """Without a rule the namespace's echo answers: the failures above come from the rules."""
    isolated_host.udp_echo(NAMESPACE_PORT)
    result = await run(isolated_host.address, NAMESPACE_PORT)
    assert result.result is Result.OK, result.detail


@pytest.mark.parametrize(
    ("retransmissions", "max_reply_bytes"),
    [(-1, 512), (MAX_RETRANSMISSIONS + 1, 512), (0, 0), (0, MAX_DATAGRAM_BYTES + 1)],
)
async def test_exchange_refuses_settings_outside_its_bounds(
    retransmissions: int, max_reply_bytes: int
) -> None:
    """Retransmissions and the reply limit are bounded; nothing is sent when they are not."""
    with pytest.raises(ValueError, match="must be"):
        await exchange_datagram(
            CheckContext(1.0),
            Target("127.0.0.1", 9),
            REQUEST,
            max_reply_bytes=max_reply_bytes,
            retransmissions=retransmissions,
        )


def test_settings_bound_retransmissions() -> None:
    """A config cannot ask for more retransmissions than the exchange allows."""
    assert UdpSettings(retransmissions=MAX_RETRANSMISSIONS).retransmissions == MAX_RETRANSMISSIONS
    with pytest.raises(pydantic.ValidationError, match="less than or equal to 4"):
        UdpSettings(retransmissions=MAX_RETRANSMISSIONS + 1)
