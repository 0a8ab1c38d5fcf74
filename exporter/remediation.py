"""What to change when a flow fails: one line for people, and the firewall rule it needs.

A result class says *why* a flow failed; the people who fix it need *what to change and who
changes it*. This module joins the result with the port table (`exporter.catalogue`): for a
network fault it names the firewall rule to request (protocol, port, from the exporter's vantage
point to the destination role, the table's reason), for a service fault what to check on the
service, and for an exporter fault what to fix on the exporter's host.

How a result class maps to a fix::

    dns_error          the name does not resolve: a DNS record or the target name (no rule yet:
                       the flow cannot be tried until the name resolves)
    refused            nothing listens, or a firewall rejects: start the service or open the rule
    unreachable        a router or firewall answered "unreachable": a route and the rule
    timeout, TCP       no connection (SYN dropped): the rule to open
    timeout, TCP       connected, then silence: the service hangs or is overloaded (no rule)
    timeout, UDP/ICMP  no reply: dropped by a firewall, or the service ignores the request: rule
    protocol_mismatch  another service answers on the port
    tls_error          the certificate: renew, trust its issuer, add the intermediate, fix the name
    auth_failed        the account: name, password, lock-out, per protocol
    service_error      the service is up but refuses the request (per protocol)
    exporter_error     the exporter could not run the check: its own host

`FirewallRule` is a value: two failing pairs that need the same opening (same protocol, port,
source and destination role) give equal `key`s, so reports merge them into one line with the
hosts it covers (`merge_rules`). The summary quotes the check's detail, which never holds a
secret (see `exporter.result`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.catalogue import Flow, Role, Transport, VantagePoint
from exporter.result import CheckResult, Phase, Result

if TYPE_CHECKING:  # config imports the checks; this module only reads a few attributes
    from exporter.config import Config, Job

SOURCE_NAMES: Mapping[VantagePoint, str] = {
    VantagePoint.ENDPOINT_SERVER: "the Endpoint Server",
    VantagePoint.APPLICATION_SERVER: "the Application Server",
    VantagePoint.CLIENT: "the clients (desktops, laptops and servers)",
}

DESTINATION_NAMES: Mapping[Role, str] = {
    Role.ENDPOINT_NETWORKS: "the endpoint networks",
    Role.IBM_HMC: "the IBM HMC",
    Role.DOMAIN_CONTROLLERS: "the Domain Controllers",
    Role.APPLICATION_SERVER: "the Application Server",
    Role.ENDPOINT_SERVER: "the Endpoint Server",
    Role.VSPHERE: "the vSphere servers",
    Role.XENSERVER: "the XenServer hosts",
    Role.ORACLE_DATABASES: "the Oracle databases",
    Role.DATABASE_SERVER: "the Database Server",
    Role.SAP_SYSTEMS: "the SAP systems",
    Role.ILMT_DB2: "the ILMT DB2 server",
    Role.ILMT_SQL: "the ILMT SQL server",
    Role.BIGFIX_DB2: "the BigFix DB2 server",
    Role.BIGFIX_SQL: "the BigFix SQL server",
    Role.SCCM_SQL: "the SCCM SQL server",
    Role.CUSTOMER_CENTRE: "the Certero Customer Centre",
}

# What answers a check, in words: "cannot reach <service>".
SERVICE_NAMES: Mapping[str, str] = {
    "tcp": "the service",
    "tls": "the TLS service",
    "http": "the web server",
    "https": "the web server",
    "ssh": "the SSH server",
    "snmp": "the SNMP agent",
    "netbios_ns": "the NetBIOS name service",
    "netbios_ssn": "the NetBIOS session service",
    "smb": "the SMB server",
    "icmp": "the host",
    "ldap": "the directory (LDAP)",
    "ldaps": "the directory (LDAPS)",
    "vsphere": "the vSphere API",
    "xenapi": "the XenServer API",
    "oracle_tns": "the Oracle listener",
    "mssql": "the database (SQL Server)",
    "mssql_browser": "the SQL Server Browser",
    "sap": "the SAP dispatcher",
    "db2": "the DB2 database",
    "http_proxy": "the proxy",
}

# What to check about the account when a login is refused, in each protocol's words.
ACCOUNT_ADVICE: Mapping[str, str] = {
    "ldap": "check the bind DN and its password, and whether the account is locked, disabled "
    "or its password expired in the directory",
    "ldaps": "check the bind DN and its password, and whether the account is locked, disabled "
    "or its password expired in the directory",
    "mssql": "check the SQL Server login and its password, that the login is enabled and not "
    "locked out, and that SQL Server authentication is allowed",
    "ssh": "check the SSH user, its password or key (and the key's passphrase), that the "
    "account is not locked, and that sshd allows the user (AllowUsers, PasswordAuthentication)",
    "snmp": "check the community (v2c) or the SNMPv3 user and pass phrases, and that the agent "
    "grants this source access",
    "smb": "check the Windows account and its password, and whether the account is locked or "
    "its password expired",
    "vsphere": "check the vCenter/ESXi account and its password, and whether it is locked",
    "xenapi": "check the XenServer account and its password, and whether it is locked",
    "oracle_tns": "check the database user and its password, and whether the account is locked",
    "db2": "check the DB2 user and its password, and whether the account is locked",
    "https": "check the credentials the flow sends and whether the account is locked",
    "http": "check the credentials the flow sends and whether the account is locked",
    "http_proxy": "check the proxy account and its password",
}

# What "up but refusing" usually means for each service.
SERVICE_ADVICE: Mapping[str, str] = {
    "oracle_tns": "check that the service name is registered with the listener (lsnrctl "
    "services) and the database is open",
    "smb": "check that SMB2/3 is enabled (not SMB1 only), the share exists and the account may "
    "open it",
    "mssql": "check the instance and database names and that the login may open the database",
    "mssql_browser": "check the SQL Server Browser service runs and the instance name exists",
    "ldap": "check the base DN and that the directory answers searches for this account",
    "ldaps": "check the base DN and that the directory answers searches for this account",
    "snmp": "check the agent's view grants the object the check reads",
    "sap": "check the SAP instance number and that the dispatcher accepts connections",
    "db2": "check the database name and that the instance accepts connections",
    "vsphere": "check the vCenter/ESXi services are running",
    "xenapi": "check the XenServer toolstack (xapi) is running and this host is the pool master",
    "https": "check the web application is running and the path the flow requests exists",
    "http": "check the web application is running and the path the flow requests exists",
}


# Who else stays silent over UDP: the network cannot be told apart from these without a reply.
SILENCE_ADVICE: Mapping[str, str] = {
    "snmp": "an agent also ignores a wrong community or a source it does not allow: check the "
    "community and the agent's access list if the firewall is known to be open",
    "netbios_ns": "a host with NetBIOS over TCP/IP disabled stays silent too",
    "mssql_browser": "a stopped SQL Server Browser service stays silent too",
}


@dataclass(frozen=True, slots=True)
class FirewallRule:
    """An opening to request: `protocol` `port` from `source` to `destination` for `hosts`.

    `port` is None for ICMP (echo request and reply). `key` is what makes two requests the
    same rule; `hosts` and `flows` are what a merged rule covers.
    """

    protocol: Transport
    port: int | None
    source: str  # a VantagePoint value
    destination: str  # a Role value, or "custom" for a flow of the config's own
    reason: str
    hosts: tuple[str, ...]
    flows: tuple[str, ...]

    @property
    def key(self) -> tuple[str, int | None, str, str]:
        """Identity of the opening, regardless of the hosts it covers."""
        return (self.protocol.value, self.port, self.source, self.destination)

    @property
    def service(self) -> str:
        """`TCP 1433`, `UDP 161`, or `ICMP echo`."""
        if self.port is None:
            return f"{self.protocol.value.upper()} echo"
        return f"{self.protocol.value.upper()} {self.port}"

    def as_dict(self) -> dict[str, object]:
        """The rule in the JSON report."""
        return {
            "protocol": self.protocol.value,
            "port": self.port,
            "source_role": self.source,
            "destination_role": self.destination,
            "hosts": list(self.hosts),
            "flows": list(self.flows),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Remediation:
    """One line for people and, for a network fault, the firewall rule that fixes it."""

    summary: str
    rule: FirewallRule | None = None

    def as_dict(self) -> dict[str, object]:
        """The `remediation` object of the JSON report."""
        return {"summary": self.summary, "rule": self.rule.as_dict() if self.rule else None}


@dataclass(frozen=True, slots=True)
class FlowFacts:
    """What a remediation needs to know about the flow: from the catalogue or a custom flow."""

    flow_id: str
    check: str
    transport: Transport
    source: VantagePoint
    destination: str  # a Role value or "custom"
    destination_name: str
    reason: str

    @classmethod
    def of(
        cls,
        flow_id: str,
        check: str,
        catalogue_flow: Flow | None,
        source: VantagePoint,
        *,
        transport: str = "tcp",
        description: str = "",
    ) -> FlowFacts:
        """Facts of a catalogue flow, or of a custom flow (`transport` from its check spec)."""
        if catalogue_flow is not None:
            return cls(
                flow_id,
                check,
                catalogue_flow.transport,
                catalogue_flow.source,
                catalogue_flow.destination.value,
                DESTINATION_NAMES[catalogue_flow.destination],
                catalogue_flow.reason,
            )
        return cls(
            flow_id,
            check,
            Transport(transport),
            source,
            "custom",
            "the destination",
            description or f"custom flow {flow_id}",
        )


@dataclass(frozen=True, slots=True)
class _Words:
    """The phrases every remediation is assembled from, built once per result."""

    facts: FlowFacts
    host: str
    result: CheckResult
    rule: FirewallRule
    source: str  # "the Application Server"
    service: str  # "the database (SQL Server)"
    where: str  # "at db1 (TCP 1433)"
    opening: str  # "TCP 1433"

    @property
    def allow(self) -> str:
        """The firewall sentence with the table's reason."""
        facts = self.facts
        return (
            f"a firewall between them must allow {self.opening} from {self.source} to "
            f"{facts.destination_name} (port table: '{facts.reason}')"
        )

    @property
    def cannot_reach(self) -> str:
        """`flow: the Application Server cannot reach the database at db1 (TCP 1433)`."""
        return f"{self.facts.flow_id}: {self.source} cannot reach {self.service} {self.where}"

    @property
    def flow(self) -> str:
        """`flow (the Application Server → the Database Server)`: the flow and its direction."""
        return f"{self.facts.flow_id} ({self.source} → {self.facts.destination_name})"

    @property
    def service_at(self) -> str:
        """`flow (A → B): the database (SQL Server) at db1 (TCP 1433)`."""
        return f"{self.flow}: {self.service} {self.where}"


