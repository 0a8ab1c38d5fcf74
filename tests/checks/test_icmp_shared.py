"""`icmp` at scale: one shared ICMP socket per family, requests matched by sequence number.

Sockets are counted in /proc: this process's socket inodes (/proc/self/fd) that the kernel
lists as raw ICMP (/proc/net/raw, raw6: the "port" is the protocol) or ping sockets
(/proc/net/icmp, icmp6). Silent and rejecting peers are network namespaces with real filters.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVarTuple

import pytest
import uvloop

from exporter.checks import CHECKS, Target, icmp
from exporter.checks.icmp import IcmpSettings, endpoint_of, icmp_checksum
from exporter.result import CheckResult, Result
from exporter.runner import run_check
from tests.peers.netns import IsolatedHost

_Ts = TypeVarTuple("_Ts")
CONCURRENT = 1000
IPV6_CONCURRENT = 100
RAW = IcmpSettings(privileged="raw")
MONITOR_STEPS = 100_000  # loop iterations the socket monitor may take; the checks end far sooner
HOSTILE_PACKETS = 200
WIDE_OPEN = "0 2147483647"


async def _icmp(
    host: str, settings: IcmpSettings = RAW, timeout_seconds: float = 5.0
) -> CheckResult:
    outcome = await run_check(CHECKS["icmp"], Target(host), settings, timeout_seconds)
    return outcome.result


def _loopback_addresses(count: int) -> list[str]:
    """Distinct 127.77.x.y addresses: the loopback interface answers all of 127.0.0.0/8."""
    return [f"127.77.{n // 250}.{n % 250 + 1}" for n in range(count)]


def _socket_inodes_of_this_process() -> set[int]:
    inodes: set[int] = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # an fd closed while listing
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(int(link[len("socket:[") : -1]))
    return inodes


def _listed_inodes(table: str, protocol: int | None) -> set[int]:
    """Inodes in a /proc/net table; for raw tables only those of `protocol` (the local port)."""
    inodes: set[int] = set()
    with open(f"/proc/self/net/{table}", encoding="ascii") as listing:
        for line in listing.readlines()[1:]:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if protocol is None or port == protocol:
                inodes.add(int(fields[9]))
    return inodes


def icmp_sockets_of_this_process() -> dict[socket.AddressFamily, int]:
    """How many raw ICMP and ping sockets this process holds, per family."""
    mine = _socket_inodes_of_this_process()
    ipv4 = _listed_inodes("raw", socket.IPPROTO_ICMP) | _listed_inodes("icmp", None)
    ipv6 = _listed_inodes("raw6", socket.IPPROTO_ICMPV6) | _listed_inodes("icmp6", None)
    return {socket.AF_INET: len(mine & ipv4), socket.AF_INET6: len(mine & ipv6)}


async def run_watching_sockets(
    checks: Sequence[Awaitable[CheckResult]], family: socket.AddressFamily, raw: bool = True
) -> tuple[list[CheckResult], dict[socket.AddressFamily, int], int]:
    """Run the checks at once; return their results, the most ICMP sockets seen per family and
    the most requests seen outstanding on the family's shared socket."""
    tasks = [asyncio.ensure_future(check) for check in checks]
    most_sockets = {socket.AF_INET: 0, socket.AF_INET6: 0}
    most_outstanding = 0
    loop = asyncio.get_running_loop()
    for _ in range(MONITOR_STEPS):
        await asyncio.sleep(0)  # one loop iteration: the checks send, the reader reads
        for kind, count in icmp_sockets_of_this_process().items():
            most_sockets[kind] = max(most_sockets[kind], count)
        endpoint = endpoint_of(loop, family, raw)
        if endpoint is not None:
            most_outstanding = max(most_outstanding, len(endpoint.outstanding))
        if all(task.done() for task in tasks):
            break
    return await asyncio.gather(*tasks), most_sockets, most_outstanding


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Yield to the loop until `condition` holds (bounded in steps)."""
    for _ in range(MONITOR_STEPS):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


async def test_thousand_concurrent_echoes_share_one_socket() -> None:
    """1,000 concurrent echoes to distinct loopback addresses all succeed through one raw socket,
    and each result names its own address, so every reply reached the request it answers."""
    hosts = _loopback_addresses(CONCURRENT)
    results, most_sockets, most_outstanding = await run_watching_sockets(
        [_icmp(host) for host in hosts], socket.AF_INET
    )
    assert most_sockets == {socket.AF_INET: 1, socket.AF_INET6: 0}
    assert most_outstanding >= CONCURRENT // 2, most_outstanding
    for host, result in zip(hosts, results, strict=True):
        assert result.result is Result.OK, (host, result.detail)
        assert result.detail.startswith(f"echo reply from {host} in "), result.detail
        assert result.detail.endswith("(raw socket)")
        assert result.address == host
    endpoint = endpoint_of(asyncio.get_running_loop(), socket.AF_INET, raw=True)
    assert endpoint is not None
    assert endpoint.outstanding == {}


async def test_ipv6_loopback_beside_ipv4_one_socket_per_family() -> None:
    """Concurrent echoes to ::1 and 127.0.0.1 succeed: exactly one socket per family."""
    checks = [_icmp("::1") for _ in range(IPV6_CONCURRENT)]
    checks += [_icmp("127.0.0.1") for _ in range(IPV6_CONCURRENT)]
    results, most_sockets, most_outstanding = await run_watching_sockets(checks, socket.AF_INET6)
    assert most_sockets == {socket.AF_INET: 1, socket.AF_INET6: 1}
    assert most_outstanding >= IPV6_CONCURRENT // 2
    for index, result in enumerate(results):
        host = "::1" if index < IPV6_CONCURRENT else "127.0.0.1"
        assert result.result is Result.OK, result.detail
        assert result.detail.startswith(f"echo reply from {host} in ")


def _nft_drop_echo(host: IsolatedHost) -> None:
    host.run(["nft", "add", "table", "inet", "cfe"])
    host.run(
        ["nft", "add", "chain", "inet", "cfe", "input", "{ type filter hook input priority 0; }"]
    )
    host.run(["nft", "add", "rule", "inet", "cfe", "input", "icmp", "type", "echo-request", "drop"])


async def test_dropped_echo_times_out_while_others_answer(isolated_host: IsolatedHost) -> None:
    """With nft dropping echo requests, that host times out; loopback echoes beside it are ok."""
    _nft_drop_echo(isolated_host)
    silent = [_icmp(isolated_host.address, timeout_seconds=1.0) for _ in range(3)]
    answering = [_icmp(host) for host in _loopback_addresses(50)]
    results = await asyncio.gather(*silent, *answering)
    for result in results[:3]:
        assert result.result is Result.TIMEOUT
        assert result.address == isolated_host.address
    assert all(result.result is Result.OK for result in results[3:])


async def test_host_prohibited_reject_is_unreachable(isolated_host: IsolatedHost) -> None:
    """An icmp-host-prohibited reject reaches the request it quotes, through the raw socket;
    concurrent loopback echoes stay ok."""
    isolated_host.iptables(
        *("-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request"),
        *("-j", "REJECT", "--reject-with", "icmp-host-prohibited"),
    )
    rejected = [_icmp(isolated_host.address) for _ in range(3)]  # within the ICMP error burst
    answering = [_icmp(host) for host in _loopback_addresses(50)]
    results = await asyncio.gather(*rejected, *answering)
    for result in results[:3]:
        assert result.result is Result.UNREACHABLE
        assert result.detail == (
            f"ICMP host administratively prohibited, sent by {isolated_host.address} "
            "(from a router or firewall)"
        )
    assert all(result.result is Result.OK for result in results[3:])


def _add_ipv6(host: IsolatedHost) -> tuple[str, str]:
    """Give both ends of the namespace's veth pair a random ULA /126 (RFC 4193); return
    (root side, namespace side). The links are named after the namespace (tests/peers/netns.py)
    and go away with it."""
    bits = secrets.token_hex(5)
    prefix = f"fd{bits[:2]}:{bits[2:6]}:{bits[6:]}::"
    root_side, namespace_side = (str(ipaddress.ip_address(f"{prefix}{n}")) for n in (1, 2))
    subprocess.run(
        ["ip", "-6", "addr", "add", f"{root_side}/126", "dev", f"{host.name}r", "nodad"],
        check=True,
    )
    host.run(["ip", "-6", "addr", "add", f"{namespace_side}/126", "dev", f"{host.name}n", "nodad"])
    return root_side, namespace_side


async def test_ipv6_admin_prohibited_is_unreachable(isolated_host: IsolatedHost) -> None:
    """An ICMPv6 admin-prohibited reject is matched through the IPv6 header it quotes."""
    _, peer = _add_ipv6(isolated_host)
    assert (await _icmp(peer)).result is Result.OK
    isolated_host.run(["nft", "add", "table", "inet", "cfe6"])
    isolated_host.run(
        ["nft", "add", "chain", "inet", "cfe6", "input", "{ type filter hook input priority 0; }"]
    )
    isolated_host.run(
        [
            *("nft", "add", "rule", "inet", "cfe6", "input", "icmpv6", "type", "echo-request"),
            *("reject", "with", "icmpv6", "type", "admin-prohibited"),
        ]
    )
    result = await _icmp(peer)
    assert result.result is Result.UNREACHABLE
    assert result.detail == (
        f"ICMP communication administratively prohibited, sent by {peer} "
        "(from a router or firewall)"
    )


class _SendBlocksOnce:
    """A socket whose first send finds the send buffer full (EAGAIN), as a busy NIC's would."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.refused = 0

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        if not self.refused:
            self.refused += 1
            raise BlockingIOError(errno.EAGAIN, "send buffer full")
        return self.sock.sendto(data, address)

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)


