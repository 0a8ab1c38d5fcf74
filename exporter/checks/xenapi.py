"""`xenapi`: XAPI, the management API of a XenServer / XCP-ng host, answers XML-RPC on `/`.

Steps and phases: `connect`, `tls` (with `tls: true`, on port 443: verified and its expiry
recorded as by the `tls` check), `handshake` (one XML-RPC call), `auth` (with `username` and
`password`: the login, the host's identity, the logout).

XAPI wire protocol (xapi-project/xen-api, `ocaml/doc/wire-protocol.md`): a call is an XML-RPC
`methodCall` POSTed to `/`; every answer is one struct, `{Status: "Success", Value: …}` or
`{Status: "Failure", ErrorDescription: [code, parameters…]}`, with the codes of the XenAPI
error list. An XML-RPC server that is not XAPI answers with a `fault` or with values of its
own: `protocol_mismatch`.

Without credentials, `pool.get_all("OpaqueRef:NULL")` must be refused with the typed failure
`SESSION_INVALID`: only XAPI answers so. With credentials, `session.login_with_password`;
then `session.get_this_host` and `host.get_software_version` give the product and version as
peer info, and `session.logout` ends the session in every case but the run's own cancellation.
`SESSION_AUTHENTICATION_FAILED` (and `SESSION_AUTHORIZATION_FAILED`, RBAC) is `auth_failed`.
`HOST_IS_SLAVE [master address]` means a pool member: XAPI is up there but logins go to the
pool master, so the check passes and names the master.

A login over plain HTTP sends the password in clear: the settings warn at config load
(`load_warnings`). The session reference is a credential and never appears in a detail or a
debug line.

XML-RPC is encoded with the standard library's `xmlrpc.client.dumps` and decoded by its
`Unmarshaller` fed through defusedxml's `DefusedExpatParser` (DTDs, entity declarations and
external references refused), without patching `xmlrpc.client` for the rest of the process.
"""

from __future__ import annotations

import asyncio
import xml.parsers.expat
import xmlrpc.client
from collections.abc import Mapping

from defusedxml import DefusedXmlException
from defusedxml.xmlrpc import DefusedExpatParser
from pydantic import Field, model_validator

from exporter.checks.base import CheckContext, CheckSpec, Target, quote_peer
from exporter.checks.net import TlsSettings
from exporter.checks.tls import expiry_note
from exporter.checks.xml_http import HttpReply, post_xml, printable
from exporter.errors import CheckFailure
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.secrets import Secret, reveal

XAPI_PATH = "/"
NULL_REF = "OpaqueRef:NULL"
API_VERSION = "1.0"  # the client API version XenAPI.py's own examples send
ORIGINATOR = "certero-flow-exporter"
AUTH_FAILURES = frozenset({"SESSION_AUTHENTICATION_FAILED", "SESSION_AUTHORIZATION_FAILED"})
_MAX_FIELD_CHARS = 100
CLEAR_TEXT_WARNING = (
    "a login over plain HTTP (tls: false) sends the XAPI password in clear; "
    "set tls: true and port: 443"
)


class XenApiSettings(TlsSettings):
    """Options of the XAPI check; the TLS options apply with `tls: true` only."""

    tls: bool = Field(default=False, description="Speak TLS (XAPI on port 443; set `port: 443`).")
    username: str | None = Field(
        default=None, description="Login user (e.g. root); with `password`."
    )
    password: Secret | None = Field(
        default=None, description="Login password; inline, {file: …} or {env: …}."
    )

    @model_validator(mode="after")
    def _login_pairs(self) -> XenApiSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        tls_only = sorted(set(TlsSettings.model_fields) & self.model_fields_set)
        if tls_only and not self.tls:
            raise ValueError(f"{', '.join(tls_only)} applies with tls: true only")
        return self

    def load_warnings(self) -> tuple[str, ...]:
        """A login without TLS sends the password in clear."""
        return (CLEAR_TEXT_WARNING,) if self.username is not None and not self.tls else ()