def remediate(facts: FlowFacts, host: str, port: int | None, result: CheckResult) -> Remediation:
    """The remediation of a non-ok result of `facts`' flow to `host` (and `port`).

    `host` is what the rule covers: a host name, an address or a swept network's label. An ok
    result has nothing to change and gets an empty summary.
    """
    if result.ok:
        return Remediation("")
    words = _Words(
        facts,
        host,
        result,
        FirewallRule(
            facts.transport,
            None if facts.transport is Transport.ICMP else port,
            facts.source.value,
            facts.destination,
            facts.reason,
            (host,),
            (facts.flow_id,),
        ),
        SOURCE_NAMES[facts.source],
        SERVICE_NAMES.get(facts.check, "the service"),
        f"at {host} ({_opening(facts, port)})",
        _opening(facts, port),
    )
    return _FIXES[result.result](words)


def _dns_error(w: _Words) -> Remediation:
    return Remediation(
        f"{w.flow}: the name {w.host} does not resolve from {w.source} "
        f"({w.result.detail}) — add its DNS record or correct the target name; {w.opening} "
        f"from {w.source} to {w.facts.destination_name} can only be tried once it resolves"
    )


def _refused(w: _Words) -> Remediation:
    return Remediation(
        f"{w.cannot_reach}: the connection is refused — nothing listens on {w.opening} or a "
        f"firewall rejects it: start {w.service} on that port, or {w.allow}",
        w.rule,
    )


