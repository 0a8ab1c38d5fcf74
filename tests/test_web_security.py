"""The exporter behind its web config: a real Prometheus scrapes it over TLS with basic auth.

The exporter and Prometheus are started once per module (each start costs a second or two);
every test reaches them over 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from exporter.cli import main
from tests.peers.exporter import RunningExporter, http_request, run_exporter
from tests.peers.pki import Pki, make_pki
from tests.peers.ports import free_tcp_port
from tests.peers.procs import stop_process
from tests.peers.prometheus import Prometheus, run_prometheus

USER = "prometheus"
PASSWORD = "scrape-secret-7f3a"
POLL_DEADLINE_S = 60.0


def basic(user: str, password: str) -> dict[str, str]:
    """An Authorization header for HTTP basic auth."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def client_context(pki: Pki, *, client_cert: bool = False) -> ssl.SSLContext:
    """A client that trusts the test CA, optionally presenting the test client certificate."""
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if client_cert:
        context.load_cert_chain(pki.client.cert, pki.client.key)
    return context


def fetch(
    url: str, context: ssl.SSLContext | None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    """GET `url`; the status and response headers, an HTTP error status included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            response.read()
            return int(response.status), dict(response.headers)
    except urllib.error.HTTPError as error:
        error.read()
        return int(error.code), dict(error.headers)


def write_web_config(path: Path, pki: Pki, extra: str = "") -> Path:
    """A web config with the test server certificate, one bcrypt user and a response header."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    path.write_text(
        f"tls_server_config:\n"
        f"  cert_file: {pki.valid.cert}\n"
        f"  key_file: {pki.valid.key}\n"
        f"  min_version: TLS12\n"
        f"{extra}"
        f"http_server_config:\n"
        f"  headers:\n"
        f"    X-Content-Type-Options: nosniff\n"
        f"basic_auth_users:\n"
        f"  {USER}: '{hashed}'\n"
    )
    return path


@pytest.fixture(scope="module")
def secured(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningExporter]:
    """The exporter serving https with basic auth from a web config file."""
    directory = tmp_path_factory.mktemp("secured")
    web_config = write_web_config(directory / "web.yml", pki)
    with run_exporter(
        None,
        directory,
        ["--web.config.file", str(web_config)],
        ssl_context=client_context(pki),
        headers=basic(USER, PASSWORD),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(
    secured: RunningExporter, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """A real Prometheus scraping the exporter with the right and with a wrong password."""
    target = secured.base_url.removeprefix("https://")

    def job(name: str, password: str) -> dict[str, Any]:
        return {
            "job_name": name,
            "scheme": "https",
            "tls_config": {"ca_file": str(pki.ca_cert)},
            "basic_auth": {"username": USER, "password": password},
            "static_configs": [{"targets": [target]}],
        }

    jobs = [job("certero", PASSWORD), job("wrong_password", "not-the-password")]
    with run_prometheus(tmp_path_factory.mktemp("prometheus"), jobs) as server:
        yield server


def test_prometheus_scrapes_over_tls_with_basic_auth(prometheus: Prometheus) -> None:
    """The right password makes the target up with samples stored; a wrong one ends in 401."""
    deadline = time.monotonic() + POLL_DEADLINE_S
    while True:
        targets = {target["labels"]["job"]: target for target in prometheus.targets()}
        good, bad = targets.get("certero", {}), targets.get("wrong_password", {})
        stored = prometheus.api("query", query='count(certero_flow_up{job="certero"})')["result"]
        if good.get("health") == "up" and bad.get("health") == "down" and stored:
            break
        assert time.monotonic() < deadline, (targets, stored, prometheus.log.read_text()[-3000:])
        time.sleep(0.2)
    assert good["lastError"] == ""
    assert good["scrapeUrl"].startswith("https://127.0.0.1:")
    assert "401" in bad["lastError"], bad["lastError"]
    assert int(stored[0]["value"][1]) > 0


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "no credentials"),
        (basic(USER, "wrong-password"), "wrong password"),
        (basic("somebody", PASSWORD), "unknown user"),
        ({"Authorization": "Basic not-base64!"}, "malformed header"),
        ({"Authorization": f"Bearer {PASSWORD}"}, "another scheme"),
    ],
)
def test_without_valid_credentials_the_answer_is_401_with_a_challenge(
    secured: RunningExporter, pki: Pki, headers: dict[str, str], why: str
) -> None:
    """Missing, wrong or malformed credentials get 401 and a Basic challenge, nothing else."""
    status, reply_headers = fetch(secured.base_url + "/metrics", client_context(pki), headers)
    assert status == 401, why
    assert reply_headers["WWW-Authenticate"].startswith('Basic realm="'), why
    assert reply_headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    ["/", "/metrics", "/probe?module=tcp&target=127.0.0.1:1", "/-/healthy", "/-/ready", "/nowhere"],
)
def test_every_route_is_guarded(secured: RunningExporter, pki: Pki, path: str) -> None:
    """Every route, an unknown one included, answers 401 without credentials."""
    status, _ = fetch(secured.base_url + path, client_context(pki))
    assert status == 401


def test_reload_is_guarded(secured: RunningExporter, pki: Pki) -> None:
    """POST /-/reload is refused without credentials and works with them."""
    status, _ = http_request(
        secured.base_url + "/-/reload", method="POST", context=client_context(pki)
    )
    assert status == 401
    assert secured.post("/-/reload") == (200, "Reloaded\n")


