"""`icmp`: the host answers an ICMP echo request.

Uses icmplib, which works on Linux, macOS and Windows. On Linux an unprivileged "ping socket"
(SOCK_DGRAM, allowed by `net.ipv4.ping_group_range`) is tried first and a raw socket (root or
CAP_NET_RAW) second; the mode that worked is remembered and named in the detail. A raw socket
also sees ICMP errors, so "destination unreachable" is told apart from silence.
"""

from __future__ import annotations

import itertools
import socket
import time
from typing import Any, Literal

import icmplib
from pydantic import Field

from exporter.checks.base import CheckContext, CheckSettings, CheckSpec, Target
from exporter.checks.net import resolve
from exporter.errors import CheckFailure
from exporter.result import CheckResult, Phase, Result

_identifiers = itertools.count(1)
_working_mode: dict[socket.AddressFamily, bool] = {}  # family → privileged?


class IcmpSettings(CheckSettings):
    """Options of the ICMP echo check."""

    count: int = Field(default=1, ge=1, le=10, description="Echo requests per run.")
    payload_size: int = Field(default=56, ge=0, le=1400)
    privileged: Literal["auto", "raw", "unprivileged"] = Field(
        default="auto", description="Socket kind; auto tries a ping socket, then a raw one."
    )


async def run(target: Target, settings: IcmpSettings, context: CheckContext) -> CheckResult:
    """Send echo requests one after another; ok when at least one reply arrives."""
    address = await resolve(context, Target(target.host), socket.SOCK_DGRAM)
    icmp_socket, mode = _open_socket(address.family, settings.privileged)
    rtts: list[float] = []
    last_error: CheckFailure | None = None
    try:
        for sent in range(settings.count):
            # Each echo gets an equal share of the time left, so one loss does not starve the rest.
            wait = context.remaining() / (settings.count - sent)
            try:
                with context.phase(Phase.HANDSHAKE):
                    rtts.append(await _echo(icmp_socket, address.ip, settings, context, wait))
            except CheckFailure as failure:
                last_error = failure
                if failure.result is not Result.TIMEOUT:
                    break
    finally:
        icmp_socket.close()
    if not rtts:
        assert last_error is not None
        raise last_error
    lost = settings.count - len(rtts)
    return context.ok(
        f"echo reply from {address.ip} in {min(rtts) * 1000:.2f} ms"
        + (f", {lost}/{settings.count} lost" if lost else "")
        + f" ({mode} socket)"
    )


def _open_socket(family: socket.AddressFamily, wanted: str) -> tuple[Any, str]:
    """Open an icmplib async socket of the requested kind, falling back as configured."""
    kind = icmplib.ICMPv6Socket if family == socket.AF_INET6 else icmplib.ICMPv4Socket
    if wanted == "auto":
        order = [_working_mode[family]] if family in _working_mode else [False, True]
    else:
        order = [wanted == "raw"]
    for privileged in order:
        try:
            sock = icmplib.AsyncSocket(kind(privileged=privileged))
        except icmplib.SocketPermissionError:
            continue
        _working_mode[family] = privileged
        return sock, "raw" if privileged else "ping"
    raise CheckFailure(
        Result.SERVICE_ERROR,
        "no ICMP socket allowed here: run as root/CAP_NET_RAW or widen net.ipv4.ping_group_range",
    )


async def _echo(
    icmp_socket: Any, address: str, settings: IcmpSettings, context: CheckContext, wait: float
) -> float:
    identifier = next(_identifiers) & 0xFFFF
    request = icmplib.ICMPRequest(
        destination=address,
        id=identifier,
        sequence=identifier,
        payload_size=settings.payload_size,
    )
    try:
        icmp_socket.send(request)
        started = time.perf_counter()
        reply = await icmp_socket.receive(request, timeout=max(wait, 0.001))
        rtt = time.perf_counter() - started
        reply.raise_for_status()
    except icmplib.TimeoutExceeded as exc:
        raise CheckFailure(Result.TIMEOUT, f"no echo reply from {address}") from exc
    except icmplib.DestinationUnreachable as exc:
        raise CheckFailure(Result.UNREACHABLE, f"ICMP {exc} (from a router or firewall)") from exc
    except icmplib.TimeExceeded as exc:
        raise CheckFailure(Result.UNREACHABLE, f"ICMP {exc}") from exc
    except icmplib.ICMPSocketError as exc:
        raise CheckFailure(Result.UNREACHABLE, f"cannot send echo request: {exc}") from exc
    context.debug("echo reply", address=address, rtt_ms=f"{rtt * 1000:.3f}")
    return rtt


SPEC = CheckSpec("icmp", IcmpSettings, run, "ICMP echo request/reply", uses_port=False)
