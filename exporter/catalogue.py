"""Certero's port table as data: every row is a built-in, named flow.

The table (Certero's "What communications ports are used by Certero?") has 27 rows; the two
ICMP rows describe one flow with two reasons, so there are 26 flows. Its known errata are
corrected here and each correction is stated in `erratum` so that `catalogue` shows it:

* the SQL Server Browser row says TCP 1434; the Browser answers on UDP 1434 (MC-SQLR);
* the SAP row's footnote text is the Oracle row's; SAP dispatchers listen on 32NN;
* the fifth 1433 row says "ILMT on SQL" but its reason is BigFix Inventory: it is the BigFix flow;
* "HTTP S" is HTTPS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Transport(StrEnum):
    """What crosses the firewall."""

    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"


class VantagePoint(StrEnum):
    """Where an exporter stands: the table's "From" column."""

    ENDPOINT_SERVER = "endpoint_server"
    APPLICATION_SERVER = "application_server"
    CLIENT = "client"


class Role(StrEnum):
    """Destination roles: the table's "To" column; the config lists hosts per role."""

    ENDPOINT_NETWORKS = "endpoint_networks"
    IBM_HMC = "ibm_hmc"
    DOMAIN_CONTROLLERS = "domain_controllers"
    APPLICATION_SERVER = "application_server"
    ENDPOINT_SERVER = "endpoint_server"
    VSPHERE = "vsphere"
    XENSERVER = "xenserver"
    ORACLE_DATABASES = "oracle_databases"
    DATABASE_SERVER = "database_server"
    SAP_SYSTEMS = "sap_systems"
    ILMT_DB2 = "ilmt_db2"
    ILMT_SQL = "ilmt_sql"
    BIGFIX_DB2 = "bigfix_db2"
    BIGFIX_SQL = "bigfix_sql"
    SCCM_SQL = "sccm_sql"
    CUSTOMER_CENTRE = "customer_centre"


FOOTNOTES: Mapping[str, str] = {
    "*": "Custom SSH ports other than TCP port 22 can be used",
    "**": "Any HTTP or HTTPS port can be configured for Endpoint Server to Application Server "
    "communication",
    "***": "TCP port 1521 is the default port for Oracle. However, if Oracle has been configured "
    "to use non-standard ports Certero will require access to these ports",
    "****": "SQL Server may be configured to use Dynamic Ports. If this is the case, a range of "
    "ports will need to be opened. The SQL Server Browser service will direct clients to the "
    "correct port to use.",
    "*****": "DB2 may be configured on a different port than the default of 50,000",
}


@dataclass(frozen=True, slots=True)
class TableRow:
    """One row of the port table exactly as published (number counts from 1)."""

    number: int
    protocol: str
    port: str
    source: str
    destination: str
    reason: str


@dataclass(frozen=True, slots=True)
class Flow:
    """A built-in flow: one or more table rows, corrected, with the check that proves it."""

    id: str
    transport: Transport
    port: int | None
    source: VantagePoint
    destination: Role
    check: str
    rows: tuple[TableRow, ...]
    footnote: str = ""
    port_range: tuple[int, int] | None = None
    optional: bool = False
    erratum: str = ""
    # Settings this flow gives its check unless the config sets them (key, value).
    settings: tuple[tuple[str, object], ...] = ()

    @property
    def severity(self) -> str:
        """How hard a broken flow pages by default (`flows.<id>.severity` overrides it)."""
        return "critical" if self.id in CRITICAL_FLOWS else "warning"

    @property
    def reason(self) -> str:
        """The table's reason text (both reasons where two rows describe this flow)."""
        return " / ".join(row.reason for row in self.rows)

    @property
    def port_text(self) -> str:
        """Port as shown to humans: `22`, `3200-3299`, or `-` for ICMP."""
        if self.port_range is not None:
            return f"{self.port_range[0]}-{self.port_range[1]}"
        return "-" if self.port is None else str(self.port)