def test_right_credentials_reach_metrics_with_the_configured_header(
    secured: RunningExporter, pki: Pki
) -> None:
    """The right user and password get /metrics, with the web config's extra header."""
    status, headers = fetch(secured.base_url + "/metrics", client_context(pki), secured.headers)
    assert status == 200
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "certero_flow_catalogue_info" in secured.get("/metrics")[1]
    assert "tls=True basic_auth=True" in secured.log()
    assert "open to anyone" not in secured.log()


def test_an_open_listener_on_all_addresses_logs_one_warning(tmp_path: Path) -> None:
    """serve on 0.0.0.0 without a web config warns once, naming the routes and the flag."""
    log = tmp_path / "exporter.log"
    argv = [sys.executable, "-m", "exporter", "serve", "--listen", f"0.0.0.0:{free_tcp_port()}"]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + POLL_DEADLINE_S
        while "msg=starting" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        stop_process(process)
    warnings = [line for line in log.read_text().splitlines() if "logger=exporter.web " in line]
    warnings = [line for line in warnings if "level=WARNING" in line]
    assert len(warnings) == 1, warnings
    assert "/metrics and /probe are open to anyone who can reach the port" in warnings[0]
    assert "--web.config.file" in warnings[0]


def test_plain_http_to_the_tls_port_gets_no_answer(secured: RunningExporter) -> None:
    """A plain-HTTP request to the TLS listener gets no HTTP response at all."""
    plain = secured.base_url.replace("https://", "http://")
    with pytest.raises((OSError, http.client.HTTPException)):
        http_request(plain + "/metrics", headers=secured.headers)


def test_a_client_that_does_not_trust_the_ca_refuses_the_server(
    secured: RunningExporter, tmp_path: Path
) -> None:
    """The certificate served is the configured one: a client trusting another CA rejects it."""
    other = make_pki(tmp_path / "other")
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(secured.base_url + "/-/healthy", client_context(other), secured.headers)


@pytest.fixture(scope="module")
def mutual(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningExporter]:
    """The exporter requiring a client certificate issued by the test CA (no basic auth)."""
    directory = tmp_path_factory.mktemp("mutual")
    web_config = directory / "web.yml"
    web_config.write_text(
        f"tls_server_config:\n"
        f"  cert_file: {pki.valid.cert}\n"
        f"  key_file: {pki.valid.key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {pki.ca_cert}\n"
    )
    with run_exporter(
        None,
        directory,
        ["--web.config.file", str(web_config)],
        ssl_context=client_context(pki, client_cert=True),
    ) as running:
        yield running


def test_mtls_with_the_client_certificate_works(mutual: RunningExporter) -> None:
    """A client presenting a certificate from client_ca_file is served."""
    status, body = mutual.get("/metrics")
    assert status == 200
    assert "certero_flow_catalogue_info" in body


def http_over_tls(base_url: str, context: ssl.SSLContext) -> bytes:
    """Send one request over TLS and return the first bytes of the answer ('' if none).

    In TLS 1.3 the server checks the client certificate after the client considers the
    handshake done, so a refusal shows up as an alert or a closed connection on the first read.
    """
    host, port = base_url.removeprefix("https://").rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        try:
            tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return tls.recv(12)
        except (ssl.SSLError, ConnectionError):
            return b""


def test_mtls_answers_a_client_with_the_certificate(mutual: RunningExporter, pki: Pki) -> None:
    """The raw exchange used below does get an HTTP answer when the certificate is given."""
    assert http_over_tls(mutual.base_url, client_context(pki, client_cert=True)) == b"HTTP/1.1 200"


def test_mtls_without_a_client_certificate_gets_no_http_answer(
    mutual: RunningExporter, pki: Pki
) -> None:
    """Without a client certificate the connection ends before any HTTP answer (TLS 1.3)."""
    assert http_over_tls(mutual.base_url, client_context(pki)) == b""


def test_mtls_without_a_client_certificate_fails_the_tls12_handshake(
    mutual: RunningExporter, pki: Pki
) -> None:
    """In TLS 1.2 the server ends the handshake itself: the client never completes it."""
    context = client_context(pki)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        http_over_tls(mutual.base_url, context)


def test_mtls_with_a_certificate_from_another_ca_gets_no_http_answer(
    mutual: RunningExporter, pki: Pki, tmp_path: Path
) -> None:
    """A client certificate that client_ca_file did not issue is refused."""
    other = make_pki(tmp_path / "other")
    context = client_context(pki)
    context.load_cert_chain(other.client.cert, other.client.key)
    assert http_over_tls(mutual.base_url, context) == b""


@pytest.mark.parametrize(
    ("web_config", "message"),
    [
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
            "web.yml:2: tls_server_config.cert_file: cannot read ",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_fil: k\n",
            "web.yml:3: tls_server_config.key_fil: unknown field",
        ),
        (
            "basic_auth_users:\n  alice: secret\n",
            "web.yml:2: basic_auth_users.alice: not a bcrypt hash",
        ),
    ],
)
def test_a_bad_web_config_stops_serve_with_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], web_config: str, message: str
) -> None:
    """serve exits 1 before listening, naming file, line and key, without a traceback."""
    path = tmp_path / "web.yml"
    path.write_text(web_config)
    code = main(["serve", "--listen", "127.0.0.1:1", "--web.config.file", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err
    assert "Traceback" not in err


def test_a_key_that_does_not_match_the_certificate_exits_1_without_traceback(
    pki: Pki, tmp_path: Path
) -> None:
    """The real process: a mismatched key is one located message and exit status 1."""
    path = tmp_path / "web.yml"
    path.write_text(
        f"tls_server_config:\n  cert_file: {pki.valid.cert}\n  key_file: {pki.expired.key}\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--web.config.file",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert (
        f"{path}:3: tls_server_config.key_file: the key does not match the certificate"
        in done.stderr
    )
    assert "Traceback" not in done.stderr
