"""The spec-written SQL Server and Browser (tests/fakes/tds.py), proven by independent clients.

FreeTDS's `tsql` (Debian freetds-bin, its own TDS and SSRP code) and pymssql (a static FreeTDS of
another version, driven through DB-API) log in, fail with 18456, list the Browser's instances
and resolve a named instance through it; nmap's `ms-sql-info` (nselib/mssql.lua, Lua code of its
own) finds the instance through the Browser and reads the version from the fake's PRELOGIN answer.
A fake only our own check talked to would prove nothing.

TLS inside TDS: tsql (GnuTLS) and pymssql (OpenSSL) with encryption requested or required make
the handshake inside PRELOGIN packets and log in with LOGIN7 inside TLS (or only LOGIN7 inside
TLS when the answer is ENCRYPT_OFF); pymssql's FreeTDS 1.5 in TDS 8.0 strict mode (set through
freetds.conf, which pymssql's own `encryption` argument does not offer) logs in over TLS with
ALPN tds/8.0 and, verifying certificates in that mode, rejects the expired one as the check does.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

import pymssql
import pytest

from tests.fakes.tds import (
    ENCRYPT_NOT_SUP,
    ENCRYPT_OFF,
    ENCRYPT_ON,
    SERVER_NAME,
    VERSION_TEXT,
    TdsFake,
    browser,
    tds_server,
)
from tests.peers.pki import CertPair, Pki

USER = "monitor"
PASSWORD = "Corr3ct-Horse"
TSQL = "/usr/bin/tsql"
NMAP = "/usr/bin/nmap"
CLIENT_TIMEOUT_S = 30.0  # a bound for a hung client, never reached when the fake answers


def _loopback_address() -> str:
    """A loopback address of its own: `tsql -L` always asks UDP port 1434 there."""
    return f"127.{random.randint(64, 250)}.{random.randint(1, 250)}.{random.randint(1, 250)}"


async def _run(
    *argv: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run a client to completion; stdout and stderr together (tsql writes lists to stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    async with asyncio.timeout(CLIENT_TIMEOUT_S):
        out, _ = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def _tsql(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> tuple[int, str]:
    return await _run(TSQL, *args, stdin=stdin, env=env)


def _pymssql_version(port: int, password: str, encryption: str | None = None) -> str:
    connection = pymssql.connect(
        server="127.0.0.1",
        port=str(port),
        user=USER,
        password=password,
        login_timeout=5,
        encryption=encryption,
    )
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT @@VERSION")
        row = cursor.fetchone()
    finally:
        connection.close()
    assert row is not None
    return str(row[0])


async def test_tsql_logs_in_and_reads_the_version() -> None:
    """tsql's pre-login, LOGIN7 and batch reach the fake, which answers @@VERSION."""
    async with tds_server(USER, PASSWORD) as fake:
        code, out = await _tsql(
            "-H",
            "127.0.0.1",
            "-p",
            str(fake.port),
            "-U",
            USER,
            "-P",
            PASSWORD,
            stdin=b"SELECT @@VERSION\ngo\nexit\n",
        )
    assert code == 0, out
    assert VERSION_TEXT in out
    assert "(1 row affected)" in out
    assert fake.logins == [(USER, True)]


async def test_tsql_wrong_password_gets_18456() -> None:
    """A wrong password reaches the fake's LOGIN7 check and tsql prints SQL Server's 18456."""
    async with tds_server(USER, PASSWORD) as fake:
        code, out = await _tsql(
            "-H", "127.0.0.1", "-p", str(fake.port), "-U", USER, "-P", "wrong", stdin=b"exit\n"
        )
    assert code != 0
    assert f"Msg 18456 (severity 14, state 1) from {SERVER_NAME}" in out
    assert f"Login failed for user '{USER}'." in out
    assert fake.logins == [(USER, False)]


async def test_pymssql_logs_in_and_fails_with_18456() -> None:
    """pymssql's own FreeTDS logs in with the right password and gets 18456 with a wrong one."""
    async with tds_server(USER, PASSWORD) as fake:
        version = await asyncio.to_thread(_pymssql_version, fake.port, PASSWORD)
        with pytest.raises(pymssql.OperationalError) as raised:
            await asyncio.to_thread(_pymssql_version, fake.port, "wrong")
    assert version == VERSION_TEXT
    assert raised.value.args[0][0] == 18456
    assert fake.logins == [(USER, True), (USER, False)]


async def test_tsql_lists_the_browser_instances() -> None:
    """`tsql -L` (CLNT_UCAST_EX to UDP 1434) prints every instance with its TCP port."""
    address = _loopback_address()
    async with browser({"SQLEXPRESS": 49172, "MSSQLSERVER": 1433}, host=address, port=1434) as peer:
        code, out = await _tsql("-LH", address, stdin=b"")
    assert code == 0
    assert peer.received == [b"\x03"]
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert f"ServerName {SERVER_NAME}" in lines
    assert [line for line in lines if line.startswith("InstanceName")] == [
        "InstanceName SQLEXPRESS",
        "InstanceName MSSQLSERVER",
    ]
    assert [line for line in lines if line.startswith("tcp ")] == ["tcp 49172", "tcp 1433"]


