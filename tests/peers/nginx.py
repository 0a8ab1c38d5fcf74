"""One throwaway nginx serving valid/expired/wrong-host TLS and plain HTTP on fixed test routes."""

from __future__ import annotations

import contextlib
import http.client
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.peers.pki import Pki
from tests.peers.ports import free_tcp_port, wait_for_tcp
from tests.peers.procs import log_tail, stop_process

NGINX = "/usr/sbin/nginx"
HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0

HEALTH_BODY = b"flow-ok\n"
ERROR_BODY = b"broken\n"
BIG_BODY_BYTES = 2 * 1024 * 1024
CHUNKED_BODY = b"chunked-ok\n"


@dataclass(frozen=True)
class Nginx:
    """Ports of the one nginx process; every server answers the same routes."""

    valid_port: int
    expired_port: int
    wrong_host_port: int
    http_port: int
    pki: Pki
    directory: Path
    host: str = HOST


def big_body() -> bytes:
    """The exact /big payload (2 MiB, deterministic) so tests can compare sizes or digests."""
    pattern = b"0123456789abcdef" * 4 + b"\n"
    return (pattern * (BIG_BODY_BYTES // len(pattern) + 1))[:BIG_BODY_BYTES]


# `return` cannot produce 2 MiB and nginx sends static files with Content-Length; sub_filter
# clears Content-Length, so HTTP/1.1 clients get the static file chunked.
_LOCATIONS = """\
root {html};
absolute_redirect off;
gzip off;
location = /health {{ default_type text/plain; return 200 "flow-ok\\n"; }}
location = /status/500 {{ default_type text/plain; return 500 "broken\\n"; }}
location = /redirect {{ return 302 /health; }}
location = /big {{ default_type application/octet-stream; alias {html}/big.bin; }}
location = /chunked {{
    default_type text/plain;
    alias {html}/chunked.txt;
    chunked_transfer_encoding on;
    sub_filter_types text/plain;
    sub_filter "@@cfe-never-present@@" "";
    sub_filter_once on;
}}
location / {{ return 404; }}
"""


def _tls_server(port: int, cert: Path, key: Path, locations: Path) -> str:
    """One TLS server block; the cert decides which verification failure a client sees."""
    return (
        f"  server {{\n    listen {HOST}:{port} ssl;\n"
        f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n"
        f"    include {locations};\n  }}\n"
    )


def _write_config(directory: Path, pki: Pki, ports: dict[str, int]) -> Path:
    """nginx.conf with pid, logs and every *_temp_path inside `directory`, none in /var."""
    html = directory / "html"
    tmp = directory / "tmp"
    html.mkdir(mode=0o755)
    tmp.mkdir(mode=0o755)
    (html / "big.bin").write_bytes(big_body())
    (html / "chunked.txt").write_bytes(CHUNKED_BODY)
    for path in html.iterdir():
        path.chmod(0o644)  # read by workers running as nobody
    locations = directory / "locations.conf"
    locations.write_text(_LOCATIONS.format(html=html))
    servers = "".join(
        [
            _tls_server(ports["valid"], pki.valid.cert, pki.valid.key, locations),
            _tls_server(ports["expired"], pki.expired.cert, pki.expired.key, locations),
            _tls_server(ports["wrong_host"], pki.wrong_host.cert, pki.wrong_host.key, locations),
            f"  server {{\n    listen {HOST}:{ports['http']};\n    include {locations};\n  }}\n",
        ]
    )
    config = directory / "nginx.conf"
    config.write_text(
        f"""\
worker_processes 1;
pid {directory / "nginx.pid"};
events {{ worker_connections 128; }}
http {{
  access_log {directory / "access.log"};
  client_body_temp_path {tmp / "client_body"};
  proxy_temp_path {tmp / "proxy"};
  fastcgi_temp_path {tmp / "fastcgi"};
  uwsgi_temp_path {tmp / "uwsgi"};
  scgi_temp_path {tmp / "scgi"};
  default_type application/octet-stream;
  keepalive_timeout 5s;
{servers}}}
"""
    )
    return config


def _wait_for_http(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Poll /health on the plain port: proves a worker serves requests, not just that it bound."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with code {proc.returncode}:\n{log_tail(log)}")
        conn = http.client.HTTPConnection(HOST, port, timeout=1.0)
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            if response.status == 200 and response.read() == HEALTH_BODY:
                return
            last_error = f"HTTP {response.status}"
        except OSError as exc:
            last_error = repr(exc)
        finally:
            conn.close()
        time.sleep(0.05)
    raise RuntimeError(
        f"nginx /health on {HOST}:{port} not OK within {START_TIMEOUT_S} s "
        f"({last_error}):\n{log_tail(log)}"
    )


@contextlib.contextmanager
def run_nginx(pki: Pki) -> Iterator[Nginx]:
    """Start one nginx with the four servers on free loopback ports; stop it on exit."""
    directory = Path(tempfile.mkdtemp(prefix="cfe-nginx-"))
    directory.chmod(0o755)  # workers drop to nobody and must reach html/
    proc: subprocess.Popen[bytes] | None = None
    try:
        ports = {name: free_tcp_port(HOST) for name in ("valid", "expired", "wrong_host", "http")}
        config = _write_config(directory, pki, ports)
        base = [NGINX, "-e", "stderr", "-p", str(directory), "-c", str(config)]
        test = subprocess.run([*base, "-t", "-q"], check=False, capture_output=True, text=True)
        if test.returncode != 0:
            raise RuntimeError(f"nginx -t rejected {config}: {test.stderr.strip()}")
        log = directory / "nginx.log"
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [*base, "-g", "daemon off;"],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for port in ports.values():
            wait_for_tcp(HOST, port, START_TIMEOUT_S, proc=proc)
        _wait_for_http(proc, ports["http"], log)
        yield Nginx(
            valid_port=ports["valid"],
            expired_port=ports["expired"],
            wrong_host_port=ports["wrong_host"],
            http_port=ports["http"],
            pki=pki,
            directory=directory,
        )
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(directory, ignore_errors=True)
