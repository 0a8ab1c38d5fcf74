"""Loopback port helpers: daemons get a free port and tests wait until it really accepts."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

_POLL_INTERVAL_S = 0.05


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """Return a port the kernel just handed out, so parallel runs do not fight over fixed ports."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def free_udp_port(host: str = "127.0.0.1") -> int:
    """Return a UDP port the kernel just handed out and nothing listens on any more."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def _poll(
    attempt: Callable[[float], bool],
    ready: str,
    not_ready: str,
    timeout_s: float,
    proc: subprocess.Popen[bytes] | None,
) -> None:
    """Call `attempt(remaining seconds)` until it returns True, within `timeout_s`.

    An OSError from an attempt is remembered for the final message; if `proc` exits meanwhile,
    fail at once instead of waiting out the deadline.
    """
    deadline = time.monotonic() + timeout_s
    last_error: OSError | None = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process {proc.pid} exited with code {proc.returncode} before {ready}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"{not_ready} within {timeout_s:.1f} s (last error: {last_error!r})")
        try:
            if attempt(remaining):
                return
        except OSError as exc:
            last_error = exc


def wait_for_udp_echo(
    host: str,
    port: int,
    timeout_s: float = 10.0,
    *,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until host:port echoes a datagram, so tests never race a starting UDP peer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))

        def echoed(remaining: float) -> bool:
            # TimeoutError while the peer starts; ECONNREFUSED before it binds
            sock.settimeout(min(_POLL_INTERVAL_S, remaining))
            sock.send(b"ready?")
            return sock.recv(64) == b"ready?"

        _poll(
            echoed,
            f"{host}:{port} echoed a datagram",
            f"{host}:{port} did not echo a UDP datagram",
            timeout_s,
            proc,
        )


def wait_for_tcp(
    host: str,
    port: int,
    timeout_s: float = 10.0,
    *,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until host:port accepts a TCP connection, so tests never race a starting daemon."""

    def accepted(remaining: float) -> bool:
        try:
            with socket.create_connection((host, port), timeout=min(1.0, remaining)):
                return True
        except OSError:
            time.sleep(_POLL_INTERVAL_S)
            raise

    _poll(
        accepted,
        f"{host}:{port} accepted connections",
        f"{host}:{port} did not accept a TCP connection",
        timeout_s,
        proc,
    )
