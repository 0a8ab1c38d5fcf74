"""A fake vSphere Web Services endpoint (vCenter or ESXi) on loopback HTTPS, written from the API.

No vCenter or ESXi can be installed here. This fake answers `POST /sdk` the way the vSphere
API does for the three calls the `vsphere` check makes, and nmap's `vmware-version` script
proves it as an independent client (tests/checks/test_vsphere.py).

Sources: vSphere Web Services API reference (Broadcom developer portal, "vSphere Web Services
API"): `ServiceInstance.RetrieveServiceContent` returns `ServiceContent` (`about` is an
`AboutInfo`: name, fullName, vendor, version, build, localeVersion, localeBuild, osType,
productLineId, apiType, apiVersion, instanceUuid, licenseProductName, licenseProductVersion;
`sessionManager` a `ManagedObjectReference` of type SessionManager, whose value is
`SessionManager` on vCenter and `ha-sessionmgr` on ESXi); `SessionManager.Login(userName,
password, locale)` returns a `UserSession` or the fault `InvalidLogin`; `Logout` needs an
authenticated session, else `NotAuthenticated`. SOAP 1.1 (W3C note, 4.4): a fault is
`soapenv:Fault` with `faultcode`, `faultstring` and `detail`, sent with HTTP 500; vSphere puts
the typed fault in `detail` as `<InvalidLoginFault xsi:type="InvalidLogin">`. The session is
the `vmware_soap_session` cookie, set on the first answer to a client that has none (as
vCenter's reverse proxy does) and authenticated by Login. The reverse proxy's answer while
the API service is down is HTTP 503 with the text "503 Service Unavailable (Failed to connect
to endpoint: …)". pyVmomi `pyVmomi/SoapAdapter.py` (fault parsing, cookie handling) and nmap
`scripts/vmware-version.nse` (which sends `urn:internalvim25` and no SOAPAction) read these
answers.

A SOAPAction, when sent, must name `urn:vim25/<version>` of a version the fake knows, as a
server refuses an unknown one; the first call of a client may send none.
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from tests.peers.threaded import serving

HOST = "127.0.0.1"
MAX_REQUEST_BYTES = 64 * 1024
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
USER = "monitor@vsphere.local"
PASSWORD = "Vc-Passw0rd!"


@dataclass(frozen=True)
class Product:
    """What `AboutInfo` says: one vCenter and one ESXi, as 8.0 Update 2 reports them."""

    name: str
    full_name: str
    version: str
    build: str
    os_type: str
    product_line: str
    api_type: str
    api_version: str
    session_manager: str
    root_folder: str
    license_name: str


VCENTER = Product(
    name="VMware vCenter Server",
    full_name="VMware vCenter Server 8.0.2 build-22617221",
    version="8.0.2",
    build="22617221",
    os_type="linux-x64",
    product_line="vpx",
    api_type="VirtualCenter",
    api_version="8.0.2.0",
    session_manager="SessionManager",
    root_folder="group-d1",
    license_name="VMware VirtualCenter Server",
)
ESXI = Product(
    name="VMware ESXi",
    full_name="VMware ESXi 8.0.2 build-23305546",
    version="8.0.2",
    build="23305546",
    os_type="vmnix-x86",
    product_line="embeddedEsx",
    api_type="HostAgent",
    api_version="8.0.2.0",
    session_manager="ha-sessionmgr",
    root_folder="ha-folder-root",
    license_name="VMware ESX Server",
)
KNOWN_API_VERSIONS = frozenset({"6.7", "7.0", "7.0.3.0", "8.0.0.0", "8.0.1.0", "8.0.2.0"})


@dataclass
class VsphereFake:
    """The fake's port, its product, and what clients did (read by tests)."""

    product: Product
    port: int = 0
    unavailable: bool = False  # the reverse proxy answers 503 to everything
    password: str = PASSWORD  # of the one account, USER
    calls: list[str] = field(default_factory=list)  # method names, in order
    soap_actions: list[str] = field(default_factory=list)  # as sent ("" when absent)
    sessions: dict[str, str | None] = field(default_factory=dict)  # cookie → user (None: anon)
    logins: list[tuple[str, bool]] = field(default_factory=list)  # (user, accepted)
    logouts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def open_sessions(self) -> int:
        """Sessions logged in and not logged out: what vCenter counts against its limit."""
        with self.lock:
            return sum(1 for user in self.sessions.values() if user is not None)


