"""`ldap` and `ldaps`: an LDAP server answers its RootDSE, and optionally accepts a bind.

Steps and phases: `connect` (our own TCP connection, so the result says which address was
tested), `tls` (LDAPS from the first byte, or StartTLS on 389 with `start_tls: true`, verified
by the same rules as the `tls` check), `handshake` (an anonymous RootDSE read: what the server
is, its host name and naming context, whether it is a global catalog), `auth` (with `bind_dn`
and `password`: a simple bind, then "Who am I?", RFC 4532).

ldap3 is synchronous and untyped: it runs on the exporter's blocking pool behind the small
typed adapter below (`_Session`), which owns the socket and gives it `deadline.timeout()`
before every step. ldap3 never opens a socket of its own: the one we connected is handed to
it, so name resolution, the address tested and the TLS rules are those of every other check.

Every LDAP result code becomes a class with its RFC 4511 name in the detail (`_CODE_RESULTS`),
and Active Directory's "data NNN" sub-code of a failed bind is put into words (`ad_reason`).

Global catalog: Active Directory publishes `isGlobalCatalogReady` in its RootDSE (TRUE on a
global catalog). With `global_catalog: true` (the default of the `ldaps_gc` flow) a RootDSE
saying FALSE is `service_error`. A server that does not publish the attribute at all is not
Active Directory (OpenLDAP, 389-DS): it has no global catalog to confirm or deny, so the check
passes and its detail says the role was not confirmed.
"""

from __future__ import annotations

import contextlib
import functools
import re
import socket
import ssl
import warnings
from dataclasses import dataclass, field
from typing import Any

with warnings.catch_warnings():
    # ldap3 2.9.1 (its last release) imports pyasn1's pre-0.6 names, which pyasn1 deprecates
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="ldap3")
    warnings.filterwarnings(
        "ignore", message=".* is deprecated. Please use", category=DeprecationWarning
    )
    import ldap3
    from ldap3.core import exceptions as ldap3_errors
from pydantic import Field, model_validator

from exporter.blocking import Deadline
from exporter.checks.base import CheckContext, CheckSpec, Target, quote_peer
from exporter.checks.net import (
    TlsSettings,
    client_ssl_context,
    connect_tcp,
    presented_chain,
    record_certificates,
    record_unverified_certificate,
)
from exporter.checks.tls import expiry_note
from exporter.errors import CheckFailure
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.secrets import Secret, reveal

START_TLS_OID = "1.3.6.1.4.1.1466.20037"
ROOT_DSE_ATTRIBUTES = (
    "vendorName",
    "vendorVersion",
    "dnsHostName",
    "defaultNamingContext",
    "namingContexts",
    "supportedLDAPVersion",
    "isGlobalCatalogReady",
    "domainControllerFunctionality",
    "objectClass",
)
MAX_QUOTED_CHARS = 100  # of a diagnostic message or of what a non-LDAP peer sent
_quote = functools.partial(quote_peer, limit=MAX_QUOTED_CHARS)
_FIRST_BYTES = 32  # kept from the peer's first reply, to name what a non-LDAP peer is
_LDAP_MESSAGE_TAG = 0x30  # every LDAPMessage is a BER SEQUENCE
_AD_DATA = re.compile(r"\bdata ([0-9a-fA-F]{3,4})\b")

