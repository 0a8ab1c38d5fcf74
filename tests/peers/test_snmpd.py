"""Prove the SNMP agents (snmpd, pysnmp's engine) with net-snmp's own client before the check's
tests rely on them."""

from __future__ import annotations

import pytest

from tests.peers.pysnmp_agent import PROOF_USER, PysnmpAgent
from tests.peers.snmpd import SYS_DESCR, SYS_NAME, USERS, Snmpd, V3User, snmpget

SYS_NAME_OID = "1.3.6.1.2.1.1.5.0"


def test_snmpget_reads_sys_descr_and_sys_name_with_the_community(snmpd: Snmpd) -> None:
    """The v2c community reads the agent's sysDescr and sysName."""
    answer = snmpget(snmpd.port, ["-v2c", "-c", snmpd.community])
    assert answer.returncode == 0, answer.stderr
    assert f'.1.3.6.1.2.1.1.1.0 = STRING: "{SYS_DESCR}"' in answer.stdout
    answer = snmpget(snmpd.port, ["-v2c", "-c", snmpd.community], SYS_NAME_OID)
    assert f'.1.3.6.1.2.1.1.5.0 = STRING: "{SYS_NAME}"' in answer.stdout


@pytest.mark.parametrize("user", USERS, ids=[user.name for user in USERS])
def test_snmpget_logs_in_as_every_v3_user(snmpd: Snmpd, user: V3User) -> None:
    """Each v3 user works at its level with its protocols, as net-snmp spells them."""
    answer = snmpget(snmpd.port, user.snmpget_options())
    assert answer.returncode == 0, answer.stderr
    assert f'STRING: "{SYS_DESCR}"' in answer.stdout


def test_snmpget_sees_the_failures_the_check_must_classify(snmpd: Snmpd) -> None:
    """A wrong community is silence, a wrong auth password and an unknown user are reported."""
    answer = snmpget(snmpd.port, ["-v2c", "-c", "not-the-community"], timeout_s=0.3)
    assert answer.returncode != 0
    assert "Timeout" in answer.stderr
    user = USERS[0]
    wrong = V3User(
        user.name, user.auth_protocol, "wrong-auth-pass", user.priv_protocol, user.priv_password
    )
    answer = snmpget(snmpd.port, wrong.snmpget_options())
    assert "Authentication failure" in answer.stderr
    nobody = V3User("certero-nobody", user.auth_protocol, user.auth_password)
    answer = snmpget(snmpd.port, nobody.snmpget_options())
    assert "Unknown user name" in answer.stderr


def test_snmpget_reads_the_pysnmp_agent(pysnmp_agent: PysnmpAgent) -> None:
    """net-snmp's client logs in to pysnmp's agent (SHA-512, AES-256) and reads its sysDescr."""
    answer = snmpget(pysnmp_agent.port, PROOF_USER.snmpget_options())
    assert answer.returncode == 0, answer.stderr
    assert 'STRING: "PySNMP engine version' in answer.stdout