def envelope(body: str) -> bytes:
    """A SOAP 1.1 envelope with the namespaces vSphere declares."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" '
        f'xmlns:soapenv="{SOAP_ENV}" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        f"<soapenv:Body>\n{body}\n</soapenv:Body>\n</soapenv:Envelope>"
    ).encode()


def fault(name: str, text: str, extra: str = "") -> bytes:
    """A vSphere SOAP fault: `faultcode` ServerFaultCode, the typed fault in `detail`."""
    return envelope(
        "<soapenv:Fault>\n<faultcode>ServerFaultCode</faultcode>\n"
        f"<faultstring>{escape(text)}</faultstring>\n<detail>\n"
        f'<{name}Fault xmlns="urn:vim25" xsi:type="{name}">{extra}</{name}Fault>\n'
        "</detail>\n</soapenv:Fault>"
    )


def service_content(product: Product, namespace: str) -> bytes:
    """`RetrieveServiceContentResponse` with the references and `about` of `product`."""
    vc = product.api_type == "VirtualCenter"
    uuid = "\n<instanceUuid>5f2a43b8-2c1e-4d6a-9f3b-0c7e8a1d2b4c</instanceUuid>" if vc else ""
    return envelope(
        f'<RetrieveServiceContentResponse xmlns="{namespace}"><returnval>\n'
        f'<rootFolder type="Folder">{product.root_folder}</rootFolder>\n'
        '<propertyCollector type="PropertyCollector">'
        f"{'propertyCollector' if vc else 'ha-property-collector'}</propertyCollector>\n"
        '<viewManager type="ViewManager">ViewManager</viewManager>\n'
        "<about>\n"
        f"<name>{product.name}</name>\n<fullName>{product.full_name}</fullName>\n"
        f"<vendor>VMware, Inc.</vendor>\n<version>{product.version}</version>\n"
        f"<patchLevel></patchLevel>\n<build>{product.build}</build>\n"
        "<localeVersion>INTL</localeVersion>\n<localeBuild>000</localeBuild>\n"
        f"<osType>{product.os_type}</osType>\n<productLineId>{product.product_line}</productLineId>\n"
        f"<apiType>{product.api_type}</apiType>\n<apiVersion>{product.api_version}</apiVersion>"
        f"{uuid}\n<licenseProductName>{product.license_name}</licenseProductName>\n"
        "<licenseProductVersion>8.0</licenseProductVersion>\n</about>\n"
        f'<sessionManager type="SessionManager">{product.session_manager}</sessionManager>\n'
        "</returnval></RetrieveServiceContentResponse>"
    )


UNAVAILABLE_BODY = (
    b"503 Service Unavailable (Failed to connect to endpoint: [N7Vmacore4Http16LocalServiceSpecE:"
    b"0x00007f0c2c0a1e30] _serverNamespace = /sdk action = Allow _port = 8085)"
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 10.0  # a client that stalls frees its thread

    def do_POST(self) -> None:
        fake = self.server.fake
        if fake.unavailable:
            self._send(503, UNAVAILABLE_BODY, "text/plain")
            return
        if self.path != "/sdk":
            self._send(404, b"", "text/plain")
            return
        length = int(self.headers.get("Content-Length", "0"))
        if length > MAX_REQUEST_BYTES:
            self._send(413, b"", "text/plain")
            return
        document = self.rfile.read(length)
        action = (self.headers.get("SOAPAction") or "").strip('"')
        with fake.lock:
            fake.soap_actions.append(action)
        if action and action.removeprefix("urn:vim25/") not in KNOWN_API_VERSIONS:
            self._send(500, fault("InvalidRequest", f"Unsupported version URI {action}"))
            return
        try:
            call = _call(document)
        except ElementTree.ParseError:
            self._send(500, fault("InvalidRequest", "The request is not a SOAP envelope"))
            return
        with fake.lock:
            fake.calls.append(_local(call.tag))
        cookie = self._cookie()
        self._answer(call, cookie)

    def _answer(self, call: ElementTree.Element, cookie: str | None) -> None:
        fake = self.server.fake
        method, namespace = _local(call.tag), call.tag.partition("}")[0][1:]
        new_cookie = None
        if cookie is None or cookie not in fake.sessions:
            cookie = new_cookie = secrets.token_hex(20)
            with fake.lock:
                fake.sessions[cookie] = None
        if method == "RetrieveServiceContent":
            self._send(200, service_content(fake.product, namespace), cookie=new_cookie)
        elif method == "Login":
            user = _field(call, "userName")
            accepted = user == USER and _field(call, "password") == fake.password
            with fake.lock:
                fake.logins.append((user, accepted))
                if accepted:
                    fake.sessions[cookie] = user
            if not accepted:
                self._send(
                    500,
                    fault(
                        "InvalidLogin",
                        "Cannot complete login due to an incorrect user name or password.",
                    ),
                    cookie=new_cookie,
                )
                return
            self._send(200, envelope(_user_session(user)), cookie=new_cookie)
        elif method == "Logout":
            with fake.lock:
                authenticated = fake.sessions.get(cookie) is not None
                if authenticated:
                    fake.sessions[cookie] = None
                    fake.logouts += 1
            if not authenticated:
                self._send(500, fault("NotAuthenticated", "The session is not authenticated."))
                return
            self._send(200, envelope('<LogoutResponse xmlns="urn:vim25"></LogoutResponse>'))
        else:
            self._send(500, fault("MethodFault", f"Unable to resolve WSDL method name {method}"))

    def _cookie(self) -> str | None:
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "vmware_soap_session":
                return value.strip('"')
        return None

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/xml; charset=utf-8",
        *,
        cookie: str | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if cookie is not None:
            self.send_header(
                "Set-Cookie", f'vmware_soap_session="{cookie}"; Path=/; HttpOnly; Secure;'
            )
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read what the fake recorded, not stderr."""


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _call(document: bytes) -> ElementTree.Element:
    """The first element of the SOAP body: the method called."""
    root = ElementTree.fromstring(document)
    body = next((child for child in root if _local(child.tag) == "Body"), None)
    if _local(root.tag) != "Envelope" or body is None or not len(body):
        raise ElementTree.ParseError("no SOAP body")
    return body[0]


