"""Prove the Samba fixture with Samba's own clients: the answers the netbios and smb checks
are tested against come from a server that real clients see as working."""

from __future__ import annotations

import subprocess

from tests.peers.netns import IPTABLES
from tests.peers.samba import Samba

NMBLOOKUP = "/usr/bin/nmblookup"
SMBCLIENT = "/usr/bin/smbclient"
CLIENT_TIMEOUT_S = 30.0


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, check=False
    )


def test_nmblookup_reads_the_name_table(samba: Samba) -> None:
    """`nmblookup -A` (a node status request to UDP 137) lists the machine and workgroup names."""
    result = _run([NMBLOOKUP, "-A", samba.host])
    assert result.returncode == 0, result.stderr
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert f"{samba.netbios_name} <00> - B <ACTIVE>" in lines
    assert f"{samba.netbios_name} <20> - B <ACTIVE>" in lines
    assert f"{samba.workgroup} <00> - <GROUP> B <ACTIVE>" in lines
    assert "MAC Address = 00-00-00-00-00-00" in lines


def test_smbclient_lists_the_share_with_the_user(samba: Samba) -> None:
    """`smbclient -L` on 445 logs in as the fixture's user and sees its share."""
    result = _run([SMBCLIENT, "-L", f"//{samba.host}", "-U", f"{samba.user}%{samba.password}"])
    assert result.returncode == 0, result.stdout + result.stderr
    shares = [line.split()[0] for line in result.stdout.splitlines() if "Disk" in line]
    assert shares == [samba.share]


def test_smbclient_over_the_netbios_session_service(samba: Samba) -> None:
    """`smbclient -p 139` opens its session with a NetBIOS session request and lists shares."""
    result = _run(
        [
            SMBCLIENT,
            "-L",
            f"//{samba.netbios_name}",
            "-I",
            samba.host,
            "-p",
            str(samba.netbios_ssn_port),
            "-U",
            f"{samba.user}%{samba.password}",
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert samba.share in result.stdout


def test_wrong_password_is_refused(samba: Samba) -> None:
    """The user's password is checked: another one gets NT_STATUS_LOGON_FAILURE."""
    result = _run([SMBCLIENT, "-L", f"//{samba.host}", "-U", f"{samba.user}%not-the-password"])
    assert result.returncode != 0
    assert "NT_STATUS_LOGON_FAILURE" in result.stdout + result.stderr


def test_dropping_rule_is_removed_afterwards(samba: Samba) -> None:
    """A temporary DROP in the shared namespace is gone when its block ends."""
    with samba.namespace.dropping("tcp", samba.netbios_ssn_port):
        rules = samba.namespace.run([IPTABLES, "-S", "INPUT"])
        assert f"--dport {samba.netbios_ssn_port} -j DROP" in rules
    assert "DROP" not in samba.namespace.run([IPTABLES, "-S", "INPUT"])
