"""Tiny misbehaving TCP servers on 127.0.0.1, served by the test's own event loop.

Each server runs one handler per connection; leaving the context closes the listener and every
connection it accepted, so no task or transport outlives the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

HOST = "127.0.0.1"


@contextlib.asynccontextmanager
async def fake_server(handler: Handler, host: str = HOST) -> AsyncIterator[int]:
    """Serve `handler` on a free port of a loopback address and yield that port."""
    tasks: set[asyncio.Task[object]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client under test aborts connections; that is not the server's failure
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(on_connect, host, 0)
    port: int = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def wait_for_client_to_leave(reader: asyncio.StreamReader) -> None:
    """Read and discard until the client closes or resets the connection."""
    while await reader.read(65536):
        pass


async def drip(writer: asyncio.StreamWriter, data: bytes, interval_s: float) -> None:
    """Write `data` a byte at a time, `interval_s` apart: a peer at its own slow pace, whose
    answer only the reading side's deadline can end."""
    for byte in data:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(interval_s)


def sends_then_waits(data: bytes) -> Handler:
    """A server that sends `data` at once and then holds the connection open, saying nothing."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await wait_for_client_to_leave(reader)

    return handler


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server that accepts and never answers."""
    await wait_for_client_to_leave(reader)


async def closes_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server that accepts and closes the connection without a byte."""
    writer.close()


def serves_tls(context: ssl.SSLContext, *, stall_from: int | None = None) -> Handler:
    """A TLS server; from connection number `stall_from` on it accepts and then says nothing.

    With `stall_from=2` it shows its certificate once, then stalls whoever comes back for it.
    """
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if stall_from is not None and connections >= stall_from:
            await wait_for_client_to_leave(reader)
            return
        with contextlib.suppress(ssl.SSLError):  # a client rejecting the certificate aborts
            await writer.start_tls(context)
            await wait_for_client_to_leave(reader)

    return handler