async def test_full_send_buffer_waits_until_writable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A send refused with EAGAIN waits for the socket to drain and then goes out."""
    assert (await _icmp("127.0.0.1")).result is Result.OK
    endpoint = endpoint_of(asyncio.get_running_loop(), socket.AF_INET, raw=True)
    assert endpoint is not None
    blocking = _SendBlocksOnce(endpoint.sock)
    monkeypatch.setattr(endpoint, "sock", blocking)
    results = await asyncio.gather(*(_icmp(host) for host in _loopback_addresses(20)))
    assert blocking.refused == 1
    assert [result.result for result in results] == [Result.OK] * 20


async def test_cancelled_check_removes_its_entry(isolated_host: IsolatedHost) -> None:
    """A check cancelled while it waits for a reply leaves no entry in the table."""
    _nft_drop_echo(isolated_host)
    loop = asyncio.get_running_loop()
    waiting = asyncio.ensure_future(_icmp(isolated_host.address, timeout_seconds=30.0))

    def one_outstanding() -> bool:
        endpoint = endpoint_of(loop, socket.AF_INET, raw=True)
        return endpoint is not None and len(endpoint.outstanding) == 1

    await wait_until(one_outstanding, "the echo request was sent")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    endpoint = endpoint_of(loop, socket.AF_INET, raw=True)
    assert endpoint is not None
    assert endpoint.outstanding == {}


async def test_idle_socket_closes_and_reopens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once no request is outstanding for the idle time, the socket closes; the next run opens
    a new one."""
    monkeypatch.setattr(icmp, "IDLE_CLOSE_SECONDS", 0.0)
    loop = asyncio.get_running_loop()
    assert (await _icmp("127.0.0.1")).result is Result.OK
    first = endpoint_of(loop, socket.AF_INET, raw=True)
    assert first is not None
    await asyncio.wait_for(first.closed.wait(), timeout=5.0)
    assert first.sock.fileno() == -1
    assert endpoint_of(loop, socket.AF_INET, raw=True) is None
    assert icmp_sockets_of_this_process()[socket.AF_INET] == 0
    assert (await _icmp("127.0.0.1")).result is Result.OK
    second = endpoint_of(loop, socket.AF_INET, raw=True)
    assert second is not None
    assert second is not first


