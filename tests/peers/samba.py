"""A throwaway Samba (smbd, nmbd, samba-dcerpcd) inside a network namespace of its own.

The NetBIOS name service only means something on UDP 137 (nmblookup and Windows always ask
there), and 137, 139 and 445 are privileged, machine-wide ports: so the daemons run inside a
namespace the tests create (`tests.peers.netns`), on the namespace's address, and the test
process reaches them from the root namespace over the veth pair. Everything Samba writes
(tdbs, sockets, pid files, logs) goes to a temporary directory; /etc/samba is never read.

Each daemon is started in the foreground by the fixture, so the PID it holds is the daemon's
own, and stopped by that PID. `rpc start on demand helpers = no` keeps smbd from starting
samba-dcerpcd itself (it would run in a session of its own, outside the fixture's reach);
the fixture starts samba-dcerpcd instead. `--no-process-group` is never passed: smbd and nmbd
signal their whole process group on SIGTERM, which would then be the test runner's.
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

from tests.peers.netns import IsolatedHost, isolated_host
from tests.peers.ports import wait_for_tcp
from tests.peers.procs import log_tail

SMBD = "/usr/sbin/smbd"
NMBD = "/usr/sbin/nmbd"
SAMBA_DCERPCD = "/usr/libexec/samba/samba-dcerpcd"
SMBPASSWD = "/usr/bin/smbpasswd"
SS = "/usr/bin/ss"
START_TIMEOUT_S = 15.0
_POLL_INTERVAL_S = 0.05

NETBIOS_NAME = "CERTEROSMB"
WORKGROUP = "CERTEROGRP"
SHARE = "flowshare"
# smbpasswd adds Samba accounts for existing Unix users only; root exists on every test host,
# and its Samba password lives only in this run's passdb.tdb.
USER = "root"
PASSWORD = "S3CR3T-SAMBA-PW-6a1f"  # distinctive: a secrets test can grep every surface for it
# A called name the session service on 139 answers with a RETARGET (RFC 1002 4.3.5) to the
# same host's port 445 (Samba's `netbios retarget` parameter, source3/smbd/reply.c).
RETARGETED_NAME = "MOVEDAWAY"


@dataclass(frozen=True)
class Samba:
    """Where the running Samba answers, and the names and account it was set up with."""

    host: str  # the namespace's address, reachable from the root namespace
    namespace: IsolatedHost
    directory: Path
    smb_port: int = 445
    netbios_ssn_port: int = 139
    netbios_ns_port: int = 137
    netbios_name: str = NETBIOS_NAME
    workgroup: str = WORKGROUP
    user: str = USER
    password: str = PASSWORD
    share: str = SHARE
    retargeted_name: str = RETARGETED_NAME


def state_paths(directory: Path) -> str:
    """smb.conf lines that keep every file Samba writes inside `directory`, so parallel runs
    and the machine's own Samba never share state."""
    return (
        f"  passdb backend = tdbsam:{directory}/private/passdb.tdb\n"
        f"  lock directory = {directory}/lock\n"
        f"  state directory = {directory}/state\n"
        f"  cache directory = {directory}/cache\n"
        f"  private dir = {directory}/private\n"
        f"  pid directory = {directory}/run\n"
        f"  ncalrpc dir = {directory}/run/ncalrpc\n"
        f"  binddns dir = {directory}/bind-dns\n"
        f"  usershare path = {directory}/usershares\n"
        f"  log file = {directory}/log/log.%m\n"
    )


def _smb_conf(directory: Path, address: str) -> str:
    return f"""\
[global]
  workgroup = {WORKGROUP}
  netbios name = {NETBIOS_NAME}
  server string = certero flow exporter test peer
  server role = standalone server
  security = user
  map to guest = Never
{state_paths(directory)}  smb ports = 445 139
  interfaces = {address}/30
  bind interfaces only = yes
  disable netbios = no
  rpc start on demand helpers = no
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  netbios retarget:{RETARGETED_NAME} = {address}:445
[{SHARE}]
  path = {directory}/share
  read only = yes
  valid users = {USER}
"""


def _wait_for_udp_bound(host: IsolatedHost, port: int, proc: subprocess.Popen[bytes]) -> None:
    """Block until a socket in the namespace is bound to the namespace's address and `port`.

    Bound is enough: a datagram sent afterwards waits in the socket until the daemon reads it.
    Probing with datagrams instead would draw ICMP port unreachable errors while the daemon
    starts, and spend the namespace's ICMP error budget that the tests' own refusals need.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    wanted = f"{host.address}:{port}"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with code {proc.returncode}")
        if wanted in host.run([SS, "-Hlun", f"sport = :{port}"]).split():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing bound {wanted}/udp within {START_TIMEOUT_S:.0f} s")
        time.sleep(_POLL_INTERVAL_S)


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes]) -> None:
    """Wait until `proc` has created the Unix socket `path`."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not path.is_socket():
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear within {START_TIMEOUT_S:.0f} s")
        time.sleep(_POLL_INTERVAL_S)


@contextlib.contextmanager
def run_samba() -> Iterator[Samba]:
    """Start Samba in a fresh namespace; stop every daemon by its PID and remove it all on exit."""
    directory = Path(tempfile.mkdtemp(prefix="samba-"))
    try:
        with isolated_host() as host:
            for sub in ("lock", "state", "cache", "private", "run/ncalrpc", "bind-dns", "log"):
                (directory / sub).mkdir(parents=True)
            (directory / "private").chmod(0o700)
            (directory / "share").mkdir()
            (directory / "share" / "hello.txt").write_text("hello from the flow test peer\n")
            config = directory / "smb.conf"
            config.write_text(_smb_conf(directory, host.address))
            subprocess.run(
                [SMBPASSWD, "-c", str(config), "-s", "-a", USER],
                input=f"{PASSWORD}\n{PASSWORD}\n".encode(),
                check=True,
                capture_output=True,
            )
            logs = {name: directory / f"{name}.out" for name in ("smbd", "nmbd", "dcerpcd")}
            # smbd and nmbd call setsid() themselves and fail in a process that already leads a
            # session; samba-dcerpcd does not, so it gets a session from the fixture: a daemon
            # left in the runner's process group could signal the runner itself.
            commands = (
                ("dcerpcd", [SAMBA_DCERPCD, "--libexec-rpcds", "--foreground"], True),
                ("smbd", [SMBD, "--foreground"], False),
                ("nmbd", [NMBD, "--foreground"], False),
            )
            procs = {}
            for name, argv, new_session in commands:
                with logs[name].open("wb") as log:
                    procs[name] = host.popen(
                        [*argv, "--debug-stdout", "-s", str(config)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        new_session=new_session,
                    )
            try:
                for port in (445, 139):
                    wait_for_tcp(host.address, port, START_TIMEOUT_S, proc=procs["smbd"])
                _wait_for_udp_bound(host, 137, procs["nmbd"])
                # share listing goes through samba-dcerpcd's srvsvc pipe, which appears last
                _wait_for_socket(directory / "run/ncalrpc/np/srvsvc", procs["dcerpcd"])
            except RuntimeError as exc:
                tails = "\n".join(f"{name}:\n{log_tail(log)}" for name, log in logs.items())
                raise RuntimeError(f"Samba did not start: {exc}\n{tails}") from exc
            yield Samba(host=host.address, namespace=host, directory=directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
