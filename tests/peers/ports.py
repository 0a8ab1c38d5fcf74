"""Loopback port helpers: daemons get a free port and tests wait until it really accepts."""

from __future__ import annotations

import socket
import subprocess
import time

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


def wait_for_udp_echo(
    host: str,
    port: int,
    timeout_s: float = 10.0,
    *,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until host:port echoes a datagram, so tests never race a starting UDP peer.

    If `proc` is given and exits meanwhile, fail at once instead of waiting out the deadline.
    """
    deadline = time.monotonic() + timeout_s
    last_error: OSError | None = None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"process {proc.pid} exited with code {proc.returncode} "
                    f"before {host}:{port} echoed a datagram"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(
                    f"{host}:{port} did not echo a UDP datagram within {timeout_s:.1f} s "
                    f"(last error: {last_error!r})"
                )
            sock.settimeout(min(_POLL_INTERVAL_S, remaining))
            try:
                sock.send(b"ready?")
                if sock.recv(64) == b"ready?":
                    return
            except OSError as exc:  # TimeoutError while starting; ECONNREFUSED before the bind
                last_error = exc


def wait_for_tcp(
    host: str,
    port: int,
    timeout_s: float = 10.0,
    *,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until host:port accepts a TCP connection, so tests never race a starting daemon.

    If `proc` is given and exits meanwhile, fail at once instead of waiting out the deadline.
    """
    deadline = time.monotonic() + timeout_s
    last_error: OSError | None = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process {proc.pid} exited with code {proc.returncode} "
                f"before {host}:{port} accepted connections"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(
                f"{host}:{port} did not accept a TCP connection within {timeout_s:.1f} s "
                f"(last error: {last_error!r})"
            )
        try:
            with socket.create_connection((host, port), timeout=min(1.0, remaining)):
                return
        except OSError as exc:
            last_error = exc
        time.sleep(min(_POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))
