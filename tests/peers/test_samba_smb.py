"""Prove the Samba peer with clients independent of the `smb` check: smbclient and impacket."""

from __future__ import annotations

import subprocess

import pytest
from impacket.smbconnection import SessionError, SMBConnection

from exporter.blocking import BlockingPool
from exporter.checks import CHECKS, Target
from exporter.checks.smb import SmbSettings
from exporter.result import PeerInfo, Result
from exporter.runner import run_check
from tests.peers.samba_smb import ADMIN_SHARE, DENIED_SHARE, SMBCLIENT, SambaSmb

CLIENT_TIMEOUT_S = 30


def _smbclient(samba: SambaSmb, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SMBCLIENT, "-p", str(samba.port), "-U", f"{samba.user}%{samba.password}", *args],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )


def test_smbclient_lists_the_shares_and_is_refused_the_denied_one(samba_smb: SambaSmb) -> None:
    """smbclient logs in, lists ADMIN$ and denied, reads ADMIN$ and is refused denied."""
    listing = _smbclient(samba_smb, "-L", f"//{samba_smb.host}")
    assert listing.returncode == 0, listing.stderr
    shares = {line.split()[0] for line in listing.stdout.splitlines() if "Disk" in line}
    assert shares == {ADMIN_SHARE, DENIED_SHARE}
    admin = _smbclient(samba_smb, f"//{samba_smb.host}/{ADMIN_SHARE}", "-c", "ls")
    assert admin.returncode == 0, admin.stderr
    assert "README.txt" in admin.stdout
    denied = _smbclient(samba_smb, f"//{samba_smb.host}/{DENIED_SHARE}", "-c", "ls")
    assert denied.returncode != 0
    assert "NT_STATUS_ACCESS_DENIED" in denied.stdout + denied.stderr


def _impacket_facts(samba: SambaSmb) -> SMBConnection:
    """impacket's view after a refused login: the challenge's facts are read before it."""
    connection = SMBConnection(samba.netbios_name, samba.host, sess_port=samba.port, timeout=10)
    with pytest.raises(SessionError) as refused:
        connection.login(samba.user, "not-the-password")
    assert refused.value.getErrorCode() == 0xC000006D  # STATUS_LOGON_FAILURE
    return connection


async def test_check_reports_what_impacket_reads(samba_smb: SambaSmb) -> None:
    """Dialect, OS version and names in the check's result are those impacket reads."""
    connection = _impacket_facts(samba_smb)
    try:
        dialect = connection.getDialect()
        version = (
            connection.getServerOSMajor(),
            connection.getServerOSMinor(),
            connection.getServerOSBuild(),
        )
        netbios = connection.getServerName()
        dns_host = connection.getServerDNSHostName()
        # impacket leaves the domain empty when it repeats the computer name (a standalone host)
        domain = connection.getServerDomain() or netbios
    finally:
        connection.close()
    assert (dialect, version, netbios) == (0x0311, (6, 1, 0), samba_smb.netbios_name)
    with BlockingPool(1) as pool:
        outcome = await run_check(
            CHECKS["smb"], Target(samba_smb.host, samba_smb.port), SmbSettings(), 5.0, blocking=pool
        )
    assert outcome.result.result is Result.OK
    assert outcome.result.detail == (
        "SMB 3.1.1, signing required; Samba (NTLM version 6.1.0); "
        f"NetBIOS '{netbios}' in '{domain}', DNS '{dns_host}'"
    )
    assert outcome.result.peer == PeerInfo("Samba", "SMB 3.1.1, signing required")


def test_impacket_sees_signing_required_at_dialect_3_0(samba_smb: SambaSmb) -> None:
    """At 3.0, where impacket takes the server's SecurityMode as it is, signing is required."""
    connection = SMBConnection(
        samba_smb.netbios_name,
        samba_smb.host,
        sess_port=samba_smb.port,
        timeout=10,
        preferredDialect=0x0300,
    )
    try:
        assert connection.getDialect() == 0x0300
        assert connection.isSigningRequired()
    finally:
        connection.close()


def test_smb1_only_server_refuses_smb2_clients(samba_smb1_only: SambaSmb) -> None:
    """smbclient offering SMB2 and later only cannot reach the SMB1-only server; NT1 can."""
    modern = _smbclient(samba_smb1_only, "-m", "SMB3", "-L", f"//{samba_smb1_only.host}")
    assert modern.returncode != 0
    old = _smbclient(
        samba_smb1_only,
        "--option=client min protocol=NT1",
        "-m",
        "NT1",
        f"//{samba_smb1_only.host}/{ADMIN_SHARE}",
        "-c",
        "ls",
    )
    assert old.returncode == 0, old.stdout + old.stderr
    assert "README.txt" in old.stdout