class XapiFailure(Exception):
    """XAPI's typed failure: `ErrorDescription` = [code, parameters…]."""

    def __init__(self, description: list[str]) -> None:
        self.code = description[0] if description else ""
        self.parameters = description[1:]
        super().__init__(self.code)


async def run(target: Target, settings: XenApiSettings, context: CheckContext) -> CheckResult:
    """Prove XAPI by its typed failure, or log in, read the host's version and log out."""
    password = reveal(settings.password) if settings.password is not None else None
    if settings.username is None or password is None:
        try:
            value = await call(context, target, settings, "pool.get_all", (NULL_REF,))
        except XapiFailure as failure:
            if failure.code != "SESSION_INVALID":
                raise _unexpected(failure, "pool.get_all") from failure
        else:
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH,
                f"pool.get_all with a null session succeeded ({quote_peer(repr(value), 40)}): "
                "XAPI refuses it with SESSION_INVALID",
            )
        return context.ok("XAPI refused a null session with SESSION_INVALID" + expiry_note(context))
    return await _login(context, target, settings, settings.username, password)


async def _login(
    context: CheckContext, target: Target, settings: XenApiSettings, username: str, password: str
) -> CheckResult:
    who = quote_peer(username, _MAX_FIELD_CHARS)
    try:
        session = await call(
            context,
            target,
            settings,
            "session.login_with_password",
            (username, password, API_VERSION, ORIGINATOR),
            phase=Phase.AUTH,
        )
    except XapiFailure as failure:
        if failure.code == "HOST_IS_SLAVE":
            master = quote_peer(failure.parameters[0] if failure.parameters else "", 64)
            return context.ok(
                f"XAPI of a pool member (HOST_IS_SLAVE): logins go to the pool master {master}"
                + expiry_note(context)
            )
        if failure.code in AUTH_FAILURES:
            raise CheckFailure(
                Result.AUTH_FAILED, f"login as {who} refused: {failure.code}"
            ) from failure
        raise _unexpected(failure, "session.login_with_password") from failure
    if not isinstance(session, str) or not session:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, "session.login_with_password returned no session reference"
        )
    context.debug("logged in", user=who)
    note = ""
    try:
        identity = await _host_identity(context, target, settings, session)
    finally:
        if not _cancelling():
            note = await _logout(context, target, settings, session)
    context.peer = identity
    version = f" {identity.version}" if identity.version else ""
    return context.ok(
        f"{identity.product}{version}: login as {who} accepted{note}" + expiry_note(context)
    )


async def _host_identity(
    context: CheckContext, target: Target, settings: XenApiSettings, session: str
) -> PeerInfo:
    """Product and version from `host.get_software_version` of the host we are logged in to."""
    try:
        host = await call(
            context, target, settings, "session.get_this_host", (session, session), phase=Phase.AUTH
        )
        software = await call(
            context,
            target,
            settings,
            "host.get_software_version",
            (session, str(host)),
            phase=Phase.AUTH,
        )
    except XapiFailure as failure:
        raise _unexpected(failure, "reading the host's software version", session) from failure
    if not isinstance(software, Mapping):
        raise CheckFailure(Result.PROTOCOL_MISMATCH, "host.get_software_version returned no map")
    fields = {str(key): str(value)[:_MAX_FIELD_CHARS] for key, value in software.items()}
    product = fields.get("product_brand") or fields.get("platform_name") or "XAPI"
    version = fields.get("product_version") or fields.get("platform_version", "")
    build = fields.get("build_number", "")
    context.debug("software version", product=product, version=version, build=build)
    return PeerInfo(
        product=printable(product, 64),
        version=printable(version + (f" build {build}" if build else ""), 64),
    )


async def _logout(
    context: CheckContext, target: Target, settings: XenApiSettings, session: str
) -> str:
    """End the session; a failed logout is noted in the detail, never fails the check."""
    try:
        await call(context, target, settings, "session.logout", (session,), phase=Phase.AUTH)
    except (XapiFailure, CheckFailure, OSError, EOFError) as exc:
        reason = exc.detail if isinstance(exc, CheckFailure) else str(exc) or type(exc).__name__
        context.debug("logout failed", reason=reason)
        return f"; logout failed ({reason})"
    context.debug("logged out")
    return ", logged out"