async def test_tsql_resolves_a_named_instance_and_logs_in(tmp_path: Path) -> None:
    """FreeTDS with `instance =` asks the Browser for the port, then logs in on that port."""
    address = _loopback_address()
    conf = tmp_path / "freetds.conf"
    async with (
        tds_server(USER, PASSWORD, host=address) as fake,
        browser({"SQLEXPRESS": fake.port}, host=address, port=1434) as peer,
    ):
        conf.write_text(
            f"[fakesql]\n\thost = {address}\n\tinstance = SQLEXPRESS\n", encoding="utf-8"
        )
        code, out = await _tsql(
            "-S",
            "fakesql",
            "-U",
            USER,
            "-P",
            PASSWORD,
            stdin=b"SELECT @@VERSION\ngo\nexit\n",
            env={"FREETDSCONF": str(conf), "PATH": "/usr/bin:/bin"},
        )
    assert code == 0, out
    assert VERSION_TEXT in out
    assert peer.received[:1] == [b"\x04SQLEXPRESS\x00"]
    assert fake.logins == [(USER, True)]


async def test_nmap_ms_sql_info_finds_the_instance_and_reads_its_version() -> None:
    """nmap asks the Browser on UDP 1434, then sends PRELOGIN to the TCP port it was told.

    nmap 7.93's ms-sql-info prints no result table for any server (nmap issue #2622: its
    portrule path indexes a nil instance list at nselib/mssql.lua:3334, and its host-rule path
    tests `#output > 0` on a table keyed by instance name), so the proof is its debug trace:
    "Retrieved SSNetLib version" is logged only once mssql.lua has parsed the PRELOGIN VERSION
    option, and the branded version it looks up from that number is 2022. The TCP port is left
    out of the port list, so the host rule, not the broken port rule, reaches the instance.
    """
    address = _loopback_address()
    async with (
        tds_server(USER, PASSWORD, host=address) as fake,
        browser({"SQLEXPRESS": fake.port}, host=address, port=1434) as peer,
    ):
        code, out = await _run(
            NMAP,
            "-Pn",
            "-n",
            "-sU",
            "-p",
            "U:1434",
            "--script",
            "ms-sql-info",
            "--script-args",
            "mssql.instance-all",
            "-d2",
            address,
        )
    assert code == 0, out
    assert b"\x03" in peer.received
    assert f"Version;16.0.4135.4;tcp;{fake.port};" in out
    messages = [line.split("] ", 1)[1] for line in out.splitlines() if "[ms-sql-info " in line]
    retrieved = messages.index(f"Retrieved SSNetLib version for {address}\\SQLEXPRESS.")
    assert messages[retrieved - 1] == "brandedVersion: 2022, #lookup: 9"


def _encrypting_conf(path: Path, port: int, encryption: str) -> dict[str, str]:
    """A freetds.conf with one server entry `fakesql` and the environment that points at it."""
    path.write_text(
        f"[fakesql]\n\thost = 127.0.0.1\n\tport = {port}\n\ttds version = 7.4\n"
        f"\tencryption = {encryption}\n",
        encoding="utf-8",
    )
    return {"FREETDSCONF": str(path), "PATH": "/usr/bin:/bin"}


async def test_tsql_with_encryption_required_logs_in_inside_tls(tmp_path: Path, pki: Pki) -> None:
    """tsql (`encryption = require`) handshakes inside PRELOGIN, then logs in inside TLS."""
    async with tds_server(USER, PASSWORD, encryption=ENCRYPT_ON, certificate=pki.valid) as fake:
        env = _encrypting_conf(tmp_path / "freetds.conf", fake.port, "require")
        code, out = await _tsql(
            "-S",
            "fakesql",
            "-U",
            USER,
            "-P",
            PASSWORD,
            stdin=b"SELECT @@VERSION\ngo\nexit\n",
            env=env,
        )
    assert code == 0, out
    assert VERSION_TEXT in out
    assert fake.client_encryption == [ENCRYPT_ON]
    assert fake.handshakes == ["TLSv1.2"]
    assert fake.encrypted_logins == [True]
    assert fake.logins == [(USER, True)]


async def test_tsql_with_encryption_required_gets_18456_inside_tls(
    tmp_path: Path, pki: Pki
) -> None:
    """A wrong password inside TLS: tsql prints the fake's 18456, read through TLS records."""
    async with tds_server(USER, PASSWORD, encryption=ENCRYPT_ON, certificate=pki.valid) as fake:
        env = _encrypting_conf(tmp_path / "freetds.conf", fake.port, "require")
        code, out = await _tsql(
            "-S", "fakesql", "-U", USER, "-P", "wrong", stdin=b"exit\n", env=env
        )
    assert code != 0
    assert f"Msg 18456 (severity 14, state 1) from {SERVER_NAME}" in out
    assert fake.encrypted_logins == [True]
    assert fake.logins == [(USER, False)]


