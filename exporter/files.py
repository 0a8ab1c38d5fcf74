"""Reading the files an operator points the exporter at: configs, web configs, secret files.

Each is read the same way, because each can be replaced by something hostile: a FIFO with no
writer would block the read forever, a symbolic link to `/dev/zero` would feed it without end,
and a huge file would exhaust memory. So a file is refused unless it is a regular file, it is
opened without blocking, and at most `max_bytes` + 1 bytes are ever read. Errors say what the
path is, never what it holds.

This module imports nothing of the exporter, so that the config loader and the secrets (which
the checks import) can both use it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


class FileRefused(Exception):
    """The file cannot be used; the message says why in words fit for an operator."""


def read_regular_file(path: str | Path, max_bytes: int, what: str) -> tuple[os.stat_result, bytes]:
    """The file's status and bytes, read without ever blocking and never more than `max_bytes`.

    `what` names the file's role in messages ("config", "secret file"). `stat` first refuses a
    FIFO, device, directory or socket without opening it (opening a device can have effects of
    its own); `fstat` on the opened descriptor then closes the race with a file swapped in
    between, and `O_NONBLOCK` makes even that open return at once for a FIFO with no writer.
    """
    try:
        _require_regular(os.stat(path).st_mode, path, what)
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise FileRefused(exc.strerror or str(exc)) from None
    try:
        status = os.fstat(fd)
        _require_regular(status.st_mode, path, what)
        if status.st_size > max_bytes:
            raise FileRefused(_too_large(f"is {status.st_size} bytes", max_bytes, what))
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:  # a file that grows while read stops at max_bytes + 1
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise FileRefused(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise FileRefused(_too_large("grew while read", max_bytes, what))
    return status, b"".join(chunks)


def _require_regular(mode: int, path: str | Path, what: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    via = " (through a symbolic link)" if os.path.islink(path) else ""
    raise FileRefused(f"is {kind}{via}; the {what} must be a regular file")


def _too_large(amount: str, max_bytes: int, what: str) -> str:
    limit = (
        f"{max_bytes // (1024 * 1024)} MiB" if max_bytes >= 1 << 20 else f"{max_bytes // 1024} KiB"
    )
    return f"{amount}, over the {limit} limit for a {what}"
