"""The registry of protocol checks: check id → its settings model and coroutine.

Adding a protocol means adding one module beside this file and one line here; the scheduler,
store, collector and web server only ever see `CheckSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping

from exporter.checks import (
    db2,
    https,
    icmp,
    ldap,
    mssql,
    netbios,
    oracle_tns,
    sap,
    smb,
    snmp,
    ssh,
    tcp,
    tls,
    vsphere,
    xenapi,
)
from exporter.checks.base import AnyCheckSpec, CheckContext, CheckSettings, CheckSpec, Target

CHECKS: Mapping[str, AnyCheckSpec] = {
    spec.name: spec
    for spec in (
        tcp.SPEC,
        tls.SPEC,
        https.HTTPS_SPEC,
        https.HTTP_SPEC,
        icmp.SPEC,
        ssh.SPEC,
        mssql.SPEC,
        mssql.BROWSER_SPEC,
        netbios.NS_SPEC,
        netbios.SSN_SPEC,
        db2.SPEC,
        oracle_tns.SPEC,
        ldap.LDAP_SPEC,
        ldap.LDAPS_SPEC,
        smb.SPEC,
        vsphere.SPEC,
        xenapi.SPEC,
        sap.SPEC,
        snmp.SPEC,
    )
}

__all__ = ["CHECKS", "AnyCheckSpec", "CheckContext", "CheckSettings", "CheckSpec", "Target"]