def _unreachable(w: _Words) -> Remediation:
    return Remediation(
        f"{w.cannot_reach}: a router or firewall reports it unreachable ({w.result.detail}) — "
        f"a route must exist and {w.allow}",
        w.rule,
    )


def _timeout(w: _Words) -> Remediation:
    transport = w.facts.transport
    if not _silent_network(transport, w.result):
        return Remediation(
            f"{w.service_at} accepted the connection but did not answer in time "
            f"({w.result.detail}) — check that {w.service} is healthy and not overloaded, or "
            "give the flow a longer timeout"
        )
    if transport is Transport.TCP:
        why = "packets are silently dropped"
    elif transport is Transport.UDP:
        why = "no reply: packets are silently dropped, or the service ignores the request"
    else:
        why = "no echo reply: ICMP is silently dropped, or the host is down"
    also = SILENCE_ADVICE.get(w.facts.check) if transport is Transport.UDP else None
    return Remediation(
        f"{w.cannot_reach}: {why} — {w.allow}" + (f"; {also}" if also else ""), w.rule
    )


def _protocol_mismatch(w: _Words) -> Remediation:
    return Remediation(
        f"{w.flow}: {w.where} answers, but not as {w.service} ({w.result.detail}) — "
        f"another service listens on {w.opening}: point the flow at the port {w.service} "
        "listens on, or move the other service"
    )


def _tls_error(w: _Words) -> Remediation:
    return Remediation(
        f"{w.service_at} fails TLS ({w.result.detail}) — {_tls_advice(w.result.detail)}"
    )


def _auth_failed(w: _Words) -> Remediation:
    advice = ACCOUNT_ADVICE.get(
        w.facts.check,
        "check the account and password the flow uses, and whether the account is locked or "
        "expired",
    )
    return Remediation(f"{w.service_at} refused the login ({w.result.detail}) — {advice}")