# RFC 4511 §4.1.9 and appendix A (plus RFC 3909 cancel and RFC 4370 proxy codes).
RESULT_CODE_NAMES: dict[int, str] = {
    0: "success",
    1: "operationsError",
    2: "protocolError",
    3: "timeLimitExceeded",
    4: "sizeLimitExceeded",
    5: "compareFalse",
    6: "compareTrue",
    7: "authMethodNotSupported",
    8: "strongerAuthRequired",
    10: "referral",
    11: "adminLimitExceeded",
    12: "unavailableCriticalExtension",
    13: "confidentialityRequired",
    14: "saslBindInProgress",
    16: "noSuchAttribute",
    17: "undefinedAttributeType",
    18: "inappropriateMatching",
    19: "constraintViolation",
    20: "attributeOrValueExists",
    21: "invalidAttributeSyntax",
    32: "noSuchObject",
    33: "aliasProblem",
    34: "invalidDNSyntax",
    36: "aliasDereferencingProblem",
    48: "inappropriateAuthentication",
    49: "invalidCredentials",
    50: "insufficientAccessRights",
    51: "busy",
    52: "unavailable",
    53: "unwillingToPerform",
    54: "loopDetect",
    64: "namingViolation",
    65: "objectClassViolation",
    66: "notAllowedOnNonLeaf",
    67: "notAllowedOnRDN",
    68: "entryAlreadyExists",
    69: "objectClassModsProhibited",
    71: "affectsMultipleDSAs",
    80: "other",
    118: "canceled",
    119: "noSuchOperation",
    120: "tooLate",
    121: "cannotCancel",
    122: "assertionFailed",
    123: "authorizationDenied",
}
# Codes that say the server refused who we are or how we authenticated: fix the credentials
# or the way they are sent (8 and 13: AD and slapd requiring TLS before a simple bind). Every
# other code is the server declining to serve: `service_error`.
_AUTH_CODES = frozenset({7, 8, 13, 34, 48, 49, 50, 123})
_AUTH_OPERATIONS = frozenset({"bind", "Who am I?"})

# Active Directory's sub-code of a failed bind, in the diagnostic message as "data 52e"
# (Win32 error codes: 0x525 ERROR_NO_SUCH_USER, 0x52e ERROR_LOGON_FAILURE, ...).
AD_DATA_CODES: dict[str, str] = {
    "525": "user not found",
    "52e": "wrong password",
    "530": "logon not permitted at this time",
    "531": "logon not permitted from this workstation",
    "532": "password expired",
    "533": "account disabled",
    "701": "account expired",
    "773": "user must reset the password",
    "775": "account locked out",
}


def result_code_name(code: int) -> str:
    """The RFC 4511 name of a result code, or `code N` for one no RFC names."""
    return RESULT_CODE_NAMES.get(code, f"code {code}")


def ad_reason(message: str) -> str | None:
    """Active Directory's reason in a diagnostic message ("... data 52e, v4563" → words).

    None when the message carries no `data` sub-code; an unknown sub-code is named as such.
    """
    match = _AD_DATA.search(message)
    if match is None:
        return None
    code = match.group(1).lower()
    return AD_DATA_CODES.get(code, f"Active Directory sub-code {code}")


class LdapSettings(TlsSettings):
    """Options of the `ldap` check (TCP 389): plain LDAP, optionally upgraded by StartTLS."""

    start_tls: bool = Field(
        default=False, description="Upgrade to TLS (StartTLS, RFC 4513 §3) before reading."
    )
    bind_dn: str | None = Field(
        default=None,
        description="Bind name: a DN, user@domain or DOMAIN\\user (Active Directory).",
    )
    password: Secret | None = Field(default=None, description="Bind password (a secret).")
    global_catalog: bool = Field(
        default=False,
        description="Require a server that says it is a global catalog (isGlobalCatalogReady).",
    )

    @model_validator(mode="after")
    def _bind_needs_both(self) -> LdapSettings:
        if (self.bind_dn is None) != (self.password is None):
            raise ValueError(
                "bind_dn and password go together (an empty password is an anonymous bind)"
            )
        if self.bind_dn == "":
            raise ValueError("bind_dn must not be empty")
        return self


class LdapsSettings(LdapSettings):
    """Options of the `ldaps` check (TCP 636 / 3269): TLS from the first byte."""

    @model_validator(mode="after")
    def _no_start_tls(self) -> LdapsSettings:
        if self.start_tls:
            raise ValueError("start_tls is for plain LDAP (the ldap check); ldaps is TLS already")
        return self


class LdapResultError(Exception):
    """The server answered an operation with a result code other than success."""

    def __init__(self, operation: str, code: int, message: str) -> None:
        self.operation = operation
        self.code = code
        self.message = message
        super().__init__(f"{operation}: {result_code_name(code)} ({code})")


