"""A second, independent SNMPv3 agent: pysnmp's own engine as a command responder.

net-snmp on Debian has no 3DES and no "Cisco" (draft-reeder) AES-192/256 key extension, so
these users live here, answered by pysnmp's SnmpEngine, whose USM (message processing, key
localization, digest and decryption) shares nothing with the check's exchange but the cipher
services. Unlike net-snmp, pysnmp reports usmStatsDecryptionErrors for a request it cannot
decrypt (RFC 3414 3.2 step 8), which makes it the real peer for that report. It runs in its own
process on a free loopback UDP port and is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.peers.ports import free_udp_port
from tests.peers.procs import stop_process
from tests.peers.snmpd import HOST, V3User, wait_ready

AUTH_PASSWORD = "S3CR3T-PYSNMP-AUTH-e41"
PRIV_PASSWORD = "S3CR3T-PYSNMP-PRIV-b07"
# net-snmp spelling → pysnmp's config constant names.
_AUTH = {
    "MD5": "USM_AUTH_HMAC96_MD5",
    "SHA": "USM_AUTH_HMAC96_SHA",
    "SHA-256": "USM_AUTH_HMAC192_SHA256",
    "SHA-512": "USM_AUTH_HMAC384_SHA512",
}
_PRIV = {
    "3DES": "USM_PRIV_CBC168_3DES",
    "AES-192-C": "USM_PRIV_CFB192_AES",
    "AES-256-C": "USM_PRIV_CFB256_AES",
    "AES-256": "USM_PRIV_CFB256_AES_BLUMENTHAL",
}
USERS: Sequence[V3User] = (
    V3User("pysnmp-sha-3des", "SHA", AUTH_PASSWORD, "3DES", PRIV_PASSWORD),
    V3User("pysnmp-sha256-aes192c", "SHA-256", AUTH_PASSWORD, "AES-192-C", PRIV_PASSWORD),
    V3User("pysnmp-md5-aes256c", "MD5", AUTH_PASSWORD, "AES-256-C", PRIV_PASSWORD),
    V3User("pysnmp-sha512-aes256", "SHA-512", AUTH_PASSWORD, "AES-256", PRIV_PASSWORD),
)
PROOF_USER = USERS[3]  # protocols net-snmp's snmpget knows too, for readiness and the peer test

_AGENT_CODE = """\
import sys
from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config, engine
from pysnmp.entity.rfc3413 import cmdrsp, context

host, port = sys.argv[1], int(sys.argv[2])
snmp_engine = engine.SnmpEngine()
transport = udp.UdpTransport().open_server_mode((host, port))
config.add_transport(snmp_engine, udp.DOMAIN_NAME, transport)
for line in sys.stdin.read().splitlines():
    name, auth, auth_key, priv, priv_key = line.split()
    config.add_v3_user(
        snmp_engine, name, getattr(config, auth), auth_key, getattr(config, priv), priv_key
    )
    config.add_vacm_user(snmp_engine, 3, name, "authPriv", (1, 3, 6, 1, 2, 1))
cmdrsp.GetCommandResponder(snmp_engine, context.SnmpContext(snmp_engine))
snmp_engine.transport_dispatcher.job_started(1)
snmp_engine.open_dispatcher()
"""


@dataclass(frozen=True)
class PysnmpAgent:
    """Where the pysnmp agent listens and who may log in."""

    port: int
    host: str = HOST
    users: Sequence[V3User] = USERS


@contextlib.contextmanager
def run_pysnmp_agent() -> Iterator[PysnmpAgent]:
    """Start the agent on a free loopback UDP port; stop it by its PID on exit."""
    directory = Path(tempfile.mkdtemp(prefix="pysnmp-agent-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        port = free_udp_port(HOST)
        log = directory / "agent.log"
        table = "".join(
            f"{user.name} {_AUTH[str(user.auth_protocol)]} {user.auth_password} "
            f"{_PRIV[str(user.priv_protocol)]} {user.priv_password}\n"
            for user in USERS
        )
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-c", _AGENT_CODE, HOST, str(port)],
                stdin=subprocess.PIPE,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        assert proc.stdin is not None
        with proc.stdin:  # the pass phrases go through a pipe, never the command line
            proc.stdin.write(table.encode())
        wait_ready(port, proc, log, PROOF_USER.snmpget_options())
        yield PysnmpAgent(port=port)
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(directory, ignore_errors=True)
