"""A fake XAPI (XenServer / XCP-ng management API) on loopback, written from the wire protocol.

No XenServer can be installed here. This fake answers XML-RPC `POST /` the way XAPI does for
the calls the `xenapi` check makes and those the official `XenAPI` Python package makes around
a login, and that package proves it as an independent client (tests/checks/test_xenapi.py).

Sources: xapi-project/xen-api `ocaml/doc/wire-protocol.md` (XML-RPC over HTTP POST to `/`;
every result is a struct `{Status: "Success", Value: …}` or `{Status: "Failure",
ErrorDescription: [code, parameters…]}`; references are strings `OpaqueRef:<uuid>`; the
first parameter of every call but the logins is the session reference) and the XenAPI error
list in the same repository (`ocaml/idl/datamodel_errors.ml`): `SESSION_INVALID [handle]`,
`SESSION_AUTHENTICATION_FAILED [uname, msg]`, `HOST_IS_SLAVE [master_IP_address]`,
`MESSAGE_METHOD_UNKNOWN [method]`, `MESSAGE_PARAMETER_COUNT_MISMATCH [method, expected,
received]`. `host.get_software_version` returns a string map; the keys here are those a
XenServer 8 host reports (product_brand, product_version, platform_name, platform_version,
build_number, xapi, xen, …). The XenAPI package's `Session` (`XenAPI/XenAPI.py`) calls
`session.login_with_password`, the session-taking calls and `session.logout`, and reads
`pool.get_all`, `pool.get_master`, `host.get_API_version_major`/`_minor` for its API version.

A pool member (`master_address` set) refuses every login with `HOST_IS_SLAVE` and the master's
address, as a pool member's XAPI does.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import uuid
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.peers.threaded import serving

HOST = "127.0.0.1"
MAX_REQUEST_BYTES = 64 * 1024
USER = "root"
PASSWORD = "Xen-Passw0rd!"
HOST_REF = "OpaqueRef:7b0d4c3e-2f1a-4e5b-9c8d-1a2b3c4d5e6f"
POOL_REF = "OpaqueRef:0e9f8a7b-6c5d-4e3f-2a1b-0c9d8e7f6a5b"
SOFTWARE_VERSION = {
    "product_version": "8.4.0",
    "product_version_text": "8.4",
    "product_version_text_short": "8.4",
    "platform_name": "XCP",
    "platform_version": "3.4.0",
    "product_brand": "XenServer",
    "build_number": "8.4.0-20240215",
    "git_id": "0",
    "hostname": "xenserver-host",
    "date": "2024-02-15",
    "dbv": "2024.0215",
    "is_preview_release": "false",
    "xapi": "24.11",
    "xapi_build": "24.11.0",
    "xen": "4.17.3-4",
    "linux": "4.19.0+1",
    "xencenter_min": "2.21",
    "xencenter_max": "2.21",
    "network_backend": "openvswitch",
}
# Parameters of each method, the session first where there is one (the XenAPI reference).
ARITY = {
    "session.login_with_password": 4,
    "session.logout": 1,
    "session.get_this_host": 2,
    "host.get_software_version": 2,
    "host.get_API_version_major": 2,
    "host.get_API_version_minor": 2,
    "pool.get_all": 1,
    "pool.get_master": 2,
}


@dataclass
class XapiFake:
    """The fake's port, whether it is a pool member, and what clients did (read by tests)."""

    port: int = 0
    master_address: str | None = None
    password: str = PASSWORD  # of the one account, USER
    calls: list[str] = field(default_factory=list)  # method names, in order
    sessions: set[str] = field(default_factory=set)  # live session references
    issued: list[str] = field(default_factory=list)  # every session reference handed out
    logins: list[tuple[str, bool]] = field(default_factory=list)  # (user, accepted)
    logouts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def success(value: object) -> dict[str, object]:
    """XAPI's struct for a successful call."""
    return {"Status": "Success", "Value": value}


def failure(*description: str) -> dict[str, object]:
    """XAPI's struct for a failed call: the error code, then its parameters."""
    return {"Status": "Failure", "ErrorDescription": list(description)}


def answer(fake: XapiFake, method: str, params: tuple[object, ...]) -> dict[str, object]:
    """What XAPI returns for `method(params)`."""
    if method not in ARITY:
        return failure("MESSAGE_METHOD_UNKNOWN", method)
    if len(params) != ARITY[method]:
        return failure(
            "MESSAGE_PARAMETER_COUNT_MISMATCH", method, str(ARITY[method]), str(len(params))
        )
    if method == "session.login_with_password":
        return _login(fake, str(params[0]), str(params[1]))
    session = str(params[0])
    with fake.lock:
        valid = session in fake.sessions
        if valid and method == "session.logout":
            fake.sessions.discard(session)
            fake.logouts += 1
    if not valid:
        return failure("SESSION_INVALID", session)
    values: dict[str, object] = {
        "session.logout": "",
        "session.get_this_host": HOST_REF,
        "host.get_software_version": SOFTWARE_VERSION,
        "host.get_API_version_major": "2",
        "host.get_API_version_minor": "21",
        "pool.get_all": [POOL_REF],
        "pool.get_master": HOST_REF,
    }
    if method.startswith("host.") and params[1] != HOST_REF:
        return failure("HANDLE_INVALID", "host", str(params[1]))
    return success(values[method])


def _login(fake: XapiFake, user: str, password: str) -> dict[str, object]:
    if fake.master_address is not None:
        return failure("HOST_IS_SLAVE", fake.master_address)
    accepted = user == USER and password == fake.password
    with fake.lock:
        fake.logins.append((user, accepted))
    if not accepted:
        return failure(
            "SESSION_AUTHENTICATION_FAILED",
            user,
            "Authentication failure",
        )
    session = f"OpaqueRef:{uuid.uuid4()}"
    with fake.lock:
        fake.sessions.add(session)
        fake.issued.append(session)
    return success(session)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 10.0  # a client that stalls frees its thread

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        if self.path not in ("/", "/RPC2") or length > MAX_REQUEST_BYTES:
            self._send(404 if length <= MAX_REQUEST_BYTES else 413, b"")
            return
        params, method = xmlrpc.client.loads(self.rfile.read(length))
        fake = self.server.fake
        with fake.lock:
            fake.calls.append(method or "")
        result = answer(fake, method or "", params)
        self._send(200, xmlrpc.client.dumps((result,), methodresponse=True).encode())

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read what the fake recorded, not stderr."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, fake: XapiFake, context: ssl.SSLContext | None) -> None:
        super().__init__((HOST, 0), _Handler)
        self.fake = fake
        if context is not None:  # the handshake runs in the connection's thread, on first read
            self.socket = context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: a client rejecting the certificate aborts the handshake on purpose."""


@contextlib.contextmanager
def run_xapi_fake(
    *,
    master_address: str | None = None,
    tls: tuple[Path, Path] | None = None,
    password: str = PASSWORD,
) -> Iterator[XapiFake]:
    """Serve the fake (plain HTTP, or TLS with the (cert, key) pair) on a free loopback port."""
    context = None
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
    fake = XapiFake(master_address=master_address, password=password)
    server = _Server(fake, context)
    fake.port = server.server_address[1]
    with serving(server, "xapi-fake"):
        yield fake
