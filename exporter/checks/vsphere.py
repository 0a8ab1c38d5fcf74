"""`vsphere`: the vSphere Web Services API of a vCenter or an ESXi host answers on `/sdk`.

Steps and phases: `connect`, `tls` (verified and its expiry recorded as by the `tls` check),
`handshake` (the unauthenticated `RetrieveServiceContent` SOAP call), `auth` (with `username`
and `password`: `Login` on the session manager the service content names, then `Logout`).

The service content's `about` (vSphere Web Services API reference, data object `AboutInfo`)
says what answered: `name`, `fullName`, `version`, `build`, `apiType` (`VirtualCenter` for a
vCenter, `HostAgent` for an ESXi host) and `apiVersion`. The first call carries no SOAPAction,
as nmap's `vmware-version` script sends it, so that servers of every API version answer it;
the login and logout then name the API version the server announced (`SOAPAction:
"urn:vim25/<apiVersion>"`, as pyVmomi's `SoapStubAdapter` does).

Classes: an HTTPS server whose `/sdk` does not answer with a `RetrieveServiceContentResponse`
is `protocol_mismatch`; the reverse proxy's 503 (its backend service is down) is
`service_error`; a SOAP fault `InvalidLogin` (or `NoPermission`) from `Login` is `auth_failed`,
any other fault `service_error` with its name.

A session is identified by the `vmware_soap_session` cookie, which a server may set on any
answer (before or at the login): the check keeps the latest one and sends it on each later
request. A session that was logged in is logged out in every case but the run's own
cancellation, since vCenter limits the number of sessions. The cookie is a credential: it
never appears in a detail or a debug line.

Sources: vSphere Web Services API reference (`ServiceInstance.RetrieveServiceContent`,
`ServiceContent`, `AboutInfo`, `SessionManager.Login`/`Logout`, fault `InvalidLogin`); SOAP 1.1
(W3C note, section 4.4: the `Fault` element with `faultcode`, `faultstring`, `detail`); nmap
`scripts/vmware-version.nse`; pyVmomi `pyVmomi/SoapAdapter.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

from pydantic import Field, model_validator

from exporter.checks.base import CheckContext, CheckSpec, Target, quote_peer
from exporter.checks.net import TlsSettings
from exporter.checks.tls import expiry_note
from exporter.checks.xml_http import HttpReply, local_name, parse_xml, post_xml, printable
from exporter.errors import CheckFailure
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.secrets import Secret, reveal

SDK_PATH = "/sdk"
SESSION_COOKIE = "vmware_soap_session"
API_TYPES = {"VirtualCenter": "vCenter", "HostAgent": "ESXi"}
AUTH_FAULTS = frozenset({"InvalidLogin", "NoPermission"})
_SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
_ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<soapenv:Envelope xmlns:soapenv="{_SOAP_ENV}" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    "<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
)
RETRIEVE_SERVICE_CONTENT = _ENVELOPE.format(
    body='<RetrieveServiceContent xmlns="urn:vim25">'
    '<_this type="ServiceInstance">ServiceInstance</_this></RetrieveServiceContent>'
).encode()
_MAX_FIELD_CHARS = 100  # of any text the peer reports about itself
_MAX_LABEL_CHARS = 64  # of the product and version labels, as the `https` check keeps them


class VsphereSettings(TlsSettings):
    """Options of the vSphere check: the TLS options, and an optional login."""

    username: str | None = Field(
        default=None, description="Login user (e.g. monitor@vsphere.local); with `password`."
    )
    password: Secret | None = Field(
        default=None, description="Login password; inline, {file: …} or {env: …}."
    )

    @model_validator(mode="after")
    def _login_pairs(self) -> VsphereSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


@dataclass(frozen=True, slots=True)
class About:
    """The fields of `AboutInfo` the check reports, and the session manager to log in to."""

    name: str
    full_name: str
    version: str
    build: str
    api_type: str
    api_version: str
    session_manager: tuple[str, str] | None  # (type, value) of the managed object reference


class _Session:
    """The `vmware_soap_session` cookie as the server last set it (never shown)."""

    def __init__(self) -> None:
        self.cookie: str | None = None

    def update(self, reply: HttpReply) -> None:
        """Keep the cookie a reply sets: servers set it on the first answer or at the login."""
        for header in reply.header_values("set-cookie"):
            jar = SimpleCookie()
            with contextlib.suppress(CookieError):
                jar.load(header)
            morsel = jar.get(SESSION_COOKIE)
            if morsel is not None and morsel.coded_value:
                self.cookie = f"{SESSION_COOKIE}={morsel.coded_value}"

    def headers(self, api_version: str) -> dict[str, str]:
        """SOAPAction naming the API version the server announced, and the session cookie."""
        action = f"urn:vim25/{api_version}" if api_version else "urn:vim25"
        headers = {"SOAPAction": f'"{action}"'}
        if self.cookie is not None:
            headers["Cookie"] = self.cookie
        return headers


async def run(target: Target, settings: VsphereSettings, context: CheckContext) -> CheckResult:
    """Retrieve the service content; with credentials, log in and out again."""
    password = reveal(settings.password) if settings.password is not None else None
    session = _Session()
    reply = await post_xml(
        context, target, SDK_PATH, RETRIEVE_SERVICE_CONTENT, tls=settings, phase=Phase.HANDSHAKE
    )
    session.update(reply)
    about = service_content(reply)
    context.peer = PeerInfo(product=about.name[:_MAX_LABEL_CHARS], version=_version(about))
    context.debug(
        "service content",
        api_type=about.api_type,
        api_version=about.api_version,
        full_name=about.full_name,
    )
    role = API_TYPES.get(about.api_type, f"apiType {about.api_type}")
    detail = f"{about.full_name or about.name} ({role}, API {about.api_version or 'unknown'})"
    if settings.username is not None and password is not None:
        detail += await _login_and_out(
            context, target, settings, about, session, username=settings.username, password=password
        )
    return context.ok(detail + expiry_note(context))


def service_content(reply: HttpReply) -> About:
    """The `about` and session manager of a `RetrieveServiceContentResponse`, or why not."""
    if reply.status == 503:
        raise CheckFailure(
            Result.SERVICE_ERROR,
            f"{reply.describe()} on {SDK_PATH}: the reverse proxy answers but the vSphere API "
            "service behind it does not (backend down or starting)",
        )
    envelope = _envelope(reply, "RetrieveServiceContent")
    returnval = _find_path(envelope, ("Body", "RetrieveServiceContentResponse", "returnval"))
    about = None if returnval is None else _child(returnval, "about")
    if returnval is None or about is None:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"{reply.describe()} on {SDK_PATH}: a SOAP answer without service content, "
            "not the vSphere API",
        )
    manager = _child(returnval, "sessionManager")
    return About(
        name=_text(about, "name"),
        full_name=_text(about, "fullName"),
        version=_text(about, "version"),
        build=_text(about, "build"),
        api_type=_text(about, "apiType"),
        api_version=_text(about, "apiVersion"),
        session_manager=(
            (manager.get("type", "SessionManager")[:_MAX_FIELD_CHARS], (manager.text or "").strip())
            if manager is not None and (manager.text or "").strip()
            else None
        ),
    )


def _envelope(reply: HttpReply, call: str) -> ElementTree.Element:
    """The SOAP envelope of a reply; a SOAP fault raises its class (see `fault_failure`)."""
    if reply.status not in (200, 500):
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"{reply.describe()} on {SDK_PATH}: not the vSphere API "
            "(it answers 200, or 500 with a SOAP fault)",
        )
    content_type = reply.header("content-type")
    if "xml" not in content_type.lower():
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"{reply.describe()} on {SDK_PATH} with {quote_peer(content_type or 'no type', 40)}"
            " instead of XML: not the vSphere API",
        )
    try:
        root = parse_xml(reply.body, "a SOAP envelope")
    except CheckFailure as exc:
        raise CheckFailure(exc.result, f"{reply.describe()} on {SDK_PATH}: {exc.detail}") from exc
    if local_name(root.tag) != "Envelope" or root.tag.partition("}")[0][1:] != _SOAP_ENV:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"{reply.describe()} on {SDK_PATH}: XML that is not a SOAP envelope "
            f"({quote_peer(local_name(root.tag), 40)}), not the vSphere API",
        )
    fault = _find_path(root, ("Body", "Fault"))
    if fault is not None:
        raise fault_failure(fault, call)
    return root


def fault_failure(fault: ElementTree.Element, call: str) -> CheckFailure:
    """A SOAP fault as a result: `InvalidLogin`/`NoPermission` from Login is `auth_failed`.

    vSphere names the fault by the element in `detail` (`InvalidLoginFault`) and its
    `xsi:type` (`InvalidLogin`); `faultstring` is the server's sentence for it.
    """
    name = ""
    detail = _child(fault, "detail")
    if detail is not None and len(detail):
        first = detail[0]
        xsi_type = first.get("{http://www.w3.org/2001/XMLSchema-instance}type", "")
        name = xsi_type.rpartition(":")[2] or local_name(first.tag).removesuffix("Fault")
    name = name or _text(fault, "faultcode") or "unnamed fault"
    words = _text(fault, "faultstring")
    said = f": {quote_peer(words, _MAX_FIELD_CHARS)}" if words else ""
    result = Result.AUTH_FAILED if call == "Login" and name in AUTH_FAULTS else Result.SERVICE_ERROR
    return CheckFailure(result, f"{call} answered with fault {printable(name, 60)}{said}")


async def _login_and_out(
    context: CheckContext,
    target: Target,
    settings: VsphereSettings,
    about: About,
    session: _Session,
    *,
    username: str,
    password: str,
) -> str:
    """Log in and out; the detail's suffix saying so (a failed logout is noted, not failed)."""
    if about.session_manager is None:
        raise CheckFailure(
            Result.SERVICE_ERROR, "the service content names no session manager to log in to"
        )
    manager = _moref(about.session_manager)
    login = _ENVELOPE.format(
        body=f'<Login xmlns="urn:vim25">{manager}<userName>{escape(username)}</userName>'
        f"<password>{escape(password)}</password></Login>"
    ).encode()
    reply = await post_xml(
        context,
        target,
        SDK_PATH,
        login,
        tls=settings,
        phase=Phase.AUTH,
        headers=session.headers(about.api_version),
    )
    session.update(reply)
    who = quote_peer(username, _MAX_FIELD_CHARS)
    _answer(reply, "Login")
    if session.cookie is None:
        raise CheckFailure(
            Result.SERVICE_ERROR,
            f"Login as {who} answered without a {SESSION_COOKIE} cookie: no session to use",
        )
    context.debug("logged in", user=who)
    logout = _ENVELOPE.format(body=f'<Logout xmlns="urn:vim25">{manager}</Logout>').encode()
    try:
        reply = await post_xml(
            context,
            target,
            SDK_PATH,
            logout,
            tls=settings,
            phase=Phase.AUTH,
            headers=session.headers(about.api_version),
        )
        _answer(reply, "Logout")
    except (CheckFailure, OSError, EOFError) as exc:
        reason = exc.detail if isinstance(exc, CheckFailure) else type(exc).__name__
        context.debug("logout failed", reason=reason)
        return f", login as {who} accepted; logout failed ({reason})"
    except asyncio.CancelledError:
        context.debug("logout not finished: the run was cancelled")
        raise
    context.debug("logged out")
    return f", login as {who} accepted and logged out"


