"""The fault matrix: every check by every fault that applies → the class the exporter reports.

One `Cell` is one case: the check, the fault, the expected class and the words its detail must
hold. `tests/test_fault_matrix.py` builds each fault once (a namespace with a packet filter, or
a misbehaving peer) and runs every cell of that fault against it; `render_diagnosis` turns the
same table into `docs/diagnosis.md`, so the document cannot claim what the tests do not show.
Regenerate the document with `python -m tests.fault_matrix > docs/diagnosis.md`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from exporter.checks import CHECKS
from exporter.result import Result


class Fault(enum.StrEnum):
    """A way a flow breaks; the value is the column heading in docs/diagnosis.md."""

    SYN_DROPPED = "SYN dropped"
    TCP_RESET = "TCP reset"
    ADMIN_PROHIBITED = "ICMP admin-prohibited"
    HOST_UNREACHABLE = "ICMP host unreachable"
    NO_ROUTE = "no route (ICMP net unreachable)"
    DNS = "name does not resolve"
    UDP_PORT_UNREACHABLE = "UDP port unreachable"
    DATAGRAM_DROPPED = "UDP / ICMP echo silently dropped"
    WRONG_SERVICE = "wrong service on the port"
    SILENT = "accepts, then says nothing"
    SLOW_DRIP = "slow drip past the timeout"
    CLOSES_MID_EXCHANGE = "closes mid-exchange"
    CLOSES_MID_ANSWER = "closes mid-answer"
    TLS_EXPIRED = "TLS expired"
    TLS_SELF_SIGNED = "TLS self-signed"
    TLS_WRONG_NAME = "TLS wrong name"
    TLS_MISSING_INTERMEDIATE = "TLS missing intermediate"
    WRONG_CREDENTIALS = "wrong credentials"


NOT_YET = None
"""The expected class of a cell whose fault could not be built yet: shown as "not yet"."""


@dataclass(frozen=True)
class Cell:
    """One case of the matrix: `check` meets `fault`, and reports `expected` with `words`.

    `settings` are the check's settings for the case (merged over what the fault supplies, such
    as the CA file of a TLS fault); `expected` NOT_YET marks a cell not built, never a pass.
    """

    check: str
    fault: Fault
    expected: Result | None
    words: tuple[str, ...] = ()
    settings: tuple[tuple[str, object], ...] = ()

    @property
    def label(self) -> str:
        """`check: fault`, how a failing cell is named in an assertion message."""
        return f"{self.check}: {self.fault.value}"


TCP_CHECKS = tuple(name for name, spec in CHECKS.items() if spec.transport == "tcp")
UDP_CHECKS = tuple(name for name, spec in CHECKS.items() if spec.transport == "udp")
ICMP_CHECKS = tuple(name for name, spec in CHECKS.items() if spec.transport == "icmp")
# every TCP check that speaks beyond the handshake: a peer's behaviour after accept matters
SPEAKING_TCP_CHECKS = tuple(name for name in TCP_CHECKS if name != "tcp")
# the TLS-capable checks, with the settings that make each speak TLS
TLS_SETTINGS: Mapping[str, tuple[tuple[str, object], ...]] = MappingProxyType(
    {
        "tls": (),
        "https": (),
        "ldaps": (),
        "ldap": (("start_tls", True),),
        "mssql": (("encrypt", "require"),),
        "vsphere": (),
        "xenapi": (("tls", True),),
    }
)


def _network_cells() -> Iterator[Cell]:
    """Packet-filter and resolver faults: the same class for every check of a transport.

    A TCP connect sees EHOSTUNREACH for admin-prohibited and host unreachable alike (and
    ENETUNREACH for net unreachable), so its words cannot tell them apart; a UDP check reads
    the errno from the socket's error queue, and `icmp` reads the ICMP type itself.
    """
    firewall = "no route, or rejected by a firewall"
    for check in TCP_CHECKS:
        yield Cell(check, Fault.SYN_DROPPED, Result.TIMEOUT, ("no answer within", "during connect"))
        yield Cell(check, Fault.TCP_RESET, Result.REFUSED, ("refused", "reset by a firewall"))
        yield Cell(check, Fault.ADMIN_PROHIBITED, Result.UNREACHABLE, (firewall, "during connect"))
        yield Cell(check, Fault.HOST_UNREACHABLE, Result.UNREACHABLE, (firewall,))
        yield Cell(check, Fault.NO_ROUTE, Result.UNREACHABLE, (firewall,))
    for check in UDP_CHECKS:
        yield Cell(check, Fault.DATAGRAM_DROPPED, Result.TIMEOUT, ("reply within", "filtered"))
        yield Cell(
            check, Fault.ADMIN_PROHIBITED, Result.UNREACHABLE, ("No route to host", firewall)
        )
        yield Cell(check, Fault.HOST_UNREACHABLE, Result.UNREACHABLE, ("No route to host",))
        yield Cell(check, Fault.NO_ROUTE, Result.UNREACHABLE, ("Network is unreachable",))
        yield Cell(
            check,
            Fault.UDP_PORT_UNREACHABLE,
            Result.REFUSED,
            ("UDP port 3201 unreachable", "nothing listens"),
        )
    for check in ICMP_CHECKS:
        yield Cell(check, Fault.DATAGRAM_DROPPED, Result.TIMEOUT, ("no answer within",))
        yield Cell(
            check, Fault.ADMIN_PROHIBITED, Result.UNREACHABLE, ("administratively prohibited",)
        )
        yield Cell(check, Fault.HOST_UNREACHABLE, Result.UNREACHABLE, ("ICMP host unreachable",))
        yield Cell(check, Fault.NO_ROUTE, Result.UNREACHABLE, ("ICMP network unreachable",))
    for check in CHECKS:
        yield Cell(check, Fault.DNS, Result.DNS_ERROR, ("name resolution failed",))


TLS_FIRST = frozenset({"tls", "https", "ldaps", "vsphere"})  # the TLS handshake is the first word
WRONG_SERVICE_WORDS: Mapping[str, str] = MappingProxyType(
    {
        "tls": "does not speak TLS",
        "https": "does not speak TLS",
        "ldaps": "does not speak TLS",
        "vsphere": "does not speak TLS",
        "http": "not an HTTP response",
        "xenapi": "not an HTTP response",
        "ssh": "not an SSH server",
        "mssql": "not a TDS server",
        "netbios_ssn": "not a NetBIOS session service",
        "db2": "not a DRDA server",
        "oracle_tns": "not an Oracle TNS listener",
        "ldap": "not an LDAP server",
        "smb": "not an SMB server",
        "sap": "not an SAP NI peer",
        "mssql_browser": "not a SQL Server Browser answer",
        "netbios_ns": "the request came back unchanged",
        "snmp": "not an SNMP agent",
    }
)


# A peer that starts the right answer and closes half-way through its first header: the
# service failed mid-answer (`service_error`, "closed"), not a wrong service on the port.
CUT_ANSWER: Mapping[str, tuple[Result, tuple[str, ...]]] = MappingProxyType(
    {
        "tls": (Result.TLS_ERROR, ("connection closed", "TLS handshake")),
        "https": (Result.TLS_ERROR, ("connection closed", "TLS handshake")),
        "vsphere": (Result.TLS_ERROR, ("connection closed", "TLS handshake")),
        "ldaps": (Result.TLS_ERROR, ("TLS handshake failed", "eof")),
        "ldap": (Result.SERVICE_ERROR, ("connection closed",)),
        "oracle_tns": (Result.SERVICE_ERROR, ("connection closed",)),
        "smb": (Result.SERVICE_ERROR, ("connection closed in the middle of an SMB message",)),
        "xenapi": (Result.SERVICE_ERROR, ("connection closed in the response headers",)),
        "http": (Result.SERVICE_ERROR, ("connection closed in the response status line",)),
        "ssh": (Result.SERVICE_ERROR, ("connection closed in the SSH identification string",)),
        "mssql": (Result.SERVICE_ERROR, ("closed after 4 of the 8 bytes", "TDS packet header")),
        "netbios_ssn": (Result.SERVICE_ERROR, ("closed after 2 of the 4 bytes", "session packet")),
        "db2": (Result.SERVICE_ERROR, ("closed after 4 of the 6 bytes", "DSS header")),
        "sap": (Result.SERVICE_ERROR, ("closed after 2 of the 4 bytes", "NI length")),
    }
)


def _peer_cells() -> Iterator[Cell]:
    """A peer that is there but misbehaves: wrong service, silence, slow drip, early close.

    UDP checks meet an echo service (RFC 862) as the wrong service, and a bound socket that
    never answers as silence. Silence and a slow drip both end at the deadline, in the phase that waited: `tls` for the
    checks that start with a TLS handshake, `handshake` for the others. A close after the
    request is the service's failure (`service_error`), or `tls_error` inside a handshake.
    """
    for check in SPEAKING_TCP_CHECKS:
        waited = "during tls" if check in TLS_FIRST else "during handshake"
        yield Cell(
            check, Fault.WRONG_SERVICE, Result.PROTOCOL_MISMATCH, (WRONG_SERVICE_WORDS[check],)
        )
        yield Cell(check, Fault.SILENT, Result.TIMEOUT, ("no answer within 1s", waited))
        yield Cell(check, Fault.SLOW_DRIP, Result.TIMEOUT, ("no answer within 1s", waited))
        if check == "ldaps":
            closed = Cell(check, Fault.CLOSES_MID_EXCHANGE, Result.TLS_ERROR, ("TLS", "eof"))
        elif check in TLS_FIRST:
            closed = Cell(
                check, Fault.CLOSES_MID_EXCHANGE, Result.TLS_ERROR, ("closed", "TLS handshake")
            )
        else:
            closed = Cell(check, Fault.CLOSES_MID_EXCHANGE, Result.SERVICE_ERROR, ("closed",))
        yield closed
    for check in SPEAKING_TCP_CHECKS:
        yield Cell(check, Fault.CLOSES_MID_ANSWER, *CUT_ANSWER[check])
    for check in UDP_CHECKS:
        yield Cell(
            check, Fault.WRONG_SERVICE, Result.PROTOCOL_MISMATCH, (WRONG_SERVICE_WORDS[check],)
        )
        yield Cell(check, Fault.SILENT, Result.TIMEOUT, ("reply within", "filtered"))


def _tls_cells() -> Iterator[Cell]:
    """Certificates a client must refuse, served by a TLS peer with the test PKI."""
    rejected = "certificate rejected"
    for check, settings in TLS_SETTINGS.items():
        yield Cell(check, Fault.TLS_EXPIRED, Result.TLS_ERROR, (rejected, "has expired"), settings)
        yield Cell(
            check, Fault.TLS_SELF_SIGNED, Result.TLS_ERROR, (rejected, "self-signed"), settings
        )
        yield Cell(
            check, Fault.TLS_WRONG_NAME, Result.TLS_ERROR, (rejected, "Hostname mismatch"), settings
        )
        yield Cell(
            check,
            Fault.TLS_MISSING_INTERMEDIATE,
            Result.TLS_ERROR,
            (rejected, "unable to get local issuer"),
            settings,
        )


# what each peer with an account says to a wrong password, as the check reports it
WRONG_PASSWORD_WORDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "ssh": ("login as", "refused", "password tried"),
        "ldap": ("bind failed", "invalidCredentials (49)"),
        "ldaps": ("bind failed", "invalidCredentials (49)"),
        "smb": ("STATUS_LOGON_FAILURE (0xC000006D)", "wrong password"),
        "snmp": ("usmStatsWrongDigests", "wrong authentication password"),
        "mssql": ("SQL Server error 18456", "(login failed)"),  # the server text: not always
        "vsphere": ("InvalidLogin", "incorrect user name or password"),
        "xenapi": ("refused", "SESSION_AUTHENTICATION_FAILED"),
        "oracle_tns": ("invalid username or password", "ORA-01017"),
        "http": ("HTTP 401 Unauthorized", "refused the credentials"),
        "https": ("HTTP 401 Unauthorized", "refused the credentials"),
    }
)


def _credential_cells() -> Iterator[Cell]:
    """A wrong password against a peer that holds the account (a wrong SNMPv3 auth password)."""
    for check, words in WRONG_PASSWORD_WORDS.items():
        yield Cell(check, Fault.WRONG_CREDENTIALS, Result.AUTH_FAILED, words)


CELLS: tuple[Cell, ...] = (
    *_network_cells(),
    *_peer_cells(),
    *_tls_cells(),
    *_credential_cells(),
)


def cells_of(fault: Fault) -> tuple[Cell, ...]:
    """Every cell of one fault, in table order."""
    return tuple(cell for cell in CELLS if cell.fault is fault)


def render_diagnosis(cells: tuple[Cell, ...] = CELLS) -> str:
    """docs/diagnosis.md: one row per check, one column per fault, the class in each cell.

    An empty cell is a fault that does not apply to the check (a SYN to a UDP check); "not yet"
    is a case that applies but has no test yet.
    """
    faults = [fault for fault in Fault if any(cell.fault is fault for cell in cells)]
    by_key = {(cell.check, cell.fault): cell for cell in cells}
    lines = [
        "# Diagnosis: what each fault looks like, per check",
        "",
        "Generated by `python -m tests.fault_matrix > docs/diagnosis.md` from the table that",
        "`tests/test_fault_matrix.py` runs: every filled cell is a test that builds the fault",
        "(a packet filter in a network namespace, or a misbehaving peer) and asserts the class",
        "and the key words of the detail. An empty cell is a fault that does not apply to the",
        'check; "not yet" is one that applies but is not tested yet.',
        "",
        "| check | " + " | ".join(fault.value for fault in faults) + " |",
        "|---|" + "---|" * len(faults),
    ]
    for check in CHECKS:
        row = []
        for fault in faults:
            cell = by_key.get((check, fault))
            if cell is None:
                row.append("")
            elif cell.expected is NOT_YET:
                row.append("not yet")
            else:
                row.append(f"`{cell.expected.value}`")
        lines.append(f"| {check} | " + " | ".join(row) + " |")
    lines += ["", "## Key words of the detail", ""]
    for cell in cells:
        if cell.expected is not NOT_YET and cell.words:
            quoted = ", ".join(f'"{word}"' for word in cell.words)
            lines.append(f"- {cell.label}: `{cell.expected.value}`, detail has {quoted}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_diagnosis(), end="")
