"""One throwaway Debian squid on loopback: an open port and a port that demands basic auth.

Both ports tunnel CONNECT to any destination port but one (`denied_port`, refused by an ACL with
403). The auth port checks credentials with squid's own `basic_ncsa_auth` against a password file
made per run (`openssl passwd -apr1`). Every socket stays on 127.0.0.1: squid's DNS client
sockets are bound there and its ICMP pinger is off. A destination port nothing listens on gives
squid's 503 ERR_CONNECT_FAIL, the "upstream down" answer.
"""

from __future__ import annotations

import contextlib
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.peers.ports import free_tcp_port, wait_for_tcp
from tests.peers.procs import log_tail, stop_process

SQUID = "/usr/sbin/squid"
BASIC_NCSA_AUTH = "/usr/lib/squid/basic_ncsa_auth"
SQUID_USER = "proxy"  # Debian's cache_effective_user: it must reach and write the directory
HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
PROXY_USER = "flowmon"
PROXY_PASSWORD = "S3CR3T-PROXY-PW-4a1f"


@dataclass(frozen=True)
class Squid:
    """Where the proxy listens, the credentials of its auth port and the port its ACL denies."""

    open_port: int
    auth_port: int
    denied_port: int
    directory: Path
    username: str = PROXY_USER
    password: str = PROXY_PASSWORD
    host: str = HOST


def _write_config(directory: Path, open_port: int, auth_port: int, denied_port: int) -> Path:
    passwd = directory / "passwd"
    hashed = subprocess.run(
        ["openssl", "passwd", "-apr1", PROXY_PASSWORD], check=True, capture_output=True, text=True
    ).stdout.strip()
    passwd.write_text(f"{PROXY_USER}:{hashed}\n")
    config = directory / "squid.conf"
    config.write_text(
        f"""\
http_port {HOST}:{open_port} name=open
http_port {HOST}:{auth_port} name=auth
visible_hostname cfe-test-proxy
pid_filename {directory / "squid.pid"}
cache_log {directory / "logs" / "cache.log"}
access_log {directory / "logs" / "access.log"} squid
cache_store_log none
coredump_dir {directory}
cache deny all
cache_mem 8 MB
shutdown_lifetime 0 seconds
connect_retries 0
dns_nameservers 127.0.0.1
udp_incoming_address {HOST}
udp_outgoing_address {HOST}
pinger_enable off
auth_param basic program {BASIC_NCSA_AUTH} {passwd}
auth_param basic realm cfe-test-proxy
auth_param basic children 2 startup=1
acl localnet src 127.0.0.0/8
acl CONNECT method CONNECT
acl denied_port port {denied_port}
acl auth_port myportname auth
acl authed proxy_auth REQUIRED
http_access deny !localnet
http_access deny CONNECT denied_port
http_access allow CONNECT !auth_port
http_access allow CONNECT auth_port authed
http_access deny all
"""
    )
    return config


@contextlib.contextmanager
def run_squid() -> Iterator[Squid]:
    """Start squid on two free loopback ports; stop it by its own PID on exit."""
    directory = Path(tempfile.mkdtemp(prefix="cfe-squid-"))
    directory.chmod(0o755)  # squid drops to user proxy, which must reach the directory
    proc: subprocess.Popen[bytes] | None = None
    try:
        (directory / "logs").mkdir()
        open_port, auth_port, denied_port = (free_tcp_port(HOST) for _ in range(3))
        config = _write_config(directory, open_port, auth_port, denied_port)
        user = pwd.getpwnam(SQUID_USER)
        for path in (directory, directory / "logs", directory / "passwd", config):
            shutil.chown(path, user.pw_uid, user.pw_gid)
        parse = subprocess.run(
            [SQUID, "-k", "parse", "-f", str(config)], check=False, capture_output=True, text=True
        )
        if parse.returncode != 0:
            raise RuntimeError(f"squid -k parse rejected {config}: {parse.stderr.strip()}")
        log = directory / "squid.out"
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [SQUID, "-N", "-d1", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            for port in (open_port, auth_port):
                wait_for_tcp(HOST, port, START_TIMEOUT_S, proc=proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{log_tail(log)}") from exc
        yield Squid(open_port, auth_port, denied_port, directory)
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(directory, ignore_errors=True)
