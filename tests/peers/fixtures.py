"""pytest fixtures for real peers; load with `pytest_plugins = ["tests.peers.fixtures"]`.

Daemons are session-scoped because each start costs a process and ports; the namespace is
function-scoped because tests add their own filter rules to it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.peers import netns as peers_netns
from tests.peers import nginx as peers_nginx
from tests.peers import pki as peers_pki
from tests.peers import pysnmp_agent as peers_pysnmp
from tests.peers import samba as peers_samba
from tests.peers import slapd as peers_slapd
from tests.peers import snmpd as peers_snmpd
from tests.peers import squid as peers_squid
from tests.peers import sshd as peers_sshd
from tests.peers.derby import derby
from tests.peers.samba_smb import samba_smb, samba_smb1_only

__all__ = [
    "derby",
    "isolated_host",
    "nginx",
    "pki",
    "pysnmp_agent",
    "samba",
    "samba_smb",
    "samba_smb1_only",
    "slapd",
    "snmpd",
    "squid",
    "sshd",
]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> peers_pki.Pki:
    """CA plus valid, expired and wrong-host server certificates, made once per session."""
    return peers_pki.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def sshd() -> Iterator[peers_sshd.Sshd]:
    """A real OpenSSH server on a free loopback port for the whole session."""
    with peers_sshd.run_sshd() as server:
        yield server


@pytest.fixture(scope="session")
def nginx(pki: peers_pki.Pki) -> Iterator[peers_nginx.Nginx]:
    """One real nginx with valid/expired/wrong-host TLS ports and a plain HTTP port."""
    with peers_nginx.run_nginx(pki) as server:
        yield server


@pytest.fixture(scope="session")
def slapd(pki: peers_pki.Pki) -> Iterator[peers_slapd.Slapd]:
    """A real OpenLDAP slapd whose RootDSE reads like an Active Directory global catalog."""
    with peers_slapd.run_slapd(pki, root_dse=peers_slapd.AD_GLOBAL_CATALOG) as server:
        yield server


@pytest.fixture(scope="session")
def samba() -> Iterator[peers_samba.Samba]:
    """A real Samba (smbd on 445 and 139, nmbd on UDP 137) in a namespace of its own."""
    with peers_samba.run_samba() as server:
        yield server


@pytest.fixture(scope="session")
def squid() -> Iterator[peers_squid.Squid]:
    """A real squid with an open port, a basic-auth port and one destination port denied."""
    with peers_squid.run_squid() as server:
        yield server


@pytest.fixture(scope="session")
def snmpd() -> Iterator[peers_snmpd.Snmpd]:
    """A real net-snmp agent with a v2c community and v3 users of every security level."""
    with peers_snmpd.run_snmpd() as agent:
        yield agent


@pytest.fixture(scope="session")
def pysnmp_agent() -> Iterator[peers_pysnmp.PysnmpAgent]:
    """pysnmp's own engine as an agent: 3DES and the "Cisco" AES users net-snmp lacks."""
    with peers_pysnmp.run_pysnmp_agent() as agent:
        yield agent


@pytest.fixture
def isolated_host() -> Iterator[peers_netns.IsolatedHost]:
    """A fresh network namespace per test, so filter rules never leak between tests."""
    with peers_netns.isolated_host() as host:
        yield host
