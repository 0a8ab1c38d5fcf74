"""Tiny UDP peers on loopback, served by the test's own event loop.

A peer answers each datagram through a function (echo, an oversized reply, several datagrams
in a row, or nothing at all) and keeps every datagram it received, so a test can count the
requests a check really sent.
Leaving the context closes the socket; nothing outlives the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import cast

# The reply to one datagram: one datagram, several sent in order (a duplicate, a stray one
# before the right one), or None to stay silent.
Answer = Callable[[bytes], bytes | list[bytes] | None]


@dataclass
class UdpPeer:
    """A bound UDP socket on `host`:`port` and the datagrams it has received so far."""

    host: str
    port: int
    received: list[bytes] = field(default_factory=list)


class _Answerer(asyncio.DatagramProtocol):
    def __init__(self, peer: UdpPeer, answer: Answer) -> None:
        self.peer = peer
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector datagram transport does not subclass DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.peer.received.append(data)
        reply = self.answer(data)
        if reply is None or self.transport is None:
            return
        for datagram in [reply] if isinstance(reply, bytes) else reply:
            self.transport.sendto(datagram, addr)


def echo(data: bytes) -> bytes:
    """Answer every datagram with itself."""
    return data


def silent(_data: bytes) -> None:
    """Never answer: the port is open, the service stays mute."""


@contextlib.asynccontextmanager
async def udp_peer(
    answer: Answer, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[UdpPeer]:
    """Serve `answer` on `host`:`port` (a free port when 0) and yield the peer."""
    peer = UdpPeer(host=host, port=port)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Answerer(peer, answer), local_addr=(host, port)
    )
    peer.port = transport.get_extra_info("sockname")[1]
    try:
        yield peer
    finally:
        transport.close()
