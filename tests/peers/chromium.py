"""Debian's headless Chromium, run once per page load: the DOM after rendering, or a PNG.

Each run gets a fresh profile directory and the flags that keep Chromium from calling home
(no background networking, component updates, sync or QUIC), so the only traffic is the page
itself on loopback. Root needs `--no-sandbox`.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
RUN_DEADLINE_S = 60.0
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def _run(work_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-", dir=work_dir) as profile:
        run = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=RUN_DEADLINE_S,
            check=False,
        )
    if run.returncode != 0:
        raise RuntimeError(f"chromium exited {run.returncode}:\n{run.stderr[-4000:]}")
    return run


def dump_dom(url: str, work_dir: Path) -> str:
    """The page's DOM as Chromium serialises it once loaded."""
    return _run(work_dir, "--dump-dom", url).stdout


def screenshot(url: str, path: Path, width: int, height: int) -> Path:
    """A PNG of the page in a window of `width` x `height` CSS pixels, written to `path`."""
    _run(path.parent, f"--window-size={width},{height}", f"--screenshot={path}", url)
    if not path.is_file() or path.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise RuntimeError(f"chromium wrote no PNG to {path}")
    return path
