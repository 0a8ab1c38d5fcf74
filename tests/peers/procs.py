"""Process helpers: every daemon a fixture starts is stopped by its own PID, never by name."""

from __future__ import annotations

import subprocess
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
