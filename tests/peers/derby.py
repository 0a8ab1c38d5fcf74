"""Throwaway Apache Derby network server (DRDA, as Db2 speaks it) on loopback.

Debian's libderby-java ships the network server (`derbynet.jar`); derby-tools ships `ij`, the
independent client that proves the server with Derby's own JDBC network driver. Everything the
server writes (databases, derby.log) stays in a temporary directory removed on exit.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.peers.ports import free_tcp_port, wait_for_tcp
from tests.peers.procs import log_tail, stop_process

JAVA = "/usr/bin/java"
IJ = "/usr/bin/ij"
JARS = "/usr/share/java"
CLASSPATH = ":".join(
    f"{JARS}/{jar}" for jar in ("derby.jar", "derbynet.jar", "derbytools.jar", "derbyclient.jar")
)
SERVER_CLASS = "org.apache.derby.drda.NetworkServerControl"
START_TIMEOUT_S = 60.0  # a JVM start on a busy 2-core machine; about 2 s when idle
DATABASE = "flowdb"  # created by the fixture through ij, so it exists for the tests


@dataclass(frozen=True)
class Derby:
    """Where the test Derby server listens, and the database it holds."""

    port: int
    directory: Path
    database: str = DATABASE
    host: str = "127.0.0.1"


def run_ij(script: str, timeout_s: float = 60.0) -> str:
    """Run SQL through `ij` (Derby's client over the network driver); return what it printed.

    ij writes its derby.log into the working directory: a temporary one, removed afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="cfe-ij-") as directory:
        completed = subprocess.run(
            [IJ],
            input=script,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd=directory,
        )
    return completed.stdout + completed.stderr


def _ping(port: int) -> bool:
    """NetworkServerControl's own ping: true once the server answers DRDA, not just TCP."""
    completed = subprocess.run(
        [JAVA, "-cp", CLASSPATH, SERVER_CLASS, "ping", "-h", "127.0.0.1", "-p", str(port)],
        capture_output=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    return completed.returncode == 0


@contextlib.contextmanager
def run_derby() -> Iterator[Derby]:
    """Start the Derby network server on a free loopback port, yield it, stop it by its PID."""
    directory = Path(tempfile.mkdtemp(prefix="cfe-derby-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        port = free_tcp_port()
        log = directory / "derby.out"
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [
                    JAVA,
                    f"-Dderby.system.home={directory}",
                    "-cp",
                    CLASSPATH,
                    SERVER_CLASS,
                    "start",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-noSecurityManager",
                ],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_tcp("127.0.0.1", port, START_TIMEOUT_S, proc=proc)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Derby did not answer its ping:\n{log_tail(log)}")
        server = Derby(port=port, directory=directory)
        output = run_ij(f"connect '{jdbc_url(server, create=True)}';\nexit;\n")
        if "ERROR" in output:
            raise RuntimeError(f"ij could not create {DATABASE}:\n{output}")
        yield server
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(directory, ignore_errors=True)


def jdbc_url(server: Derby, database: str | None = None, *, create: bool = False) -> str:
    """The network-client JDBC URL of a database on the server (Derby needs no real login)."""
    name = database or server.database
    suffix = ";create=true" if create else ""
    return f"jdbc:derby://{server.host}:{server.port}/{name}{suffix};user=app;password=app"


@pytest.fixture(scope="session")
def derby() -> Iterator[Derby]:
    """A real Apache Derby network server on a free loopback port for the whole session."""
    with run_derby() as server:
        yield server