async def test_tsql_requiring_encryption_leaves_a_server_without_it(
    tmp_path: Path,
) -> None:
    """The fake's ENCRYPT_NOT_SUP answer makes tsql requiring encryption give up before LOGIN7."""
    async with tds_server(USER, PASSWORD) as fake:
        env = _encrypting_conf(tmp_path / "freetds.conf", fake.port, "require")
        code, out = await _tsql(
            "-S", "fakesql", "-U", USER, "-P", PASSWORD, stdin=b"exit\n", env=env
        )
    assert code != 0
    assert "Adaptive Server connection failed" in out
    assert fake.client_encryption == [ENCRYPT_ON]
    assert fake.logins == []


@pytest.mark.parametrize(
    ("server", "encryption", "client_sends", "encrypted_login"),
    [
        (ENCRYPT_OFF, "request", ENCRYPT_OFF, True),  # the answer ENCRYPT_OFF: LOGIN7 only
        (ENCRYPT_ON, "require", ENCRYPT_ON, True),  # the whole connection
        (ENCRYPT_OFF, "off", ENCRYPT_NOT_SUP, False),  # no TLS at all
    ],
)
async def test_pymssql_logs_in_through_each_encryption_mode(
    pki: Pki, server: int, encryption: str, client_sends: int, encrypted_login: bool
) -> None:
    """pymssql's OpenSSL FreeTDS logs in through login-only, full and no encryption alike."""
    async with tds_server(USER, PASSWORD, encryption=server, certificate=pki.valid) as fake:
        version = await asyncio.to_thread(_pymssql_version, fake.port, PASSWORD, encryption)
    assert version == VERSION_TEXT
    assert fake.client_encryption == [client_sends]
    assert fake.handshakes == (["TLSv1.2"] if encrypted_login else [])
    assert fake.encrypted_logins == [encrypted_login]


async def test_pymssql_refused_by_a_server_forcing_encryption(pki: Pki) -> None:
    """A client that cannot encrypt (ENCRYPT_NOT_SUP) is turned away by a forcing server.

    The error number is not asserted: pymssql reports the last FreeTDS message of its thread,
    which may be an earlier test's.
    """
    async with tds_server(USER, PASSWORD, encryption=ENCRYPT_ON, certificate=pki.valid) as fake:
        with pytest.raises(pymssql.OperationalError):
            await asyncio.to_thread(_pymssql_version, fake.port, PASSWORD, "off")
    assert fake.client_encryption == [ENCRYPT_NOT_SUP]
    assert fake.handshakes == []
    assert fake.logins == []


async def _pymssql_strict(
    tmp_path: Path, pki: Pki, certificate: CertPair
) -> tuple[int, str, TdsFake]:
    """pymssql in a process of its own with freetds.conf saying `encryption = strict`."""
    conf = tmp_path / "freetds.conf"
    conf.write_text(
        f"[global]\n\tencryption = strict\n\tca file = {pki.ca_cert}\n", encoding="utf-8"
    )
    async with tds_server(USER, PASSWORD, certificate=certificate, strict=True) as fake:
        script = (
            "import pymssql\n"
            f"c = pymssql.connect(server='127.0.0.1', port='{fake.port}', user='{USER}',"
            f" password='{PASSWORD}', login_timeout=5)\n"
            "cursor = c.cursor()\ncursor.execute('SELECT @@VERSION')\nprint(cursor.fetchone()[0])\n"
        )
        code, out = await _run(
            sys.executable, "-c", script, env={"FREETDSCONF": str(conf), "PATH": "/usr/bin:/bin"}
        )
    return code, out, fake


async def test_pymssql_strict_logs_in_over_tds8(tmp_path: Path, pki: Pki) -> None:
    """FreeTDS 1.5 strict: TLS with ALPN tds/8.0 first, pre-login and login inside it."""
    code, out, fake = await _pymssql_strict(tmp_path, pki, pki.valid)
    assert code == 0, out
    assert VERSION_TEXT in out
    assert fake.alpn == ["tds/8.0"]
    assert fake.handshakes == ["TLSv1.3"]
    assert fake.encrypted_logins == [True]
    assert fake.logins == [(USER, True)]


async def test_pymssql_strict_rejects_the_expired_certificate(tmp_path: Path, pki: Pki) -> None:
    """FreeTDS verifies in strict mode: the expired certificate ends it before any pre-login."""
    code, out, fake = await _pymssql_strict(tmp_path, pki, pki.expired)
    assert code != 0
    assert "20002" in out
    assert fake.client_encryption == []
    assert fake.logins == []