class NotLdapError(Exception):
    """The peer's reply is not an LDAP message; `sent` is the start of what it sent."""

    def __init__(self, sent: bytes) -> None:
        self.sent = sent
        super().__init__("not an LDAP reply")


@dataclass(frozen=True, slots=True)
class RootDse:
    """What a server says about itself in its RootDSE (RFC 4512 §5.1, AD's own attributes)."""

    attributes: dict[str, list[str]]

    def first(self, name: str) -> str:
        """The first value of an attribute, or "" when the server publishes none."""
        values = self.attributes.get(name.lower(), [])
        return values[0] if values else ""

    @property
    def global_catalog_ready(self) -> bool | None:
        """AD's isGlobalCatalogReady; None where the server does not publish it."""
        value = self.first("isGlobalCatalogReady")
        return None if not value else value.upper() == "TRUE"

    def peer(self) -> PeerInfo:
        """The product and version as the server names them (RFC 3045), else as recognised."""
        vendor = self.first("vendorName")
        if vendor:
            return PeerInfo(product=vendor, version=self.first("vendorVersion"))
        level = self.first("domainControllerFunctionality")
        if level:
            return PeerInfo(product="Active Directory", version=f"DC functional level {level}")
        classes = {value.lower() for value in self.attributes.get("objectclass", [])}
        if "openldaprootdse" in classes:
            return PeerInfo(product="OpenLDAP")
        return PeerInfo(product="LDAP")