def _field(call: ElementTree.Element, name: str) -> str:
    child = next((child for child in call if _local(child.tag) == name), None)
    return (child.text or "") if child is not None else ""


def _user_session(user: str) -> str:
    return (
        '<LoginResponse xmlns="urn:vim25"><returnval>'
        f"<key>52{secrets.token_hex(15)}</key><userName>{escape(user)}</userName>"
        f"<fullName>{escape(user)}</fullName><loginTime>2026-01-01T00:00:00Z</loginTime>"
        "<lastActiveTime>2026-01-01T00:00:00Z</lastActiveTime><locale>en</locale>"
        "<messageLocale>en</messageLocale><extensionSession>false</extensionSession>"
        "<ipAddress>127.0.0.1</ipAddress><userAgent>certero-flow-exporter</userAgent>"
        "<callCount>1</callCount></returnval></LoginResponse>"
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, fake: VsphereFake, context: ssl.SSLContext) -> None:
        super().__init__((HOST, 0), _Handler)
        self.fake = fake
        # The handshake runs in the connection's own thread (on its first read), so a client
        # that never speaks TLS cannot stall the accept loop.
        self.socket = context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: a client rejecting the certificate aborts the handshake on purpose."""


@contextlib.contextmanager
def run_vsphere_fake(
    product: Product,
    cert: Path,
    key: Path,
    *,
    unavailable: bool = False,
    password: str = PASSWORD,
) -> Iterator[VsphereFake]:
    """Serve the fake with `cert` on a free loopback port in a thread; stop it on exit."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    fake = VsphereFake(product=product, unavailable=unavailable, password=password)
    server = _Server(fake, context)
    fake.port = server.server_address[1]
    with serving(server, "vsphere-fake"):
        yield fake
