"""`sap` check: the spec-written SAP NI peer, pysap's own NI server, and peers that are not SAP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from exporter.checks import CHECKS, Target
from exporter.checks.sap import SapSettings
from exporter.config import parse_config
from exporter.errors import ConfigError
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.runner import run_check
from tests.checks.fakes import HOST, closes_at_once, fake_server, sends_then_waits, silent
from tests.peers.nginx import Nginx
from tests.peers.ports import free_tcp_port
from tests.peers.sap_ni_fake import (
    ERROR_RETURN_CODE,
    ERROR_TEXT,
    NI_PING,
    NI_PONG,
    ni_frame,
    run_sap_ni_fake,
)
from tests.peers.sshd import Sshd
from tests.peers.threaded import serving

SHORT_TIMEOUT_S = 1.0


async def _sap(port: int, timeout_seconds: float = 5.0, **settings: Any) -> CheckResult:
    outcome = await run_check(
        CHECKS["sap"], Target(HOST, port), SapSettings(**settings), timeout_seconds
    )
    return outcome.result


async def test_ni_pong_is_ok() -> None:
    """The NI peer answers NI_PING with NI_PONG: ok, the peer is SAP NI, phases timed."""
    with run_sap_ni_fake() as fake:
        result = await _sap(fake.port)
    assert result.result is Result.OK
    assert result.detail == "SAP NI peer answered NI_PING with NI_PONG"
    assert result.peer == PeerInfo(product="SAP NI")
    assert {Phase.CONNECT, Phase.HANDSHAKE} <= set(result.phases)
    assert fake.pings == 1


async def test_ni_error_message_is_service_error() -> None:
    """An NI_RTERR answer is an SAP NI peer reporting an error: its text and return code."""
    with run_sap_ni_fake("error") as fake:
        result = await _sap(fake.port)
    assert result.result is Result.SERVICE_ERROR
    assert result.detail == f"SAP NI error: {ERROR_TEXT} (return code {ERROR_RETURN_CODE})"
    assert result.peer == PeerInfo(product="SAP NI")


async def test_http_server_is_protocol_mismatch(nginx: Nginx) -> None:
    """nginx answers the NI frame with an HTTP 400: not an SAP NI peer, quoted."""
    result = await _sap(nginx.http_port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail.startswith("not an SAP NI peer: it sent 'HTTP/1.1 400 Bad Request")


async def test_ssh_server_is_protocol_mismatch(sshd: Sshd) -> None:
    """An SSH server's banner is no NI frame: protocol_mismatch quoting the banner."""
    result = await _sap(sshd.port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert result.detail.startswith("not an SAP NI peer: it sent 'SSH-2.0-OpenSSH_")


async def test_closed_port_is_refused() -> None:
    """Nothing listening is refused, before any NI exchange."""
    result = await _sap(free_tcp_port())
    assert result.result is Result.REFUSED
    assert Phase.HANDSHAKE not in result.phases


@pytest.mark.parametrize(
    ("answer", "result_class", "detail"),
    [
        (ni_frame(b"hello"), Result.PROTOCOL_MISMATCH, "an NI frame of 5 bytes that is not NI_PONG"),
        (ni_frame(NI_PONG)[:9], Result.SERVICE_ERROR, "closed in the middle of an NI frame (5 of 8"),
        (b"\x00\x10\x00\x00" + b"x" * 64, Result.PROTOCOL_MISMATCH, "not an SAP NI peer"),
        (b"\x00\x00\x00\x00", Result.PROTOCOL_MISMATCH, "not an SAP NI peer"),
        (b"hi\n", Result.PROTOCOL_MISMATCH, "not an SAP NI peer: it sent 'hi'"),
        (ni_frame(b"NI_RTERR\x00garbage"), Result.SERVICE_ERROR, "SAP NI error message: "),
    ],
)  # fmt: skip
async def test_hostile_answers_are_classified(
    answer: bytes, result_class: Result, detail: str
) -> None:
    """Odd NI frames, truncated frames, absurd lengths and plain text each have their class."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(NI_PING) + 4)
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with fake_server(handler) as port:
        result = await _sap(port)
    assert result.result is result_class
    assert detail in result.detail


async def test_silent_peer_times_out() -> None:
    """A peer that never answers the keep-alive times out during handshake."""
    async with fake_server(silent) as port:
        result = await _sap(port, SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert "during handshake" in result.detail


async def test_closing_peer_is_service_error() -> None:
    """A peer that accepts and closes is a service_error."""
    async with fake_server(closes_at_once) as port:
        result = await _sap(port)
    assert result.result is Result.SERVICE_ERROR
    assert result.detail == "connection closed before an answer to NI_PING"


async def test_slow_drip_ends_within_the_timeout() -> None:
    """A peer dripping a huge frame byte by byte cannot hold the check past its timeout."""

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x00\x00\x0f\xff")
        for _ in range(4000):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.01)

    async with fake_server(drip) as port:
        result = await _sap(port, SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert result.duration_seconds < SHORT_TIMEOUT_S + 0.5


async def test_endless_garbage_is_read_bounded() -> None:
    """A peer sending megabytes without framing is named at once, not read to the end."""
    async with fake_server(sends_then_waits(b"\xff" * (1024 * 1024))) as port:
        result = await _sap(port)
    assert result.result is Result.PROTOCOL_MISMATCH


# --- the independent implementation: pysap (OWASP) -----------------------------------------


def test_pysap_client_reads_the_fake() -> None:
    """pysap's NI socket gets NI_PONG for NI_PING, and its SAPRouter class parses the error."""
    from pysap.SAPNI import SAPNI, SAPNIStreamSocket  # noqa: PLC0415 - 0.8 s import
    from pysap.SAPRouter import SAPRouter, router_is_error  # noqa: PLC0415
    from scapy.packet import Raw  # noqa: PLC0415

    with run_sap_ni_fake() as fake:
        ni = SAPNIStreamSocket.get_nisocket(HOST, fake.port, keep_alive=False)
        try:
            answer = ni.sr(Raw(SAPNI.SAPNI_PING))
        finally:
            ni.close()
    assert bytes(answer.payload) == NI_PONG

    with run_sap_ni_fake("error") as fake:
        ni = SAPNIStreamSocket.get_nisocket(HOST, fake.port, keep_alive=False)
        try:
            answer = ni.sr(Raw(SAPNI.SAPNI_PING))
        finally:
            ni.close()
    answer.decode_payload_as(SAPRouter)
    error = answer[SAPRouter]
    assert router_is_error(error)
    assert error.opcode == 0
    assert error.return_code == ERROR_RETURN_CODE
    assert error.err_text_value.error == ERROR_TEXT.encode()
    assert error.err_text_value.return_code == str(ERROR_RETURN_CODE).encode()


@contextlib.contextmanager
def pysap_ni_server() -> Iterator[int]:
    """pysap's own threaded NI server, which answers keep-alives at its NI layer."""
    from pysap.SAPNI import SAPNIServerHandler, SAPNIServerThreaded  # noqa: PLC0415

    server = SAPNIServerThreaded((HOST, 0), SAPNIServerHandler, keep_alive=True)
    server.daemon_threads = True
    port: int = server.server_address[1]
    with serving(server, "pysap-ni-server"):
        yield port


async def test_ok_against_pysap_ni_server() -> None:
    """The check is answered NI_PONG by pysap's NI server, an implementation apart from ours."""
    with pysap_ni_server() as port:
        result = await _sap(port)
    assert result.result is Result.OK


# --- settings and ports ----------------------------------------------------------------------


def test_instance_must_be_two_digits() -> None:
    """An instance number is two digits, as SAP writes it."""
    with pytest.raises(ValidationError, match="pattern"):
        SapSettings(instance="5")


def test_instance_sets_the_dispatcher_port() -> None:
    """`instance: "05"` makes the sap_systems flow check port 3205 on its targets."""
    config = parse_config(
        "targets: {sap_systems: [sap1.corp.example]}\nflows: {sap_systems: {instance: '05'}}\n",
        "inline.yaml",
    )
    (job,) = [job for job in config.jobs if job.flow_id == "sap_systems"]
    assert job.check == "sap"
    assert job.target == Target("sap1.corp.example", 3205)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "targets: {sap_systems: ['sap1.corp.example:3300']}\n",
            "inline.yaml:1: targets.sap_systems[0]: check sap takes ports 3200-3299, not 3300",
        ),
        (
            "flows: {sap_systems: {port: 22}}\n",
            "inline.yaml:1: flows.sap_systems.port: check sap takes ports 3200-3299, not 22",
        ),
        (
            "targets: {sap_systems: ['sap1.corp.example:3201']}\n"
            "flows: {sap_systems: {instance: '05'}}\n",
            "inline.yaml:1: targets.sap_systems[0]: port 3201 contradicts the settings, which "
            "name port 3205 (write one or the other)",
        ),
        (
            "extra_flows: [{id: gw, check: sap, target: 'sap1.corp.example:3300'}]\n",
            "inline.yaml:1: extra_flows[0].targets[0]: check sap takes ports 3200-3299, not 3300",
        ),
    ],
)
def test_ports_outside_the_dispatcher_range_are_refused(text: str, problem: str) -> None:
    """A port outside 32NN, or one contradicting the instance, is a located config problem."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "inline.yaml")
    assert problem in [str(found) for found in caught.value.problems]


def test_fake_answers_every_keep_alive_on_one_connection() -> None:
    """The fake answers each NI_PING of a connection, as an NI layer does for its peer."""
    with run_sap_ni_fake() as fake, socket.create_connection((HOST, fake.port), 2.0) as sock:
        for _ in range(3):
            sock.sendall(ni_frame(NI_PING))
            assert sock.recv(64) == ni_frame(NI_PONG)
    assert fake.pings == 3
