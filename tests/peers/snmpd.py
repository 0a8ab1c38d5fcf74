"""A throwaway net-snmp agent (Debian's snmpd) on a free loopback UDP port.

It answers a v2c community and v3 users of every security level the `snmp` check speaks; each
user's keys are localized by snmpd itself from `createUser` lines, so the check's own key
derivation is proven against an independent implementation. `-I -smux` keeps snmpd from also
listening on TCP 199 (SMUX), `MIBS=` keeps it from loading MIB files Debian does not ship, and
`SNMP_PERSISTENT_DIR` keeps its engine ID, boot counter and localized keys in the run's own
directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.peers.ports import free_udp_port
from tests.peers.procs import log_tail, stop_process

SNMPD = "/usr/sbin/snmpd"
SNMPGET = "/usr/bin/snmpget"
HOST = "127.0.0.1"
SYS_DESCR = "Certero test agent (net-snmp) for flow checks"
SYS_NAME = "snmp-test.example.test"
COMMUNITY = "S3CR3T-SNMP-COMMUNITY-5c2e"  # distinctive: the secrets test greps for it
START_TIMEOUT_S = 10.0
_PROBE_TIMEOUT_S = 0.2
SYS_DESCR_OID = "1.3.6.1.2.1.1.1.0"


@dataclass(frozen=True)
class V3User:
    """One USM user: protocols spelt as net-snmp spells them (None: that service is off)."""

    name: str
    auth_protocol: str | None
    auth_password: str | None
    priv_protocol: str | None = None
    priv_password: str | None = None

    @property
    def level(self) -> str:
        """The security level the user is allowed (`rouser NAME LEVEL`)."""
        if self.priv_protocol is not None:
            return "priv"
        return "auth" if self.auth_protocol is not None else "noauth"

    def snmpget_options(self) -> list[str]:
        """The net-snmp command-line options that authenticate as this user."""
        options = ["-v3", "-u", self.name]
        if self.auth_protocol is None:
            return [*options, "-l", "noAuthNoPriv"]
        assert self.auth_password is not None
        options += ["-a", self.auth_protocol, "-A", self.auth_password]
        if self.priv_protocol is None:
            return [*options, "-l", "authNoPriv"]
        assert self.priv_password is not None
        return [*options, "-l", "authPriv", "-x", self.priv_protocol, "-X", self.priv_password]


# Distinctive passwords: the secrets test greps every surface for them.
SHA256_AES = V3User(
    "certero-sha256-aes", "SHA-256", "S3CR3T-SNMP-AUTH-sha256", "AES", "S3CR3T-SNMP-PRIV-aes128"
)
SHA_AES = V3User("certero-sha-aes", "SHA", "S3CR3T-SNMP-AUTH-sha1", "AES", "S3CR3T-SNMP-PRIV-aes-1")
SHA_AUTH_ONLY = V3User("certero-sha-auth", "SHA", "S3CR3T-SNMP-AUTH-only")
MD5_DES = V3User("certero-md5-des", "MD5", "S3CR3T-SNMP-AUTH-md5", "DES", "S3CR3T-SNMP-PRIV-des")
SHA224_AES192 = V3User(
    "certero-sha224-aes192", "SHA-224", "S3CR3T-SNMP-AUTH-sha224", "AES-192", "S3CR3T-SNMP-PRIV-192"
)
SHA384_AES256 = V3User(
    "certero-sha384-aes256", "SHA-384", "S3CR3T-SNMP-AUTH-sha384", "AES-256", "S3CR3T-SNMP-PRIV-256"
)
SHA512_AES = V3User(
    "certero-sha512-aes", "SHA-512", "S3CR3T-SNMP-AUTH-sha512", "AES", "S3CR3T-SNMP-PRIV-aes-5"
)
NO_AUTH = V3User("certero-noauth", None, None)
USERS: Sequence[V3User] = (
    SHA256_AES,
    SHA_AES,
    SHA_AUTH_ONLY,
    MD5_DES,
    SHA224_AES192,
    SHA384_AES256,
    SHA512_AES,
    NO_AUTH,
)


@dataclass(frozen=True)
class Snmpd:
    """Address and credentials of one running snmpd."""

    port: int
    directory: Path
    host: str = HOST
    community: str = COMMUNITY
    users: Sequence[V3User] = USERS


def _config(users: Sequence[V3User]) -> str:
    lines = [
        f"sysDescr {SYS_DESCR}",
        f"sysName {SYS_NAME}",
        "sysLocation lab",
        "sysContact flows@example.test",
        f"rocommunity {COMMUNITY} {HOST}",
    ]
    for user in users:
        if user.auth_protocol is not None:
            words = [user.name, user.auth_protocol, f'"{user.auth_password}"']
            if user.priv_protocol is not None:
                words += [user.priv_protocol, f'"{user.priv_password}"']
            lines.append("createUser " + " ".join(words))
        else:
            lines.append(f"createUser {user.name}")
        lines.append(f"rouser {user.name} {user.level}")
    return "\n".join(lines) + "\n"


def snmpget(
    port: int, options: Sequence[str], oid: str = SYS_DESCR_OID, timeout_s: float = 1.0
) -> subprocess.CompletedProcess[str]:
    """Ask the agent for one OID with net-snmp's own client (no retries)."""
    return subprocess.run(
        [SNMPGET, "-t", str(timeout_s), "-r", "0", "-On", *options, f"udp:{HOST}:{port}", oid],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MIBS": ""},
    )


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, options: Sequence[str]) -> None:
    """Poll with snmpget (`options` say how to log in) until the agent answers, within
    START_TIMEOUT_S; fail at once if the agent exits."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the agent exited with code {proc.returncode}:\n{log_tail(log)}")
        answer = snmpget(port, options, timeout_s=_PROBE_TIMEOUT_S)
        if answer.returncode == 0:
            return
        time.sleep(0.05)  # a refused probe returns at once; do not spin
    raise RuntimeError(f"the agent did not answer within {START_TIMEOUT_S} s:\n{log_tail(log)}")


@contextlib.contextmanager
def run_snmpd(users: Sequence[V3User] = USERS) -> Iterator[Snmpd]:
    """Start snmpd on a free loopback UDP port; stop it by its PID on exit."""
    directory = Path(tempfile.mkdtemp(prefix="snmpd-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        (directory / "persist").mkdir()
        config = directory / "snmpd.conf"
        config.write_text(_config(users))
        log = directory / "snmpd.log"
        port = free_udp_port(HOST)
        env = {**os.environ, "SNMP_PERSISTENT_DIR": str(directory / "persist"), "MIBS": ""}
        # -f: stay in the foreground so the PID we hold is snmpd's own; -C: no /etc/snmp files
        proc = subprocess.Popen(
            [
                SNMPD,
                "-f",
                "-Lf",
                str(log),
                "-C",
                "-c",
                str(config),
                "-I",
                "-smux",
                "-p",
                str(directory / "snmpd.pid"),
                f"udp:{HOST}:{port}",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_ready(port, proc, log, ["-v2c", "-c", COMMUNITY])
        yield Snmpd(port=port, directory=directory, users=users)
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(directory, ignore_errors=True)