async def test_full_table_is_exporter_error(
    isolated_host: IsolatedHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request beyond the table's bound is exporter_error, and the others are unaffected."""
    monkeypatch.setattr(icmp, "MAX_OUTSTANDING", 3)
    _nft_drop_echo(isolated_host)
    results = await asyncio.gather(
        *(_icmp(isolated_host.address, timeout_seconds=1.0) for _ in range(4))
    )
    assert [result.result for result in results] == [Result.TIMEOUT] * 3 + [Result.EXPORTER_ERROR]
    assert results[3].detail == (
        "not checked: 3 ICMP echo requests already wait on the shared IPv4 socket, "
        "the most it can tell apart"
    )


def _echo_reply(identifier: int, sequence: int, payload: bytes, kind: int = 0) -> bytes:
    header = bytes([kind, 0, 0, 0]) + identifier.to_bytes(2, "big") + sequence.to_bytes(2, "big")
    checksum = icmp_checksum(header + payload)
    return header[:2] + checksum.to_bytes(2, "big") + header[4:] + payload


def _ip_header(source: str, destination: str, length: int) -> bytes:
    """A 20-byte IPv4 header as a raw socket delivers it (RFC 791 3.1; checksum not checked)."""
    return (
        bytes([0x45, 0])
        + length.to_bytes(2, "big")
        + bytes([0, 0, 0, 0, 64, socket.IPPROTO_ICMP, 0, 0])
        + socket.inet_aton(source)
        + socket.inet_aton(destination)
    )


async def test_hostile_packets_are_ignored(isolated_host: IsolatedHost) -> None:
    """Short, corrupt or foreign packets are ignored; only the one true reply ends the wait."""
    _nft_drop_echo(isolated_host)
    loop = asyncio.get_running_loop()
    peer, me = isolated_host.address, isolated_host.root_address
    waiting = asyncio.ensure_future(_icmp(peer, timeout_seconds=30.0))

    def one_outstanding() -> bool:
        endpoint = endpoint_of(loop, socket.AF_INET, raw=True)
        return endpoint is not None and len(endpoint.outstanding) == 1

    await wait_until(one_outstanding, "the echo request was sent")
    endpoint = endpoint_of(loop, socket.AF_INET, raw=True)
    assert endpoint is not None
    ((sequence, request),) = endpoint.outstanding.items()
    payload, identifier = request.payload, endpoint.identifier
    good = _echo_reply(identifier, sequence, payload)
    bad_checksum = good[:2] + bytes([good[2] ^ 0xFF]) + good[3:]
    hostile = [
        b"",
        b"\x45",
        _ip_header(peer, me, 22) + b"\x00\x00",  # ICMP shorter than its header
        _ip_header(peer, me, 20)[:-4],  # IP header cut short
        bytes([0x4F]) + bytes(30),  # IHL of 60 bytes in a 31-byte packet
        _ip_header(peer, me, 20 + len(good)) + bad_checksum,
        _ip_header(peer, me, 20 + len(good)) + _echo_reply(identifier, sequence, payload, kind=8),
        _ip_header(peer, me, 20 + len(good)) + _echo_reply(identifier ^ 1, sequence, payload),
        _ip_header(peer, me, 20 + len(good)) + _echo_reply(identifier, sequence ^ 1, payload),
        _ip_header(peer, me, 20 + len(good)) + _echo_reply(identifier, sequence, payload[:-1]),
        _ip_header(peer, me, 28) + bytes([3, 13, 0, 0, 0, 0, 0, 0]),  # error quoting nothing
    ]
    for packet in hostile:
        endpoint.handle_packet(packet, peer, time.perf_counter())
    endpoint.handle_packet(_ip_header(me, me, 20 + len(good)) + good, me, time.perf_counter())
    await asyncio.sleep(0)
    assert not waiting.done()
    assert endpoint.outstanding[sequence] is request
    endpoint.handle_packet(_ip_header(peer, me, 20 + len(good)) + good, peer, time.perf_counter())
    result = await waiting
    assert result.result is Result.OK
    assert result.detail.startswith(f"echo reply from {peer} in ")


async def test_time_exceeded_is_matched_by_the_quoted_request(isolated_host: IsolatedHost) -> None:
    """A time-exceeded error quoting the outstanding request ends it unreachable; one quoting
    another identifier or destination is ignored (RFC 792: IP header + first 8 data bytes)."""
    _nft_drop_echo(isolated_host)
    loop = asyncio.get_running_loop()
    peer, me, router = isolated_host.address, isolated_host.root_address, "127.0.0.9"
    waiting = asyncio.ensure_future(_icmp(peer, timeout_seconds=30.0))

    def one_outstanding() -> bool:
        endpoint = endpoint_of(loop, socket.AF_INET, raw=True)
        return endpoint is not None and len(endpoint.outstanding) == 1

    await wait_until(one_outstanding, "the echo request was sent")
    endpoint = endpoint_of(loop, socket.AF_INET, raw=True)
    assert endpoint is not None
    ((sequence, _),) = endpoint.outstanding.items()

    def time_exceeded(identifier: int, destination: str) -> bytes:
        quoted = _ip_header(me, destination, 28) + bytes([8, 0, 0, 0])
        quoted += identifier.to_bytes(2, "big") + sequence.to_bytes(2, "big")
        message = bytes([11, 0, 0, 0, 0, 0, 0, 0]) + quoted
        checksum = icmp_checksum(message)
        message = message[:2] + checksum.to_bytes(2, "big") + message[4:]
        return _ip_header(router, me, 20 + len(message)) + message

    endpoint.handle_packet(time_exceeded(endpoint.identifier ^ 1, peer), router, 0.0)
    endpoint.handle_packet(time_exceeded(endpoint.identifier, router), router, 0.0)
    await asyncio.sleep(0)
    assert not waiting.done()
    endpoint.handle_packet(time_exceeded(endpoint.identifier, peer), router, 0.0)
    result = await waiting
    assert result.result is Result.UNREACHABLE
    assert result.detail == (
        f"ICMP time exceeded in transit, sent by {router} "
        "(from a router: the hop limit ran out, as in a routing loop)"
    )


async def test_garbage_on_the_wire_does_not_disturb_checks() -> None:
    """Malformed ICMP sent to loopback through a second raw socket while checks run is ignored."""
    hosts = _loopback_addresses(100)
    checks = asyncio.gather(*(_icmp(host) for host in hosts))
    loop = asyncio.get_running_loop()
    await wait_until(
        lambda: endpoint_of(loop, socket.AF_INET, raw=True) is not None, "the socket opened"
    )
    endpoint = endpoint_of(loop, socket.AF_INET, raw=True)
    assert endpoint is not None
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sender:
        for number in range(HOSTILE_PACKETS):
            reply = _echo_reply(endpoint.identifier, number, b"not the request's data")
            corrupt = reply[:2] + b"\x00\x00" + reply[4:]
            for packet in (b"\x00\x00\x00", reply[:7], corrupt, reply):
                sender.sendto(packet, ("127.0.0.1", 0))
    results = await checks
    assert [result.result for result in results] == [Result.OK] * len(hosts)


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_socket_closes_with_its_loop(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """A runner closing its loop (asyncio's and uvloop's) closes the loop's shared socket."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        result = runner.run(_icmp("127.0.0.1"))
        endpoint = endpoint_of(runner.get_loop(), socket.AF_INET, raw=True)
        assert endpoint is not None
        assert endpoint.sock.fileno() >= 0
    assert result.result is Result.OK
    assert endpoint.sock.fileno() == -1
    assert endpoint_of(endpoint.loop, socket.AF_INET, raw=True) is None


class _LoopWatchingNoSockets(asyncio.SelectorEventLoop):
    """An event loop that, like Windows' proactor loop, cannot watch a socket for readiness."""

    def add_reader(self, fd: object, callback: Callable[[*_Ts], Any], *args: *_Ts) -> None:
        raise NotImplementedError

    def add_writer(self, fd: object, callback: Callable[[*_Ts], Any], *args: *_Ts) -> None:
        raise NotImplementedError


def test_loop_without_add_reader_reads_by_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a loop without `add_reader` a task reads the shared socket: echoes succeed, a full
    send buffer is waited out, and the socket closes with the loop."""

    async def scenario() -> tuple[list[CheckResult], icmp.IcmpEndpoint]:
        results = list(await asyncio.gather(*(_icmp(host) for host in _loopback_addresses(100))))
        endpoint = endpoint_of(asyncio.get_running_loop(), socket.AF_INET, raw=True)
        assert endpoint is not None
        blocking = _SendBlocksOnce(endpoint.sock)
        monkeypatch.setattr(endpoint, "sock", blocking)
        results += await asyncio.gather(*(_icmp(host) for host in _loopback_addresses(20)))
        assert blocking.refused == 1
        return results, endpoint

    with asyncio.Runner(loop_factory=_LoopWatchingNoSockets) as runner:
        results, endpoint = runner.run(scenario())
    assert endpoint.reads_by_task
    assert [result.result for result in results] == [Result.OK] * 120
    assert endpoint.sock.fileno() == -1


class _LoopFailingReads(_LoopWatchingNoSockets):
    """A loop without `add_reader` whose socket reads all fail, as a broken socket's would."""

    async def sock_recvfrom(self, sock: socket.socket, bufsize: int) -> tuple[bytes, Any]:
        raise OSError(errno.EIO, "input/output error")


def test_socket_that_stops_reading_ends_waiting_runs() -> None:
    """When the reader task gives up on a failing socket, the waiting run ends exporter_error
    at once instead of timing out, and the socket is closed."""

    async def scenario() -> tuple[CheckResult, icmp.IcmpEndpoint | None]:
        result = await _icmp("127.0.0.1", timeout_seconds=30.0)
        return result, endpoint_of(asyncio.get_running_loop(), socket.AF_INET, raw=True)

    with asyncio.Runner(loop_factory=_LoopFailingReads) as runner:
        result, endpoint = runner.run(scenario())
    assert result.result is Result.EXPORTER_ERROR
    assert result.detail == "not checked: the shared ICMP socket was closed while the check waited"
    assert endpoint is None  # closed and forgotten: the next run opens a new one


def test_kernel_receive_time_replaces_the_time_of_reading() -> None:
    """A packet's kernel timestamp moves its arrival back by its age; an implausible stamp (a
    wall-clock step) is ignored and the time of reading stands."""
    level, kind = socket.SOL_SOCKET, 35  # SO_TIMESTAMPNS

    def stamp(seconds_ago: float) -> list[tuple[int, int, bytes]]:
        wall = time.time() - seconds_ago
        return [(level, kind, struct.pack("@ll", int(wall), int(wall % 1 * 1e9)))]

    before = time.perf_counter()
    arrived = icmp._received_at(stamp(0.5))
    after = time.perf_counter()
    assert before - 0.6 < arrived < after - 0.4
    before = time.perf_counter()
    arrived = icmp._received_at(stamp(-60.0))  # a stamp from the future
    assert before <= arrived <= time.perf_counter()


@pytest.fixture
def ping_namespace(isolated_host: IsolatedHost) -> IsolatedHost:
    """A namespace whose kernel allows unprivileged ping sockets to every group."""
    isolated_host.run(["sh", "-c", f"echo '{WIDE_OPEN}' > /proc/sys/net/ipv4/ping_group_range"])
    return isolated_host


def test_ping_socket_matches_replies_by_sequence(
    ping_namespace: IsolatedHost, tmp_path: Path
) -> None:
    """Through one unprivileged ping socket (the kernel picks its identifier), 200 concurrent
    targets with two echoes each are ok, each result naming its own address."""
    hosts = [f"127.0.{n // 250}.{n % 250 + 1}" for n in range(200)]
    config = tmp_path / "ping.yaml"
    config.write_text(
        "extra_flows:\n"
        "  - {id: ping, check: icmp, privileged: unprivileged, count: 2, timeout: 5s,\n"
        f"     targets: [{', '.join(hosts)}]}}\n",
        encoding="utf-8",
    )
    run = subprocess.run(
        [
            *("ip", "netns", "exec", ping_namespace.name, sys.executable),
            *("-m", "exporter", "check", "--config", str(config), "--format", "json"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    flows = json.loads(run.stdout)["flows"]
    assert run.returncode == 0, run.stderr
    assert sorted(flow["target"] for flow in flows) == sorted(hosts)
    for flow in flows:
        assert flow["result"] == "ok"
        assert flow["detail"].startswith(f"echo reply from {flow['target']} in ")
        assert flow["detail"].endswith("(ping socket)")
