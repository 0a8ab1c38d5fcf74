"""A throwaway OpenLDAP slapd: ldap:// with StartTLS and two ldaps:// ports, a bindable user.

The two ldaps ports stand in for 636 and the global catalog's 3269 (slapd is no global
catalog). `root_dse` adds attributes to the RootDSE (slapd's `olcRootDSE` file) from a small
schema of Active Directory's RootDSE attributes, so a test can present an AD-like server that
says it is, or is not, a global catalog. The certificate is the session's per-run PKI.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.peers.pki import CertPair, Pki
from tests.peers.ports import free_tcp_port, wait_for_tcp
from tests.peers.procs import log_tail, stop_process

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SLAPMODIFY = "/usr/sbin/slapmodify"
SLAPPASSWD = "/usr/sbin/slappasswd"
HOST = "127.0.0.1"
SUFFIX = "dc=example,dc=test"
USER_DN = f"uid=alice,ou=people,{SUFFIX}"
USER_PASSWORD = "S3CR3T-LDAP-BIND-a11c"  # distinctive: the secrets test greps for it
# Active Directory publishes these in its RootDSE; OpenLDAP knows none of them, so the test
# schema defines them under OpenLDAP's experimental arc (1.3.6.1.4.1.4203.666).
_AD_ROOT_DSE_SCHEMA = """\
dn: cn=adrootdse,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: adrootdse
olcAttributeTypes: ( 1.3.6.1.4.1.4203.666.11.901 NAME 'dnsHostName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcAttributeTypes: ( 1.3.6.1.4.1.4203.666.11.902 NAME 'defaultNamingContext'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcAttributeTypes: ( 1.3.6.1.4.1.4203.666.11.903 NAME 'isGlobalCatalogReady'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcAttributeTypes: ( 1.3.6.1.4.1.4203.666.11.904 NAME 'domainControllerFunctionality'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcObjectClasses: ( 1.3.6.1.4.1.4203.666.11.900 NAME 'adRootDse' AUXILIARY
  MAY ( dnsHostName $ defaultNamingContext $ isGlobalCatalogReady $
  domainControllerFunctionality ) )
"""


AD_GLOBAL_CATALOG: Mapping[str, str] = {
    "dnsHostName": "dc1.example.test",
    "defaultNamingContext": SUFFIX,
    "isGlobalCatalogReady": "TRUE",
}


@dataclass(frozen=True)
class Slapd:
    """Ports and files of one running slapd."""

    ldap_port: int
    ldaps_port: int
    gc_port: int
    ca_cert: Path
    directory: Path
    host: str = HOST
    user_dn: str = USER_DN
    password: str = USER_PASSWORD


def _hash(password: str) -> str:
    return subprocess.run(
        [SLAPPASSWD, "-s", password], check=True, capture_output=True, text=True
    ).stdout.strip()


def _config_ldif(directory: Path, cert: CertPair, ca: Path) -> str:
    schemas = "".join(
        f"include: file:///etc/ldap/schema/{name}.ldif\n"
        for name in ("core", "cosine", "nis", "inetorgperson")
    )
    return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {directory}/slapd.pid
olcTLSCACertificateFile: {ca}
olcTLSCertificateFile: {cert.cert}
olcTLSCertificateKeyFile: {cert.key}

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schemas}
{_AD_ROOT_DSE_SCHEMA}
dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend
olcAccess: {{0}}to dn.base="" by * read
olcAccess: {{1}}to dn.base="cn=Subschema" by * read

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {SUFFIX}
olcRootDN: cn=admin,{SUFFIX}
olcDbDirectory: {directory}/data
olcDbMaxSize: 67108864
olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {{1}}to * by users read by anonymous read
"""


def _data_ldif() -> str:
    return f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example Test
dc: example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: {USER_DN}
objectClass: inetOrgPerson
uid: alice
cn: Alice Test
sn: Test
userPassword: {_hash(USER_PASSWORD)}
"""


@contextlib.contextmanager
def run_slapd(
    pki: Pki, *, cert: CertPair | None = None, root_dse: Mapping[str, str] | None = None
) -> Iterator[Slapd]:
    """Start slapd on three free loopback ports; stop it by its PID on exit.

    `cert` defaults to the PKI's valid certificate; `root_dse` adds AD-style RootDSE values.
    """
    directory = Path(tempfile.mkdtemp(prefix="slapd-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        (directory / "slapd.d").mkdir()
        (directory / "data").mkdir()
        config = directory / "config.ldif"
        config.write_text(_config_ldif(directory, cert or pki.valid, pki.ca_cert))
        data = directory / "data.ldif"
        data.write_text(_data_ldif())
        steps = [(SLAPADD, "0", config), (SLAPADD, "1", data)]
        if root_dse:
            # slapd reads the RootDSE file when the setting is loaded: after the schema only
            root_dse_file = directory / "rootdse.ldif"
            lines = ["dn:", "objectClass: adRootDse"]
            lines += [f"{name}: {value}" for name, value in root_dse.items()]
            root_dse_file.write_text("\n".join(lines) + "\n")
            change = directory / "rootdse-change.ldif"
            change.write_text(
                f"dn: cn=config\nchangetype: modify\nadd: olcRootDSE\nolcRootDSE: {root_dse_file}\n"
            )
            steps.append((SLAPMODIFY, "0", change))
        for tool, number, ldif in steps:
            subprocess.run(
                [tool, "-n", number, "-F", str(directory / "slapd.d"), "-l", str(ldif)],
                check=True,
                capture_output=True,
            )
        ports = (free_tcp_port(), free_tcp_port(), free_tcp_port())
        urls = f"ldap://{HOST}:{ports[0]}/ ldaps://{HOST}:{ports[1]}/ ldaps://{HOST}:{ports[2]}/"
        log = directory / "slapd.log"
        with log.open("wb") as log_file:
            # -d 0: stay in the foreground so the PID we hold is slapd's own
            proc = subprocess.Popen(
                [SLAPD, "-d", "0", "-F", str(directory / "slapd.d"), "-h", urls],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            for port in ports:
                wait_for_tcp(HOST, port, proc=proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\nslapd log:\n{log_tail(log)}") from exc
        yield Slapd(ports[0], ports[1], ports[2], pki.ca_cert, directory)
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(directory, ignore_errors=True)
