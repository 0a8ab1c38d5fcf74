"""A `socketserver` server run on a thread of its own for the length of a `with` block.

Fakes and small peers are served from the test process, so a test can read what they saw; this
is the one place that starts such a server, stops it and waits for its thread.
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Iterator

# How often serve_forever looks at its shutdown flag: shutdown() waits at most this long.
SHUTDOWN_POLL_S = 0.05


@contextlib.contextmanager
def serving(server: socketserver.BaseServer, name: str) -> Iterator[None]:
    """Serve `server` on a daemon thread named `name`; shut it down, close it and join the
    thread on exit, whatever the block raised."""
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": SHUTDOWN_POLL_S},
        name=name,
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