_ES = "Endpoint Server"
_NETS = "All Endpoint Networks"
_DC = "Domain Controller(s)"
_CLIENTS = "Desktops, Laptops and Servers"
_AD_REASON = "Active Directory Connector which imports Users, Groups and Computers"
_ORACLE_REASON = (
    "Communication between the Endpoint Server and Oracle databases.  The default port is1521, "
    "however, this port may have been changed by the Oracle DBA"
)
_WINDOWS_OS = "Network Discovery Service to determine the target operating system of a Windows PC."

TABLE: tuple[TableRow, ...] = (
    TableRow(1, "TCP", "22 (SSH)*", _ES, _NETS,
             "Network discovery services when discovering SNMP devices. Used for agent "
             "deployment or agentless inventory of Unix, Linux and Apple Mac."),
    TableRow(2, "TCP", "22 (SSH)", _ES, "IBM HMC",
             "Communication between Endpoint server and IBM HMC about Physical Hosts, Virtual "
             "Machines and the relationships between them."),
    TableRow(3, "UDP", "161 (SNMP)", _ES, _NETS,
             "Network discovery services when discovering SNMP enabled devices"),
    TableRow(4, "UDP", "137 (NetBIOS over TCP/IP)", _ES, _NETS, _WINDOWS_OS),
    TableRow(5, "TCP", "445 (SMB)", _ES, _NETS,
             "Network Discovery Service to determine the target operating system of a Windows "
             "PC. Used for Agent deployment or agentless inventory when connecting to "
             "administrative shares"),
    TableRow(6, "ICMP v4", "Ping", _ES, _NETS, "Windows remote inventory"),
    TableRow(7, "TCP", "139 (NetBIOS over TCP/IP)", _ES, _NETS, _WINDOWS_OS),
    TableRow(8, "TCP", "389 (LDAP)", _ES, _DC, _AD_REASON),
    TableRow(9, "TCP", "636 (LDAPS)", _ES, _DC, f"{_AD_REASON} when using secure LDAP"),
    TableRow(10, "TCP", "3269 (LDAPS)", _ES, _DC,
             f"{_AD_REASON} when using secure LDAP against a Global Catalog Server"),
    TableRow(11, "ICMP", "Ping", _ES, _NETS,
             "Network Discovery Service to assist in identifying other devices on the network "
             "that do not respond to NetBIOS or SNMP"),
    TableRow(12, "HTTPS", "443**", _ES, "Application Server",
             "Communication between Endpoint servers and Application Server to relay "
             "information between systems"),
    TableRow(13, "HTTPS", "443", _ES, "VMware vSphere or vCenter Server or individual ESX hosts",
             "Communication between Endpoint server and VMware servers to extract information "
             "about Physical Hosts, Virtual Machines and the relationships between them."),
    TableRow(14, "HTTP", "80", _ES, "XenServer Hosts",
             "Communication between Endpoint server and XenServer servers to extract "
             "information about Physical Hosts, Virtual Machines and the relationships between "
             "them."),
    TableRow(15, "TCP", "1521***", _ES, "Oracle Databases", _ORACLE_REASON),
    TableRow(16, "HTTP S", "443", _CLIENTS, _ES,
             "Communication Desktops, Laptops and Servers to the Endpoint Server to upload "
             "inventory information and query the server for actions"),
    TableRow(17, "HTTPS", "443", _CLIENTS, "Application Server",
             "Communication Desktops, Laptops and Servers to access the Certero application via "
             "a Web Browser"),
    TableRow(18, "TCP", "1433 ****", "Application Server", "Database Server",
             "Communication between the Certero Application Server and the Database Server for "
             "access to the database"),
    TableRow(19, "TCP", "1434", "Application Server", "Database Server",
             "Communication between the Certero Application Server and the Database Server for "
             "the SQL Server Browser Service"),
    TableRow(20, "TCP", "1433 ****", _CLIENTS, "Database Server",
             "Required if SQL Server Management Studio or tools such as Microsoft Power BI are "
             "going to be used to directly access the Certero database for reporting purposes "
             "or for CMDB integration"),
    TableRow(21, "TCP", "3200 - 3299", _ES, "SAP Systems",
             "Communication between the Endpoint Server and the SAP Systems.  The default port "
             "is1521, however, this port may have been changed by the Oracle DBA"),
    TableRow(22, "TCP", "50,000 *****", _ES, "IBM License Metric Tool (ILMT) on DB2",
             "Communication between the Certero Endpoint Server and the ILMT DB2 Database "
             "Server for IBM License Metric Tool Connector"),
    TableRow(23, "TCP", "1433 ****", _ES, "IBM License Metric Tool (ILMT) on SQL",
             "Communication between the Certero Endpoint Server and the ILMT SQL Database "
             "Server for IBM License Metric Tool Connector"),
    TableRow(24, "TCP", "50,000 *****", _ES, "IBM BigFix Inventory on DB2",
             "Communication between the Certero Endpoint Server and the IBM BigFix Inventory "
             "DB2 Database Server ITAM Data Connector"),
    TableRow(25, "TCP", "1433 ****", _ES, "IBM License Metric Tool (ILMT) on SQL",
             "Communication between the Certero Endpoint Server and SQL Database Server for the "
             "IBM BigFix Inventory ITAM Data Connector"),
    TableRow(26, "TCP", "1433 ****", _ES, "Microsoft SCCM SQL Database Server",
             "Communication between the Certero Endpoint Server and the SCCM SQL Database "
             "Server for SCCM ITAM Data Connector"),
    TableRow(27, "HTTPS", "443", "Certero Application Server", "",
             "Optional connection to enable the dynamic synchronisation between the Certero "
             "Provisioning server and the Certero Customer Centre. Used to download updates to "
             "Certero Platform and SRDB definitions. This can communicate via a Proxy Server"),
)  # fmt: skip


