"""Prove the peer fixtures behave as the exporter's tests will rely on."""

from __future__ import annotations

import errno
import http.client
import socket
import ssl
import subprocess

import pytest

from tests.peers import netns as peers_netns
from tests.peers.netns import IsolatedHost
from tests.peers.nginx import BIG_BODY_BYTES, CHUNKED_BODY, HEALTH_BODY, Nginx
from tests.peers.pki import Pki
from tests.peers.ports import free_tcp_port
from tests.peers.sshd import Sshd, read_banner

PROBE_PORT = 8080


def _tls_error(pki: Pki, port: int) -> ssl.SSLCertVerificationError:
    """Handshake as a verifying client for "localhost" and return the verification error."""
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    with (
        pytest.raises(ssl.SSLCertVerificationError) as excinfo,
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost"),
    ):
        pass
    return excinfo.value


def _get(nginx: Nginx, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    """GET `path` over verified TLS from the valid port."""
    context = ssl.create_default_context(cafile=str(nginx.pki.ca_cert))
    conn = http.client.HTTPSConnection("localhost", nginx.valid_port, timeout=5, context=context)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def _ping(address: str) -> int:
    """Ping's exit status for three echo requests 0.2 s apart, each waited for 1 s: 0 when one
    reply came back (a first request may go while the fresh veth still resolves its neighbour
    on a loaded machine)."""
    return subprocess.run(
        ["ping", "-c3", "-i0.2", "-W1", address], capture_output=True, check=False
    ).returncode


def test_sshd_banner(sshd: Sshd) -> None:
    """The sshd fixture answers with an OpenSSH identification line."""
    assert read_banner(sshd.host, sshd.port).startswith("SSH-2.0-OpenSSH_")
    assert sshd.host_key_sha256_fingerprints["ssh-ed25519"].startswith("SHA256:")


def test_nginx_valid_port_verifies_and_serves_health(nginx: Nginx) -> None:
    """The valid port passes default verification against the test CA and serves /health."""
    response, body = _get(nginx, "/health")
    assert response.status == 200
    assert body == HEALTH_BODY


def test_nginx_valid_cert_expiry_matches_pki(nginx: Nginx) -> None:
    """The served certificate's notAfter equals the PKI's recorded not_after."""
    context = ssl.create_default_context(cafile=str(nginx.pki.ca_cert))
    with (
        socket.create_connection((nginx.host, nginx.valid_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    not_after = cert["notAfter"]
    assert isinstance(not_after, str)
    assert ssl.cert_time_to_seconds(not_after) == int(nginx.pki.valid.not_after.timestamp())


def test_nginx_routes(nginx: Nginx) -> None:
    """Error, redirect and 2 MiB routes answer as documented."""
    response, body = _get(nginx, "/status/500")
    assert (response.status, body) == (500, b"broken\n")
    response, _ = _get(nginx, "/redirect")
    assert (response.status, response.getheader("Location")) == (302, "/health")
    response, body = _get(nginx, "/big")
    assert response.status == 200
    assert len(body) == BIG_BODY_BYTES


def test_nginx_expired_port_fails_verification(nginx: Nginx) -> None:
    """The expired port fails verification because the certificate has expired."""
    error = _tls_error(nginx.pki, nginx.expired_port)
    assert "expired" in error.verify_message


def test_nginx_wrong_host_port_fails_hostname_check(nginx: Nginx) -> None:
    """The wrong-host port fails verification with a hostname mismatch."""
    error = _tls_error(nginx.pki, nginx.wrong_host_port)
    assert "hostname mismatch" in error.verify_message.lower()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_nginx_chunked_uses_chunked_encoding(nginx: Nginx, scheme: str) -> None:
    """curl -sv sees Transfer-Encoding: chunked and the chunked-ok body on /chunked."""
    port = nginx.http_port if scheme == "http" else nginx.valid_port
    result = subprocess.run(
        [
            "curl",
            "-sv",
            "--http1.1",
            "--max-time",
            "5",
            "--cacert",
            str(nginx.pki.ca_cert),
            f"{scheme}://localhost:{port}/chunked",
        ],
        capture_output=True,
        check=True,
    )
    assert b"< Transfer-Encoding: chunked" in result.stderr
    assert b"Content-Length" not in result.stderr
    assert result.stdout == CHUNKED_BODY


def test_isolated_host_drop_times_out(isolated_host: IsolatedHost) -> None:
    """A DROP rule makes a 1 s connect time out."""
    isolated_host.tcp_listener(PROBE_PORT)
    isolated_host.drop_all_tcp_to(PROBE_PORT)
    with pytest.raises(TimeoutError):
        socket.create_connection((isolated_host.address, PROBE_PORT), timeout=1).close()


def test_isolated_host_admin_prohibited_is_host_unreachable(isolated_host: IsolatedHost) -> None:
    """An icmp-admin-prohibited REJECT makes connect fail with EHOSTUNREACH."""
    isolated_host.tcp_listener(PROBE_PORT)
    isolated_host.reject_admin_prohibited(PROBE_PORT)
    with pytest.raises(OSError, match="No route to host") as excinfo:
        socket.create_connection((isolated_host.address, PROBE_PORT), timeout=1).close()
    assert excinfo.value.errno == errno.EHOSTUNREACH


def test_isolated_host_listener_accepts(isolated_host: IsolatedHost) -> None:
    """Without rules, a connect to the namespace listener succeeds."""
    isolated_host.tcp_listener(PROBE_PORT)
    with socket.create_connection((isolated_host.address, PROBE_PORT), timeout=1) as sock:
        assert sock.getpeername() == (isolated_host.address, PROBE_PORT)


def test_isolated_host_closed_port_refuses(isolated_host: IsolatedHost) -> None:
    """Without a listener or rules, the namespace kernel refuses the connect."""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((isolated_host.address, PROBE_PORT), timeout=1).close()


def test_isolated_host_ping_then_drop(isolated_host: IsolatedHost) -> None:
    """Ping to the namespace works, and fails once echo requests are dropped."""
    assert _ping(isolated_host.address) == 0
    isolated_host.drop_icmp_echo()
    assert _ping(isolated_host.address) != 0


def test_isolated_host_rules_at_creation() -> None:
    """Rules given to isolated_host() are in place before the body runs."""
    with peers_netns.isolated_host(rules=[["-A", "INPUT", "-p", "icmp", "-j", "DROP"]]) as host:
        assert _ping(host.address) != 0
        name = host.name
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert name not in listed.stdout


def test_free_tcp_port_is_bindable() -> None:
    """free_tcp_port returns a loopback port that can be bound right away."""
    port = free_tcp_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