def _cancelling() -> bool:
    """True while the run is being cancelled (its deadline): no new request may start."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _unexpected(failure: XapiFailure, what: str, session: str | None = None) -> CheckFailure:
    """Any other typed failure: service_error with its code and first parameters.

    A parameter equal to the session reference (SESSION_INVALID and its kin echo it) is shown
    as `<session>`: the reference is a credential for as long as the session lives.
    """
    shown = ["<session>" if p == session else quote_peer(p, 40) for p in failure.parameters[:3]]
    code = printable(failure.code, 60) or "an empty ErrorDescription"
    return CheckFailure(
        Result.SERVICE_ERROR,
        f"{what} failed: {code}" + (f" [{', '.join(shown)}]" if shown else ""),
    )


async def call(
    context: CheckContext,
    target: Target,
    settings: XenApiSettings,
    method: str,
    params: tuple[str, ...],
    *,
    phase: Phase = Phase.HANDSHAKE,
) -> object:
    """One XAPI call: the `Value` of a success; a `Failure` raises `XapiFailure`."""
    document = xmlrpc.client.dumps(params, methodname=method, allow_none=False).encode()
    reply = await post_xml(
        context,
        target,
        XAPI_PATH,
        document,
        tls=settings if settings.tls else None,
        phase=phase,
    )
    try:
        value = xapi_value(reply, method)
    except XapiFailure:
        _answered_as_xapi(context)
        raise
    _answered_as_xapi(context)
    return value


def _answered_as_xapi(context: CheckContext) -> None:
    """A Status struct, success or typed failure, is XAPI's own: name it until more is known."""
    if context.peer is None:
        context.peer = PeerInfo(product="XAPI")


def xapi_value(reply: HttpReply, method: str) -> object:
    """The `Value` of XAPI's Status struct; anything not shaped so is not XAPI."""
    if reply.status == 503:
        raise CheckFailure(
            Result.SERVICE_ERROR, f"{reply.describe()} to {method}: XAPI is not available"
        )
    if reply.status != 200:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"{reply.describe()} to an XML-RPC POST on /: not XAPI"
        )
    result = decode_response(reply.body)
    status = result.get("Status") if isinstance(result, dict) else None
    if status == "Success" and isinstance(result, dict) and "Value" in result:
        return result["Value"]
    if status == "Failure" and isinstance(result, dict):
        description = result.get("ErrorDescription")
        if isinstance(description, list):
            raise XapiFailure([str(item) for item in description])
    raise CheckFailure(
        Result.PROTOCOL_MISMATCH,
        f"XML-RPC answer to {method} without XAPI's Status struct: not XAPI",
    )


def decode_response(body: bytes) -> object:
    """Decode one XML-RPC `methodResponse`, refusing DTDs and entities; faults are mismatches."""
    unmarshaller = xmlrpc.client.Unmarshaller()
    parser = DefusedExpatParser(unmarshaller, forbid_dtd=True)
    try:
        parser.feed(body)
        parser.close()
        values = unmarshaller.close()
    except DefusedXmlException as exc:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"refused XML with {type(exc).__name__} (entity or DTD) instead of XML-RPC",
        ) from exc
    except xmlrpc.client.Fault as fault:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"XML-RPC fault {fault.faultCode} "
            f"({quote_peer(str(fault.faultString), 60)}): an XML-RPC server, not XAPI",
        ) from fault
    except (
        xml.parsers.expat.ExpatError,
        xmlrpc.client.ResponseError,
        ValueError,
        TypeError,
    ) as exc:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"not an XML-RPC response ({type(exc).__name__})"
        ) from exc
    return values[0] if len(values) == 1 else None


SPEC = CheckSpec(
    "xenapi",
    XenApiSettings,
    run,
    "XenServer XAPI over XML-RPC: typed failure without credentials, or login and version",
)