class _RecordingSocket:
    """The socket as ldap3 sees it: every call passes through; the first reply bytes are kept.

    ldap3 turns a reply it cannot decode into whatever error its decoder happens to raise, or
    reads a greeting's first bytes as a length and waits for it; the first byte of any LDAP
    message is a SEQUENCE tag, so anything else ends the exchange at once as not LDAP.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.first_bytes = b""

    def recv(self, size: int) -> bytes:
        data = self.sock.recv(size)
        if len(self.first_bytes) < _FIRST_BYTES:
            first = not self.first_bytes
            self.first_bytes += data[: _FIRST_BYTES - len(self.first_bytes)]
            if first and data and data[0] != _LDAP_MESSAGE_TAG:
                # ldap3 would read the first bytes as a length and wait for that much more
                raise NotLdapError(data[:_FIRST_BYTES])
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@dataclass
class _Session:
    """One ldap3 connection over a socket we opened; every method runs on the blocking pool."""

    sock: socket.socket
    connection: Any  # ldap3.Connection: untyped, kept inside this adapter
    wire: _RecordingSocket = field(init=False)

    def __post_init__(self) -> None:
        self.wire = _RecordingSocket(self.sock)

    @classmethod
    def attach(cls, deadline: Deadline, sock: socket.socket, host: str, port: int) -> _Session:
        """Hand our connected socket to a fresh ldap3 connection (no network traffic)."""
        sock.settimeout(deadline.timeout())
        # a request written as two TLS records must not wait for the peer's delayed ACK
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = ldap3.Server(host, port=port, get_info=ldap3.NONE)
        connection = ldap3.Connection(
            server,
            client_strategy=ldap3.SYNC,
            raise_exceptions=False,
            read_only=True,
            check_names=False,  # bind names such as DOMAIN\user go to the server as written
        )
        session = cls(sock, connection)

        def use_our_socket(*_args: object, **_kwargs: object) -> None:
            connection.socket = session.wire
            connection.closed = False  # what ldap3's own socket opening ends with

        # ldap3 has no way to take a connected socket; its one socket-opening step is replaced
        connection.strategy._open_socket = use_our_socket
        connection.open(read_server_info=False)
        return session

    def wrap_tls(
        self, deadline: Deadline, context: ssl.SSLContext, server_name: str
    ) -> list[bytes]:
        """TLS handshake on the socket; the certificates (DER, leaf first) the peer presented."""
        self.sock.settimeout(deadline.timeout())
        wrapped = context.wrap_socket(self.sock, server_hostname=server_name)
        self.sock = wrapped
        self.wire = _RecordingSocket(wrapped)
        self.connection.socket = self.wire
        return presented_chain(wrapped)

    def start_tls(self, deadline: Deadline) -> None:
        """Send the StartTLS extended request; raise unless the server agrees."""
        self._exchange(deadline, "StartTLS", lambda: self.connection.extended(START_TLS_OID))

    def read_root_dse(self, deadline: Deadline) -> RootDse:
        """Anonymous base search of the empty DN (the RootDSE)."""
        self._exchange(
            deadline,
            "RootDSE search",
            lambda: self.connection.search(
                "", "(objectClass=*)", ldap3.BASE, attributes=list(ROOT_DSE_ATTRIBUTES)
            ),
        )
        entries = [
            item for item in self.connection.response or [] if item.get("type") == "searchResEntry"
        ]
        if not entries:
            raise LdapResultError("RootDSE search", 32, "no RootDSE entry returned")
        raw: dict[str, list[bytes]] = entries[0].get("raw_attributes") or {}
        return RootDse(
            {
                name.lower(): [value.decode("utf-8", errors="replace") for value in values]
                for name, values in raw.items()
            }
        )

    def bind(self, deadline: Deadline, name: str, password: str) -> None:
        """Simple bind (RFC 4513 §5.1.3)."""
        self.connection.user = name
        self.connection.password = password
        self.connection.authentication = ldap3.SIMPLE
        try:
            self._exchange(deadline, "bind", self.connection.bind)
        finally:
            self.connection.password = None

    def who_am_i(self, deadline: Deadline) -> str:
        """The authorization identity the server holds for this connection (RFC 4532)."""
        self._exchange(
            deadline, "Who am I?", lambda: self.connection.extended("1.3.6.1.4.1.4203.1.11.3")
        )
        value = (self.connection.result or {}).get("responseValue") or b""
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)

    def close(self) -> None:
        """Drop the connection without an unbind round trip (the peer may be the problem).

        Called on the event loop, also when the check's deadline abandoned a worker still
        waiting in `recv`: the shutdown wakes that worker at once (Linux), so it is freed now
        rather than at its own socket timeout.
        """
        with contextlib.suppress(OSError):  # the peer may have closed first
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _exchange(self, deadline: Deadline, operation: str, call: Any) -> None:
        self.sock.settimeout(deadline.timeout())
        try:
            call()
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
            # ldap3's decoder on bytes that are not BER: whatever it happened to trip on
            raise NotLdapError(self.wire.first_bytes) from exc
        result = self.connection.result or {}
        code = result.get("result")
        if not isinstance(code, int):
            raise NotLdapError(self.wire.first_bytes)
        if code != 0:
            raise LdapResultError(operation, code, str(result.get("message") or ""))


async def _run(
    target: Target, settings: LdapSettings, context: CheckContext, *, ldaps: bool
) -> CheckResult:
    server_name = settings.server_name or target.host
    sock = await connect_tcp(context, target)
    try:
        session = await context.run_blocking(
            _Session.attach, sock, context.address or target.host, target.port or 0
        )
    except BaseException:
        sock.close()
        raise
    try:
        if settings.start_tls:
            with context.phase(Phase.TLS):
                await context.run_blocking(session.start_tls)
        if ldaps or settings.start_tls:
            try:
                with context.phase(Phase.TLS):
                    chain = await context.run_blocking(
                        session.wrap_tls, client_ssl_context(settings), server_name
                    )
            except ssl.SSLCertVerificationError:
                if ldaps:  # TLS from the first byte: a second connection can read the certificate
                    await record_unverified_certificate(context, target, server_name)
                raise
            record_certificates(context, chain)
        with context.phase(Phase.HANDSHAKE):
            root = await context.run_blocking(session.read_root_dse)
        context.peer = root.peer()
        context.debug(
            "rootdse", **{name: "|".join(values) for name, values in root.attributes.items()}
        )
        detail = _describe(root, context, target)
        gc_note = _check_global_catalog(root, settings)
        if settings.bind_dn is not None and settings.password is not None:
            password = reveal(settings.password)
            with context.phase(Phase.AUTH):
                try:
                    await context.run_blocking(session.bind, settings.bind_dn, password)
                except LdapResultError as exc:
                    exc.message = (
                        exc.message.replace(password, "<redacted>") if password else exc.message
                    )
                    raise
                identity = await context.run_blocking(session.who_am_i)
            detail += f", bound as {_quote(identity or settings.bind_dn)}"
    finally:
        session.close()
    return context.ok(detail + gc_note + expiry_note(context))


def _describe(root: RootDse, context: CheckContext, target: Target) -> str:
    peer = root.peer()
    name = " ".join(part for part in (peer.product, peer.version) if part)
    parts = [f"{name} at {context.address}:{target.port}"]
    host = root.first("dnsHostName")
    if host:
        parts.append(f"dnsHostName {_quote(host)}")
    naming = root.first("defaultNamingContext") or root.first("namingContexts")
    if naming:
        parts.append(f"naming context {_quote(naming)}")
    versions = root.attributes.get("supportedldapversion", [])
    if versions:
        parts.append("LDAPv" + "/".join(versions))
    return ", ".join(parts)


def _check_global_catalog(root: RootDse, settings: LdapSettings) -> str:
    ready = root.global_catalog_ready
    if ready is True:
        return ", global catalog"
    if not settings.global_catalog:
        return ""
    if ready is False:
        raise CheckFailure(
            Result.SERVICE_ERROR,
            "not a global catalog: the RootDSE says isGlobalCatalogReady FALSE",
        )
    return ", global catalog not confirmed (no isGlobalCatalogReady: not Active Directory)"


async def run_ldap(target: Target, settings: LdapSettings, context: CheckContext) -> CheckResult:
    """Plain LDAP (optionally StartTLS): RootDSE, then a bind when credentials are set."""
    return await _run(target, settings, context, ldaps=False)


async def run_ldaps(target: Target, settings: LdapsSettings, context: CheckContext) -> CheckResult:
    """LDAP over TLS from the first byte: TLS, RootDSE, then a bind when credentials are set."""
    return await _run(target, settings, context, ldaps=True)


def classify(exc: BaseException, phase: Phase | None) -> tuple[Result, str] | None:
    """LDAP result codes, non-LDAP peers and ldap3's own errors → classes (None: not ours)."""
    if isinstance(exc, LdapResultError):
        name = result_code_name(exc.code)
        # A refused anonymous RootDSE read or StartTLS says nothing of our credentials.
        refused_us = exc.operation in _AUTH_OPERATIONS and exc.code in _AUTH_CODES
        result = Result.AUTH_FAILED if refused_us else Result.SERVICE_ERROR
        detail = f"{exc.operation} failed: {name} ({exc.code})"
        reason = ad_reason(exc.message)
        if reason is not None:
            detail += f": {reason}"
        if exc.message:
            detail += f"; server said {_quote(exc.message)}"
        return result, detail
    if isinstance(exc, NotLdapError):
        if not exc.sent:
            return Result.PROTOCOL_MISMATCH, "not an LDAP server: its reply could not be decoded"
        return Result.PROTOCOL_MISMATCH, f"not an LDAP server: it sent {_quote(exc.sent)}"
    if isinstance(exc, ldap3_errors.LDAPSessionTerminatedByServerError):
        where = f" during {phase.value}" if phase is not None else ""
        return Result.SERVICE_ERROR, f"connection closed by the server{where} without an LDAP reply"
    if isinstance(exc, ldap3_errors.LDAPException) and not isinstance(exc, OSError):
        where = f" during {phase.value}" if phase is not None else ""
        return (
            Result.SERVICE_ERROR,
            f"LDAP error{where}: {type(exc).__name__}: {_quote(str(exc))}",
        )
    return None


LDAP_SPEC = CheckSpec(
    "ldap", LdapSettings, run_ldap, "LDAP RootDSE read, StartTLS, simple bind", classify=classify
)
LDAPS_SPEC = CheckSpec(
    "ldaps", LdapsSettings, run_ldaps, "LDAPS RootDSE read, simple bind", classify=classify
)