def _answer(reply: HttpReply, call: str) -> None:
    """Require the `<call>Response` of a Login or Logout; faults and other answers raise."""
    if reply.status == 503:
        raise CheckFailure(
            Result.SERVICE_ERROR, f"{reply.describe()} to {call}: the vSphere API service is down"
        )
    envelope = _envelope(reply, call)
    if _find_path(envelope, ("Body", f"{call}Response")) is None:
        raise CheckFailure(
            Result.SERVICE_ERROR, f"{reply.describe()} to {call} without a {call}Response"
        )


def _moref(reference: tuple[str, str]) -> str:
    kind, value = reference
    return f"<_this type={quoteattr(kind)}>{escape(value)}</_this>"


def _version(about: About) -> str:
    """`8.0.2 build-22617221`, as `fullName` writes version and build."""
    version = about.version
    if about.build:
        version = f"{version} build-{about.build}" if version else f"build-{about.build}"
    return version[:_MAX_LABEL_CHARS]


def _child(element: ElementTree.Element, name: str) -> ElementTree.Element | None:
    return next((child for child in element if local_name(child.tag) == name), None)


def _find_path(element: ElementTree.Element, names: tuple[str, ...]) -> ElementTree.Element | None:
    found: ElementTree.Element | None = element
    for name in names:
        if found is None:
            return None
        found = _child(found, name)
    return found


def _text(element: ElementTree.Element, name: str) -> str:
    child = _child(element, name)
    return printable(child.text or "", _MAX_FIELD_CHARS) if child is not None else ""


SPEC = CheckSpec(
    "vsphere",
    VsphereSettings,
    run,
    "vSphere API on /sdk: service content (vCenter or ESXi), optional login",
)
