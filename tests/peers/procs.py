"""Process helpers: every daemon a fixture starts is stopped by its own PID, never by name."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

STOP_GRACE_S = 5.0


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process, SIGKILL it after `grace_s`, and reap it so no zombie or leak remains."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)


def log_tail(path: Path, max_chars: int = 4000) -> str:
    """Return the end of a daemon's log so a start-up failure explains itself."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return text[-max_chars:]


def wait_until_http_ready(
    name: str, proc: subprocess.Popen[bytes], ready_url: str, log: Path, timeout_s: float
) -> None:
    """Poll `ready_url` (a Prometheus-style `/-/ready`) until it answers 200; raise with the
    daemon's log if it exits first or is not ready within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not _answers_ok(ready_url):
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not ready in {timeout_s} s:\n{log_tail(log)}")
        time.sleep(0.1)


def _answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as reply:
            return int(reply.status) == 200
    except (OSError, urllib.error.URLError):
        return False
