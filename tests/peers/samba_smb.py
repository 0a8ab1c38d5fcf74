"""A throwaway Samba smbd on a free loopback port: the SMB server of the `smb` check's tests.

smbd alone (no nmbd, no NetBIOS) serves SMB2/3 over direct TCP on any port, so it runs on
127.0.0.1 without a network namespace. Every path Samba writes (tdbs, sockets, pid files, logs)
is redirected into a temporary directory; /etc/samba is never read. The Samba password of the
Unix user `root` lives only in that directory's passdb.

Shares, standing in for what agent deployment meets on Windows:
- `ADMIN$`: Samba has no administrative shares, so one of that name is defined whose
  `valid users` is the test user: the tree connect the check makes by default.
- `denied`: exists, but only for `nobody`: a tree connect as the test user is refused with
  STATUS_ACCESS_DENIED.

`map to guest = Bad User` lets an unknown user in as guest, as some NAS boxes and old Windows
hosts do: a login the check must not count as the account's.

`server signing = mandatory` makes the NEGOTIATE answer say "signing required", as a domain
controller and Windows Server 2025 do. `smb1_only=True` starts a server limited to NT LM 0.12
(SMB1), the kind of old host the check must name rather than call broken.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.peers.ports import free_tcp_port, wait_for_tcp
from tests.peers.procs import log_tail, stop_process
from tests.peers.samba import state_paths

SMBD = "/usr/sbin/smbd"
SMBPASSWD = "/usr/bin/smbpasswd"
SMBCLIENT = "/usr/bin/smbclient"
HOST = "127.0.0.1"
WORKGROUP = "FLOWTESTGRP"
NETBIOS_NAME = "FLOWSMB"
REALM = "FLOWTEST.EXAMPLE"
USER = "root"  # smbpasswd needs a Unix account of the same name; root is on every test host
USER_PASSWORD = "S3CR3T-SMB-PW-6a2f"  # distinctive: the secrets test greps for it
ADMIN_SHARE = "ADMIN$"
DENIED_SHARE = "denied"
START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class SambaSmb:
    """Where one running smbd listens and what it holds."""

    port: int
    directory: Path
    smb1_only: bool
    host: str = HOST
    user: str = USER
    password: str = USER_PASSWORD
    workgroup: str = WORKGROUP
    netbios_name: str = NETBIOS_NAME


def _config(directory: Path, port: int, *, smb1_only: bool) -> str:
    protocols = (
        "  server min protocol = NT1\n  server max protocol = NT1\n"
        if smb1_only
        else "  server min protocol = SMB2_02\n"
    )
    return f"""\
[global]
  workgroup = {WORKGROUP}
  netbios name = {NETBIOS_NAME}
  realm = {REALM}
  server string = flow-test samba
  server role = standalone server
  security = user
  map to guest = Bad User
  server signing = mandatory
{protocols}{state_paths(directory)}  smb ports = {port}
  interfaces = {HOST}/8
  bind interfaces only = yes
  disable netbios = yes
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
[{ADMIN_SHARE}]
  path = {directory}/admin
  valid users = {USER}
  read only = yes
[{DENIED_SHARE}]
  path = {directory}/denied
  valid users = nobody
  read only = yes
"""


def _stop_rpc_helper(directory: Path) -> None:
    """Stop the samba-dcerpcd smbd started on demand (share listing) by the PID it wrote.

    It runs in a session of its own, so stopping smbd does not stop it; the PID is checked to
    belong to a process whose command line names this server's config before it is signalled.
    """
    pid_file = directory / "run" / "samba-dcerpcd.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return
    if str(directory).encode() in command_line:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


@contextlib.contextmanager
def run_samba_smb(*, smb1_only: bool = False) -> Iterator[SambaSmb]:
    """Start smbd on a free loopback port; stop it (and its RPC helper) by PID on exit."""
    directory = Path(tempfile.mkdtemp(prefix="smbd-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        for name in ("lock", "state", "cache", "private", "run/ncalrpc", "bind-dns", "log"):
            (directory / name).mkdir(parents=True)
        for share in ("admin", "denied"):
            (directory / share).mkdir()
            (directory / share / "README.txt").write_text(f"the {share} share\n")
        (directory / "private").chmod(0o700)
        port = free_tcp_port()
        config = directory / "smb.conf"
        config.write_text(_config(directory, port, smb1_only=smb1_only))
        subprocess.run(
            [SMBPASSWD, "-c", str(config), "-s", "-a", USER],
            input=f"{USER_PASSWORD}\n{USER_PASSWORD}\n".encode(),
            check=True,
            capture_output=True,
        )
        log = directory / "smbd.out"
        with log.open("wb") as log_file:
            # never --no-process-group: on SIGTERM smbd signals its whole process group, which
            # would then be pytest's; without it smbd makes its own and keeps this PID.
            # A foreground smbd exits at EOF on its standard input: the pipe stays open while
            # the server is wanted, and a test run that dies takes the server with it.
            proc = subprocess.Popen(
                [SMBD, "--foreground", "--debug-stdout", "-s", str(config)],
                stdin=subprocess.PIPE,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_tcp(HOST, port, START_TIMEOUT_S, proc=proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\nsmbd log:\n{log_tail(log)}") from exc
        yield SambaSmb(port, directory, smb1_only)
    finally:
        if proc is not None:
            stop_process(proc)
            if proc.stdin is not None:
                proc.stdin.close()
        _stop_rpc_helper(directory)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def samba_smb() -> Iterator[SambaSmb]:
    """A real smbd (SMB 2.0.2 to 3.1.1, signing required) for the whole session."""
    with run_samba_smb() as server:
        yield server


@pytest.fixture(scope="session")
def samba_smb1_only() -> Iterator[SambaSmb]:
    """A real smbd that speaks SMB1 (NT LM 0.12) and nothing newer."""
    with run_samba_smb(smb1_only=True) as server:
        yield server
