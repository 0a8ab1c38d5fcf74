"""A reload renews the web config too: a renewed certificate, new users and headers, no restart.

What a running TLS context cannot take (TLS turned on or off, other client certificate
settings) is refused like any bad file: the running web config and config stay in force.
"""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from tests.peers.exporter import RunningExporter, http_request, run_exporter
from tests.peers.pki import CertPair, Pki

RELOAD_GAUGE = "certero_flow_exporter_config_last_reload_successful"


def basic(user: str, password: str) -> dict[str, str]:
    """An Authorization header for HTTP basic auth."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def write_web_config(
    directory: Path, pair: CertPair, user: str, password: str, *, tls: str = "", rest: str = ""
) -> None:
    """web.yml serving `pair`, copied to server.crt and server.key as a renewal replaces them."""
    shutil.copyfile(pair.cert, directory / "server.crt")
    shutil.copyfile(pair.key, directory / "server.key")
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    (directory / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{tls}"
        f"basic_auth_users: {{{user}: '{hashed}'}}\n{rest}"
    )


def trusting(pki: Pki) -> ssl.SSLContext:
    """A client that trusts the test CA; host names are not the point here."""
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.check_hostname = False
    return context


def served_certificate(exporter: RunningExporter) -> bytes:
    """The DER certificate a new TLS connection to the exporter is served."""
    host, port = exporter.base_url.removeprefix("https://").split(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def der_of(pair: CertPair) -> bytes:
    """The DER form of a PEM certificate file."""
    return ssl.PEM_cert_to_DER_cert(pair.cert.read_text())


def request(exporter: RunningExporter, pki: Pki, path: str, user: str, password: str) -> int:
    """The status of GET `path` with these credentials, on a new connection."""
    url = exporter.base_url + path
    return http_request(url, headers=basic(user, password), context=trusting(pki))[0]


def reload_gauge(exporter: RunningExporter) -> str:
    """The value of the reload gauge as written in /metrics."""
    _, text = exporter.get("/metrics")
    return next(line.split()[1] for line in text.splitlines() if line.startswith(RELOAD_GAUGE))


@pytest.fixture
def exporter(pki: Pki, tmp_path: Path) -> Iterator[RunningExporter]:
    """An exporter serving pki.valid with user alice, from a web config that tests rewrite."""
    write_web_config(tmp_path, pki.valid, "alice", "first-pass")
    with run_exporter(
        None,
        tmp_path,
        ["--web.config.file", str(tmp_path / "web.yml")],
        ssl_context=trusting(pki),
        headers=basic("alice", "first-pass"),
    ) as running:
        yield running


def test_reload_renews_the_certificate_users_and_headers(
    exporter: RunningExporter, pki: Pki, tmp_path: Path
) -> None:
    """After a reload new connections get the renewed certificate, the new user and header."""
    assert served_certificate(exporter) == der_of(pki.valid)
    write_web_config(
        tmp_path,
        pki.wrong_host,
        "bob",
        "second-pass",
        rest="http_server_config: {headers: {X-Frame-Options: deny}}\n",
    )
    assert exporter.post("/-/reload") == (200, "Reloaded\n")
    assert served_certificate(exporter) == der_of(pki.wrong_host)
    assert request(exporter, pki, "/-/healthy", "alice", "first-pass") == 401
    assert request(exporter, pki, "/-/healthy", "bob", "second-pass") == 200
    with_bob = RunningExporter(
        exporter.process,
        exporter.base_url,
        exporter.config_path,
        exporter.log_path,
        trusting(pki),
        basic("bob", "second-pass"),
    )
    assert reload_gauge(with_bob) == "1.0"
    healthy = urllib.request.Request(
        exporter.base_url + "/-/healthy", headers=basic("bob", "second-pass")
    )
    with urllib.request.urlopen(healthy, timeout=30, context=trusting(pki)) as response:
        assert response.headers["X-Frame-Options"] == "deny"


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        (
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
            "tls_server_config: changing client_auth_type or the client CA needs a restart",
        ),
        ("  min_versoin: TLS13\n", "web.yml:4: tls_server_config.min_versoin: unknown field"),
    ],
)
def test_a_web_config_that_cannot_apply_keeps_both_files_in_force(
    exporter: RunningExporter, pki: Pki, tmp_path: Path, tls: str, message: str
) -> None:
    """A refused web config is a rejected reload: 500 with the reason, the old one still serves."""
    shutil.copyfile(pki.ca_cert, tmp_path / "ca.crt")
    write_web_config(tmp_path, pki.wrong_host, "alice", "first-pass", tls=tls)
    code, body = exporter.post("/-/reload")
    assert code == 500
    assert message in body
    assert reload_gauge(exporter) == "0.0"
    assert served_certificate(exporter) == der_of(pki.valid)
    assert request(exporter, pki, "/-/healthy", "alice", "first-pass") == 200
    write_web_config(tmp_path, pki.valid, "alice", "first-pass")
    assert exporter.post("/-/reload") == (200, "Reloaded\n")
    assert reload_gauge(exporter) == "1.0"


def test_turning_tls_off_needs_a_restart(
    exporter: RunningExporter, pki: Pki, tmp_path: Path
) -> None:
    """A reload cannot turn TLS off: the listener keeps serving TLS and the reload is refused."""
    hashed = bcrypt.hashpw(b"first-pass", bcrypt.gensalt(4)).decode()
    (tmp_path / "web.yml").write_text(f"basic_auth_users: {{alice: '{hashed}'}}\n")
    code, body = exporter.post("/-/reload")
    assert code == 500
    assert "turning TLS off needs a restart of the exporter" in body
    assert request(exporter, pki, "/-/healthy", "alice", "first-pass") == 200
