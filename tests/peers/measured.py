"""Run one command and report its own wall time and peak RSS, measured from a small parent.

Linux charges a child's `ru_maxrss` with the high-water RSS of the image it was forked from
(recorded at exec), so a child started straight from pytest would report pytest's size. Started
from this small process, the figure is the child's own.

    python measured.py DEADLINE_S STDOUT_FILE STDERR_FILE COMMAND...

Prints one JSON object: `exit` (None if the deadline killed it), `wall_s`, `maxrss_kib`.
Uses only the standard library: it must not import the tests package.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    """Start the command, wait for it at most the deadline, print the measurement."""
    deadline_s = float(argv[0])
    with open(argv[1], "wb") as out, open(argv[2], "wb") as err:
        started = time.monotonic()
        process = subprocess.Popen(argv[3:], stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    pidfd = os.pidfd_open(process.pid)
    try:
        exited, _, _ = select.select([pidfd], [], [], deadline_s)
    finally:
        os.close(pidfd)
    if not exited:
        os.kill(process.pid, signal.SIGKILL)
    _, status, usage = os.wait4(process.pid, 0)
    wall_s = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    code = process.returncode if exited else None
    print(json.dumps({"exit": code, "wall_s": wall_s, "maxrss_kib": usage.ru_maxrss}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