def _service_error(w: _Words) -> Remediation:
    advice = SERVICE_ADVICE.get(w.facts.check, f"check {w.service}'s configuration and logs")
    return Remediation(
        f"{w.service_at} is up but refuses the request ({w.result.detail}) — {advice}"
    )


def _exporter_error(w: _Words) -> Remediation:
    return Remediation(
        f"{w.flow}: the exporter could not run the check {w.where} ({w.result.detail}) — fix "
        "the exporter's host (open-file limit, readable secret files, permissions); the flow "
        "itself is untested"
    )


def _ok(w: _Words) -> Remediation:
    return Remediation("")


# One builder per result class: a class added to `Result` without one fails at import.
_FIXES: Mapping[Result, Callable[[_Words], Remediation]] = {
    Result.OK: _ok,
    Result.DNS_ERROR: _dns_error,
    Result.TIMEOUT: _timeout,
    Result.REFUSED: _refused,
    Result.UNREACHABLE: _unreachable,
    Result.TLS_ERROR: _tls_error,
    Result.PROTOCOL_MISMATCH: _protocol_mismatch,
    Result.AUTH_FAILED: _auth_failed,
    Result.SERVICE_ERROR: _service_error,
    Result.EXPORTER_ERROR: _exporter_error,
}
assert set(_FIXES) == set(Result), "every result class needs a remediation"


def remediate_pair(config: Config, job: Job, result: CheckResult) -> Remediation:
    """The remediation of `job`'s result as `config`'s exporter sees it: its vantage point, the
    flow's catalogue row or, for an extra flow, its check's transport and its description.

    The one call every surface makes (`check`, `/probe?debug=true`, a status page, a plugin).
    """
    template = config.templates.get(job.flow_id)
    facts = FlowFacts.of(
        job.flow_id,
        job.check,
        job.catalogue_flow,
        config.source,
        transport=job.spec.transport,
        description=template.description if template is not None else "",
    )
    return remediate(facts, job.target.host, job.target.port, result)


def merge_rules(remediations: Iterable[Remediation]) -> list[FirewallRule]:
    """One rule per opening with every host and flow it covers, in first-seen order."""
    merged: dict[tuple[str, int | None, str, str], FirewallRule] = {}
    for remediation in remediations:
        rule = remediation.rule
        if rule is None:
            continue
        known = merged.get(rule.key)
        if known is None:
            merged[rule.key] = rule
            continue
        merged[rule.key] = FirewallRule(
            known.protocol,
            known.port,
            known.source,
            known.destination,
            known.reason,
            known.hosts + tuple(h for h in rule.hosts if h not in known.hosts),
            known.flows + tuple(f for f in rule.flows if f not in known.flows),
        )
    return list(merged.values())


def _opening(facts: FlowFacts, port: int | None) -> str:
    protocol = facts.transport.value.upper()
    if facts.transport is Transport.ICMP or port is None:
        return f"{protocol} echo" if facts.transport is Transport.ICMP else protocol
    return f"{protocol} {port}"


def _silent_network(transport: Transport, result: CheckResult) -> bool:
    """True when a timeout means the network dropped the packets, not a slow service.

    Over UDP and ICMP silence is all there is to see. Over TCP the connection either never
    opened (the SYN got no answer: dropped) or opened and the service went quiet; a connection
    opened when the kernel measured its RTT or a phase after `connect` was entered (a check that
    connects inside its handshake records `connect` after it, so the last phase tells).
    """
    if transport is not Transport.TCP:
        return True
    if result.tcp_rtt_seconds is not None:
        return False
    phases = list(result.phases)
    return not phases or phases[-1] in (Phase.RESOLVE, Phase.CONNECT)


def _tls_advice(detail: str) -> str:
    """What to change about the certificate, from the words of the TLS failure."""
    text = detail.lower()
    if "expired" in text or "not yet valid" in text:
        return "renew the service's certificate"
    if "hostname" in text or "ip address mismatch" in text or "doesn't match" in text:
        return (
            "the certificate does not name the host the flow connects to: reissue it with that "
            "name, or point the flow at a name the certificate carries"
        )
    if "local issuer" in text or "issuer certificate" in text:
        return (
            "the chain is incomplete or its issuer is not trusted: install the intermediate "
            "certificate on the service, or trust the issuing CA (the flow's ca_file)"
        )
    if "self-signed" in text or "self signed" in text:
        return (
            "the certificate is self-signed: replace it with one from a trusted CA, or trust it "
            "explicitly (the flow's ca_file)"
        )
    return "check the service's certificate and TLS versions against the flow's TLS settings"