def _row(number: int) -> TableRow:
    return TABLE[number - 1]


_E = VantagePoint.ENDPOINT_SERVER
_A = VantagePoint.APPLICATION_SERVER
_C = VantagePoint.CLIENT
_TCP = Transport.TCP
_SQL_NOTE = FOOTNOTES["****"]

FLOWS: tuple[Flow, ...] = (
    Flow("ssh_endpoints", _TCP, 22, _E, Role.ENDPOINT_NETWORKS, "ssh", (_row(1),), FOOTNOTES["*"]),
    Flow("ssh_hmc", _TCP, 22, _E, Role.IBM_HMC, "ssh", (_row(2),)),
    Flow("snmp_endpoints", Transport.UDP, 161, _E, Role.ENDPOINT_NETWORKS, "snmp", (_row(3),)),
    Flow("netbios_ns_endpoints", Transport.UDP, 137, _E, Role.ENDPOINT_NETWORKS, "netbios_ns",
         (_row(4),)),
    Flow("smb_endpoints", _TCP, 445, _E, Role.ENDPOINT_NETWORKS, "smb", (_row(5),)),
    Flow("icmp_endpoints", Transport.ICMP, None, _E, Role.ENDPOINT_NETWORKS, "icmp",
         (_row(6), _row(11)),
         erratum="ICMP appears twice in the table with two reasons: one flow, both reasons kept."),
    Flow("netbios_ssn_endpoints", _TCP, 139, _E, Role.ENDPOINT_NETWORKS, "netbios_ssn",
         (_row(7),)),
    Flow("ldap_dc", _TCP, 389, _E, Role.DOMAIN_CONTROLLERS, "ldap", (_row(8),)),
    Flow("ldaps_dc", _TCP, 636, _E, Role.DOMAIN_CONTROLLERS, "ldaps", (_row(9),)),
    Flow("ldaps_gc", _TCP, 3269, _E, Role.DOMAIN_CONTROLLERS, "ldaps", (_row(10),),
         settings=(("global_catalog", True),)),
    Flow("https_app_relay", _TCP, 443, _E, Role.APPLICATION_SERVER, "https", (_row(12),),
         FOOTNOTES["**"]),
    Flow("https_vsphere", _TCP, 443, _E, Role.VSPHERE, "vsphere", (_row(13),)),
    Flow("http_xenserver", _TCP, 80, _E, Role.XENSERVER, "xenapi", (_row(14),)),
    Flow("oracle_tns", _TCP, 1521, _E, Role.ORACLE_DATABASES, "oracle_tns", (_row(15),),
         FOOTNOTES["***"]),
    Flow("https_agent_upload", _TCP, 443, _C, Role.ENDPOINT_SERVER, "https", (_row(16),),
         erratum='The table writes "HTTP S": it is HTTPS.'),
    Flow("https_web_ui", _TCP, 443, _C, Role.APPLICATION_SERVER, "https", (_row(17),)),
    Flow("mssql_app_db", _TCP, 1433, _A, Role.DATABASE_SERVER, "mssql", (_row(18),), _SQL_NOTE),
    Flow("mssql_browser_app_db", Transport.UDP, 1434, _A, Role.DATABASE_SERVER, "mssql_browser",
         (_row(19),),
         erratum="The table says TCP 1434; the SQL Server Browser answers on UDP 1434 "
         "(MC-SQLR). A plain TCP 1434 check is available as a custom flow."),
    Flow("mssql_reporting", _TCP, 1433, _C, Role.DATABASE_SERVER, "mssql", (_row(20),),
         _SQL_NOTE, optional=True),
    Flow("sap_systems", _TCP, 3200, _E, Role.SAP_SYSTEMS, "sap", (_row(21),),
         "SAP dispatchers listen on 32NN, NN being the instance number 00-99 (gateways on 33NN)",
         port_range=(3200, 3299),
         erratum="The table's SAP footnote text is copied from the Oracle row; SAP dispatchers "
         "listen on 32NN (NN = instance number), gateways on 33NN."),
    Flow("db2_ilmt", _TCP, 50000, _E, Role.ILMT_DB2, "db2", (_row(22),), FOOTNOTES["*****"]),
    Flow("mssql_ilmt", _TCP, 1433, _E, Role.ILMT_SQL, "mssql", (_row(23),), _SQL_NOTE),
    Flow("db2_bigfix", _TCP, 50000, _E, Role.BIGFIX_DB2, "db2", (_row(24),), FOOTNOTES["*****"]),
    Flow("mssql_bigfix", _TCP, 1433, _E, Role.BIGFIX_SQL, "mssql", (_row(25),), _SQL_NOTE,
         erratum='The table names this row "ILMT on SQL" but its reason is BigFix Inventory: '
         "it is the BigFix flow."),
    Flow("mssql_sccm", _TCP, 1433, _E, Role.SCCM_SQL, "mssql", (_row(26),), _SQL_NOTE),
    Flow("https_customer_centre", _TCP, 443, _A, Role.CUSTOMER_CENTRE, "https", (_row(27),),
         "Can go through a proxy server", optional=True),
)  # fmt: skip

# The flows the platform itself cannot run without: the Application Server's database, the
# Endpoint Server's relay to it, and the agents' and users' ways in. Every other flow feeds
# inventory (a connector, a discovery protocol) and is a warning; optional flows are warnings.
CRITICAL_FLOWS = frozenset(
    {
        "mssql_app_db",
        "mssql_browser_app_db",
        "https_app_relay",
        "https_agent_upload",
        "https_web_ui",
    }
)

FLOWS_BY_ID: Mapping[str, Flow] = {flow.id: flow for flow in FLOWS}
