"""A TCP listener that records which of its addresses each connection reached.

Bound to 0.0.0.0 on a port the kernel picks, it answers on every 127.0.0.0/8 address at once,
so a test can hand out `127.0.0.N:PORT` as N different targets and learn afterwards which of
them were really connected to (the local address of each accepted socket). Every connection is
closed as soon as it is recorded: a `tcp` check only connects and closes.
"""

from __future__ import annotations

import socketserver
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from tests.peers.threaded import serving


class RecordingListener(socketserver.TCPServer):
    """Counts accepted connections per local address; read with `reached()`."""

    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("0.0.0.0", 0), _RecordAddress)  # one port for every 127.0.0.N
        self._lock = threading.Lock()
        self._reached: Counter[str] = Counter()

    @property
    def port(self) -> int:
        """The port the kernel gave the listener."""
        port: int = self.server_address[1]
        return port

    def record(self, address: str) -> None:
        """Count one connection to `address`."""
        with self._lock:
            self._reached[address] += 1

    def reached(self) -> Counter[str]:
        """Connections so far per local address (a copy)."""
        with self._lock:
            return Counter(self._reached)


class _RecordAddress(socketserver.BaseRequestHandler):
    """Records the address the peer connected to; returning closes the connection."""

    def handle(self) -> None:
        assert isinstance(self.server, RecordingListener)
        self.server.record(self.request.getsockname()[0])


@contextmanager
def run_recording_listener() -> Iterator[RecordingListener]:
    """Serve a `RecordingListener` on a thread of its own; shut it down on exit."""
    listener = RecordingListener()
    with serving(listener, "recording-listener"):
        yield listener
