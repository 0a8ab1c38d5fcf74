"""Secrets by reference, and no secret on any output surface of the exporter."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from exporter.checks.base import CheckSettings
from exporter.checks.https import HttpSettings
from exporter.config import parse_config
from exporter.errors import ConfigError, CredentialError
from exporter.secrets import Secret, SecretRef, redact_url, reveal, unreadable_secrets
from tests.fakes.tds import TdsFake, tds_server_thread
from tests.peers.exporter import RunningExporter, run_cli, run_exporter
from tests.peers.nginx import Nginx
from tests.peers.pki import Pki
from tests.peers.samba_smb import USER_PASSWORD as SMB_PASSWORD
from tests.peers.samba_smb import SambaSmb
from tests.peers.slapd import USER_PASSWORD, Slapd
from tests.peers.snmpd import COMMUNITY, SHA256_AES, Snmpd
from tests.peers.squid import PROXY_PASSWORD, Squid
from tests.peers.sshd import KEY_PASSPHRASE, LOGIN_PASSWORD, Sshd
from tests.peers.tns_listener import TnsListener, run_tns_listener
from tests.peers.vsphere_fake import USER as VSPHERE_USER
from tests.peers.vsphere_fake import VCENTER, VsphereFake, run_vsphere_fake
from tests.peers.xapi_fake import USER as XAPI_USER
from tests.peers.xapi_fake import XapiFake, run_xapi_fake

POLL_DEADLINE_S = 20.0
INLINE_HEADER = "S3CR3T-INLINE-HDR-7f3a"
INLINE_PATH = "S3CR3T-INLINE-PATH-91bd"
FILE_HEADER = "S3CR3T-FILE-HDR-c0de"
ENV_QUERY = "S3CR3T-ENV-QUERY-42ab"
ENV_COOKIE = "S3CR3T-ENV-COOKIE-5e6f"
SQL_WRONG_PASSWORD = "S3CR3T-SQL-WRONG-PW-2b1c"
SECRETS = (INLINE_HEADER, INLINE_PATH, FILE_HEADER, ENV_QUERY, ENV_COOKIE, SQL_WRONG_PASSWORD)
SQL_USER = "monitor"
ORACLE_PASSWORD = "S3CR3T-ORACLE-PW-3d9e"  # passed to the database driver, never sent by HTTP
LDAP_WRONG_PASSWORD = "S3CR3T-LDAP-WRONG-0b7d"
LDAP_SECRETS = (USER_PASSWORD, LDAP_WRONG_PASSWORD)  # the bind password by file, a wrong one inline
SMB_WRONG_PASSWORD = "S3CR3T-SMB-WRONG-4e1a"
SMB_SECRETS = (SMB_PASSWORD, SMB_WRONG_PASSWORD)  # the login password by file, a wrong one inline
VSPHERE_PASSWORD = "S3CR3T-VSPHERE-PW-6a1f"  # the vCenter login's password, by file
VSPHERE_WRONG_PASSWORD = "S3CR3T-VSPHERE-WRONG-8c2e"
XAPI_PASSWORD = "S3CR3T-XAPI-PW-4d7b"  # the XAPI login's password, by env
XAPI_WRONG_PASSWORD = "S3CR3T-XAPI-WRONG-1e5c"
INFRASTRUCTURE_SECRETS = (
    VSPHERE_PASSWORD,
    VSPHERE_WRONG_PASSWORD,
    XAPI_PASSWORD,
    XAPI_WRONG_PASSWORD,
)
XAPI_VARIABLE = "CFE_TEST_XAPI_PASSWORD"
PROXY_WRONG_PASSWORD = "S3CR3T-PROXY-WRONG-8c2d"
PROXY_SECRETS = (PROXY_PASSWORD, PROXY_WRONG_PASSWORD)  # the proxy's password by file, a wrong one
SSH_WRONG_PASSWORD = "S3CR3T-SSH-WRONG-3f7a"
SSH_SECRETS = (LOGIN_PASSWORD, SSH_WRONG_PASSWORD, KEY_PASSPHRASE)
SNMP_WRONG_COMMUNITY = "S3CR3T-SNMP-WRONG-COMMUNITY-9a1f"
assert SHA256_AES.auth_password is not None
assert SHA256_AES.priv_password is not None
# the community by file, the v3 auth password inline, the priv password by env, a wrong community
SNMP_SECRETS = (
    COMMUNITY,
    SHA256_AES.auth_password,
    SHA256_AES.priv_password,
    SNMP_WRONG_COMMUNITY,
)
SNMP_PRIV_VARIABLE = "CFE_TEST_SNMP_PRIV"
QUERY_VARIABLE = "CFE_TEST_QUERY_TOKEN"
COOKIE_VARIABLE = "CFE_TEST_COOKIE"
MAX_RECORDED = 10_000  # requests kept by a capturing peer; the exporter runs for seconds only


def found_secrets(text: str) -> list[str]:
    """The test secrets that occur in `text`."""
    everything = (
        *SECRETS,
        ORACLE_PASSWORD,
        *LDAP_SECRETS,
        *SMB_SECRETS,
        *INFRASTRUCTURE_SECRETS,
        *PROXY_SECRETS,
        *SSH_SECRETS,
        *SNMP_SECRETS,
    )
    return [secret for secret in everything if secret in text]


# --- references -----------------------------------------------------------------------------


def test_secret_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets are read from a file (final line break dropped) or an environment variable."""
    secret_file = tmp_path / "ldap"
    secret_file.write_text("s3cret-value\n", encoding="utf-8")
    from_file = SecretRef(file=secret_file)
    assert from_file.reveal() == "s3cret-value"
    assert repr(from_file) == f"SecretRef({{file: {secret_file}}})"
    monkeypatch.setenv("CFE_TEST_SECRET", "env-s3cret")
    from_env = SecretRef(env="CFE_TEST_SECRET")
    assert reveal(from_env) == "env-s3cret"
    assert str(from_env) == "{env: CFE_TEST_SECRET}"
    assert reveal("inline") == "inline"


def test_rotated_secret_file_is_read_again(tmp_path: Path) -> None:
    """A file rewritten in place or replaced by a new one is read anew on the next reveal."""
    secret_file = tmp_path / "token"
    secret_file.write_text("first\n", encoding="utf-8")
    reference = SecretRef(file=secret_file)
    assert reference.reveal() == "first"
    secret_file.write_text("second-longer\n", encoding="utf-8")
    assert reference.reveal() == "second-longer"
    replacement = tmp_path / "token.new"
    replacement.write_text("third-by-rename\n", encoding="utf-8")
    os.replace(replacement, secret_file)
    assert reference.reveal() == "third-by-rename"


def test_secret_errors_name_the_reference_only(tmp_path: Path) -> None:
    """A missing secret names the file or variable, and a ref needs exactly one source."""
    with pytest.raises(CredentialError, match="missing-secret: No such file"):
        SecretRef(file=tmp_path / "missing-secret").reveal()
    with pytest.raises(CredentialError, match="environment variable CFE_UNSET_VARIABLE is not"):
        SecretRef(env="CFE_UNSET_VARIABLE").reveal()
    with pytest.raises(ValueError, match="exactly one"):
        SecretRef()
    with pytest.raises(ValueError, match="exactly one"):
        SecretRef(file=tmp_path, env="X")


def test_unusable_secret_files_never_block_nor_show_content(tmp_path: Path) -> None:
    """A FIFO, a device, a directory, an oversized or a non-UTF-8 file: refused, bytes unshown."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for unusable, kind in (
        (fifo, r"a FIFO \(named pipe\)"),
        (Path("/dev/zero"), "a character device"),
        (tmp_path, "a directory"),
    ):
        with pytest.raises(CredentialError, match=f"is {kind}; the secret file must be a regular"):
            SecretRef(file=unusable).reveal()
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    with pytest.raises(CredentialError, match="over the 64 KiB limit for a secret file"):
        SecretRef(file=big).reveal()
    latin1 = tmp_path / "latin1"
    latin1.write_bytes(INLINE_HEADER.encode() + b"\xe9")
    with pytest.raises(CredentialError, match="is not UTF-8") as caught:
        SecretRef(file=latin1).reveal()
    shown = "".join(traceback.format_exception(caught.value))
    assert found_secrets(shown) == []


def test_settings_repr_never_shows_a_secret_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inline Secret values are hidden in repr and str; references show their name only."""
    monkeypatch.setenv(QUERY_VARIABLE, ENV_QUERY)
    settings = HttpSettings.model_validate(
        {
            "headers": {"Authorization": f"Bearer {INLINE_HEADER}"},
            "query": {"token": {"env": QUERY_VARIABLE}, "inline": INLINE_PATH},
        }
    )
    for text in (repr(settings), str(settings)):
        assert found_secrets(text) == []
        assert "'Authorization': '<redacted>'" in text
        assert f"SecretRef({{env: {QUERY_VARIABLE}}})" in text


class PasswordSettings(CheckSettings):
    """The shape a check with a password or community takes: one `Secret` field each."""

    password: Secret
    community: Secret | None = None


def test_any_secret_field_is_hidden_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain or optional `Secret` field is hidden in repr and its reference is checked."""
    monkeypatch.delenv("CFE_TEST_UNSET_TOKEN", raising=False)
    settings = PasswordSettings.model_validate(
        {"password": INLINE_HEADER, "community": {"env": "CFE_TEST_UNSET_TOKEN"}}
    )
    assert repr(settings) == (
        "PasswordSettings(password='<redacted>', community=SecretRef({env: CFE_TEST_UNSET_TOKEN}))"
    )
    assert list(unreadable_secrets(settings)) == [
        (("community",), "environment variable CFE_TEST_UNSET_TOKEN is not set")
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([f"Bearer {INLINE_HEADER}"], "a secret is a string, {file: PATH} or {env: NAME}"),
        (
            {"k": INLINE_HEADER},
            "a secret is a string, {file: PATH} or {env: NAME} (exactly one key)",
        ),
        (
            {"env": "A", "file": "/b"},
            "a secret is a string, {file: PATH} or {env: NAME} (exactly one key)",
        ),
        ({"file": 5}, "file must be a non-empty string"),
        ({"env": ""}, "env must be a non-empty string"),
    ],
)
def test_malformed_secret_is_a_config_problem_without_the_value(
    value: object, message: str
) -> None:
    """A Secret setting of the wrong shape is one located problem that repeats no value."""
    text = f"extra_flows:\n  - id: api\n    check: http\n    target: 127.0.0.1:8080\n    headers: {{Authorization: {value!r}}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text.replace("'", '"'), "inline.yaml")
    assert str(caught.value) == f"inline.yaml:5: extra_flows[0].headers.Authorization: {message}"
    assert found_secrets(str(caught.value)) == []


def test_validate_reports_unreadable_references_where_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unset variable and a missing file are problems with file, line and field path."""
    monkeypatch.delenv("CFE_TEST_UNSET_TOKEN", raising=False)
    missing = tmp_path / "missing"
    text = (
        "targets: {application_server: [127.0.0.1]}\n"
        f"flows: {{https_app_relay: {{query: {{key: {{file: {missing}}}}}}}}}\n"
        "extra_flows:\n"
        "  - id: api\n"
        "    check: http\n"
        "    target: 127.0.0.1:8080\n"
        "    headers:\n"
        f"      X-Inline: {INLINE_HEADER}\n"
        "      Authorization: {env: CFE_TEST_UNSET_TOKEN}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "inline.yaml")
    assert [str(problem) for problem in caught.value.problems] == [
        f"inline.yaml:2: flows.https_app_relay.query.key: cannot read secret file {missing}: "
        "No such file or directory",
        "inline.yaml:9: extra_flows[0].headers.Authorization: "
        "environment variable CFE_TEST_UNSET_TOKEN is not set",
    ]


def test_unreadable_secrets_walks_nested_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reference of a settings model is tried, with its path inside the model."""
    monkeypatch.setenv(QUERY_VARIABLE, ENV_QUERY)
    monkeypatch.delenv("CFE_TEST_UNSET_TOKEN", raising=False)
    settings = HttpSettings.model_validate(
        {
            "headers": {"A": {"env": "CFE_TEST_UNSET_TOKEN"}, "B": "inline"},
            "query": {"ok": {"env": QUERY_VARIABLE}},
        }
    )
    assert list(unreadable_secrets(settings)) == [
        (("headers", "A"), "environment variable CFE_TEST_UNSET_TOKEN is not set")
    ]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/health", "/health"),
        ("/health?token=abc", "/health?token=<redacted>"),
        ("/h?a=1&b=&bare", "/h?a=<redacted>&b=&<redacted>"),
        (
            "https://user:pw@host:8443/x?k=v#frag",
            "https://<redacted>@host:8443/x?k=<redacted>#<redacted>",
        ),
        ("https://host/p@q?k=v", "https://host/p@q?k=<redacted>"),
        ("http://[::1]:80/", "http://[::1]:80/"),
        ("//evil@host/?", "//evil@host/?"),
        ("not a url ?\x00=\xff", "not a url ?\x00=<redacted>"),
    ],
)
def test_redact_url(text: str, shown: str) -> None:
    """Userinfo, query values and fragments are replaced; anything else is kept as given."""
    assert redact_url(text) == shown


# --- every output surface -------------------------------------------------------------------


class CapturingPeer:
    """A loopback HTTP server on its own thread that records what each request carried."""

    def __init__(self, host: str, redirect_to: str = "") -> None:
        self.requests: list[str] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if len(peer.requests) < MAX_RECORDED:
                    peer.requests.append(f"{self.requestline}\n{self.headers}")
                if self.path.startswith("/go") and redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                elif self.path.startswith("/fail"):
                    self.send_response(500)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test reads what was recorded, not stderr."""

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CapturingPeer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def text(self) -> str:
        return "\n".join(self.requests)


@pytest.fixture
def peers() -> Iterator[tuple[CapturingPeer, CapturingPeer]]:
    """The flows' own target on 127.0.0.1, and another host its redirect points to."""
    with (
        CapturingPeer("127.0.0.2") as other,
        CapturingPeer("127.0.0.1", f"http://127.0.0.2:{other.port}/landing") as own,
    ):
        yield own, other


@pytest.fixture
def sql() -> Iterator[TdsFake]:
    """The SQL Server of the SQL flows: it takes the file's secret as the login's password."""
    with tds_server_thread(SQL_USER, FILE_HEADER) as fake:
        yield fake


def write_config(path: Path, secret_file: Path, port: int, extra: str = "") -> None:
    """Four flows carrying secrets inline, by file and by env, in headers, query and path."""
    target = f'"127.0.0.1:{port}"'
    path.write_text(
        "source: endpoint_server\n"
        "defaults: {interval: 1s, timeout: 1s}\n"
        "scheduler: {startup_spread: 0.1s}\n"
        "extra_flows:\n"
        f"  - id: api_inline\n    check: http\n    target: {target}\n"
        f'    path: "/health?token={INLINE_PATH}"\n'
        f'    headers: {{Authorization: "Bearer {INLINE_HEADER}"}}\n'
        f"  - id: api_by_reference\n    check: http\n    target: {target}\n"
        f"    headers: {{X-Api-Key: {{file: {secret_file}}}, Cookie: {{env: {COOKIE_VARIABLE}}}}}\n"
        f"    query: {{key: {{env: {QUERY_VARIABLE}}}}}\n"
        f"  - id: api_redirect\n    check: http\n    target: {target}\n"
        f'    path: "/go?token={INLINE_PATH}"\n    follow_redirects: true\n'
        f'    headers: {{Authorization: "Bearer {INLINE_HEADER}", X-Api-Key: {{file: {secret_file}}}}}\n'
        f"    query: {{key: {{env: {QUERY_VARIABLE}}}}}\n"
        f"  - id: api_failing\n    check: http\n    target: {target}\n"
        f'    path: "/fail?token={INLINE_PATH}"\n'
        f'    headers: {{Authorization: "Bearer {INLINE_HEADER}"}}\n'
        f"    query: {{key: {{env: {QUERY_VARIABLE}}}}}\n" + extra,
        encoding="utf-8",
    )


def sql_flows(secret_file: Path, port: int) -> str:
    """A SQL login whose password is the file's secret, and one with a wrong inline password."""
    target = f'"127.0.0.1:{port}"'
    return (
        f"  - id: sql_login\n    check: mssql\n    target: {target}\n"
        f"    username: {SQL_USER}\n    password: {{file: {secret_file}}}\n"
        f"  - id: sql_wrong\n    check: mssql\n    target: {target}\n"
        f"    username: {SQL_USER}\n    password: {SQL_WRONG_PASSWORD}\n"
    )


def ldap_flows(slapd: Slapd, password_file: Path) -> str:
    """Two LDAP flows: a bind with the password by file, and a wrong password inline."""
    return (
        f"  - id: ldap_bind\n    check: ldap\n    target: 127.0.0.1:{slapd.ldap_port}\n"
        f"    bind_dn: {slapd.user_dn}\n    password: {{file: {password_file}}}\n"
        f"  - id: ldap_wrong\n    check: ldaps\n    target: 127.0.0.1:{slapd.ldaps_port}\n"
        f"    ca_file: {slapd.ca_cert}\n"
        f"    bind_dn: {slapd.user_dn}\n    password: {LDAP_WRONG_PASSWORD}\n"
    )


def smb_flows(samba: SambaSmb, password_file: Path) -> str:
    """Two SMB flows: a login and tree connect with the password by file, a wrong one inline."""
    target = f'"127.0.0.1:{samba.port}"'
    return (
        f"  - id: smb_login\n    check: smb\n    target: {target}\n"
        f"    username: {samba.user}\n    password: {{file: {password_file}}}\n"
        f"  - id: smb_wrong\n    check: smb\n    target: {target}\n"
        f"    username: {samba.user}\n    password: {SMB_WRONG_PASSWORD}\n"
    )


def infrastructure_flows(
    vcenter: VsphereFake, xapi: XapiFake, ca_file: Path, password_file: Path
) -> str:
    """vSphere and XAPI logins: the right password by file or env, a wrong one inline."""
    vsphere = f"    check: vsphere\n    target: 127.0.0.1:{vcenter.port}\n    ca_file: {ca_file}\n"
    return (
        f"  - id: vsphere_login\n{vsphere}"
        f"    username: {VSPHERE_USER}\n    password: {{file: {password_file}}}\n"
        f"  - id: vsphere_wrong\n{vsphere}"
        f"    username: {VSPHERE_USER}\n    password: {VSPHERE_WRONG_PASSWORD}\n"
        f"  - id: xapi_login\n    check: xenapi\n    target: 127.0.0.1:{xapi.port}\n"
        f"    username: {XAPI_USER}\n    password: {{env: {XAPI_VARIABLE}}}\n"
        f"  - id: xapi_wrong\n    check: xenapi\n    target: 127.0.0.1:{xapi.port}\n"
        f"    username: {XAPI_USER}\n    password: {XAPI_WRONG_PASSWORD}\n"
    )


INFRASTRUCTURE_FLOWS = ("vsphere_login", "vsphere_wrong", "xapi_login", "xapi_wrong")


def proxy_flows(nginx: Nginx, squid: Squid, password_file: Path) -> str:
    """Two HTTPS flows through squid's auth port: the password by file, and a wrong one inline."""
    common = (
        f'    check: https\n    target: "127.0.0.1:{nginx.valid_port}"\n'
        f"    ca_file: {nginx.pki.ca_cert}\n    server_name: localhost\n    path: /health\n"
        f'    proxy: "http://127.0.0.1:{squid.auth_port}"\n    proxy_username: {squid.username}\n'
    )
    return (
        f"  - id: proxied\n{common}    proxy_password: {{file: {password_file}}}\n"
        f"  - id: proxied_wrong\n{common}    proxy_password: {PROXY_WRONG_PASSWORD}\n"
    )


def ssh_flows(sshd: Sshd, password_file: Path) -> str:
    """SSH logins: the password by file, a wrong one inline, an encrypted key and its passphrase."""
    common = (
        f'    check: ssh\n    target: "127.0.0.1:{sshd.port}"\n    username: {sshd.login_user}\n'
    )
    return (
        f"  - id: ssh_login\n{common}    password: {{file: {password_file}}}\n"
        f"  - id: ssh_wrong\n{common}    password: {SSH_WRONG_PASSWORD}\n"
        f"  - id: ssh_key\n{common}    client_keys: [{{file: {sshd.encrypted_client_key}}}]\n"
        f'    client_key_passphrase: "{KEY_PASSPHRASE}"\n'
    )


def snmp_flows(snmpd: Snmpd, community_file: Path) -> str:
    """SNMP flows: v2c with the community by file, v3 authPriv, and a wrong community inline."""
    target = f'"127.0.0.1:{snmpd.port}"'
    user = SHA256_AES
    return (
        f"  - id: snmp_v2c\n    check: snmp\n    target: {target}\n"
        f"    community: {{file: {community_file}}}\n"
        f"  - id: snmp_v3\n    check: snmp\n    target: {target}\n"
        f"    username: {user.name}\n    auth_protocol: {user.auth_protocol}\n"
        f'    auth_password: "{user.auth_password}"\n    priv_protocol: {user.priv_protocol}\n'
        f"    priv_password: {{env: {SNMP_PRIV_VARIABLE}}}\n"
        f"  - id: snmp_wrong\n    check: snmp\n    target: {target}\n"
        f"    community: {SNMP_WRONG_COMMUNITY}\n"
    )


SNMP_FLOWS = ("snmp_v2c", "snmp_v3", "snmp_wrong")
FLOWS = (
    "api_inline",
    "api_by_reference",
    "api_redirect",
    "api_failing",
    "sql_login",
    "sql_wrong",
    "ldap_bind",
    "ldap_wrong",
    "smb_login",
    "smb_wrong",
    "proxied",
    "proxied_wrong",
    "ssh_login",
    "ssh_wrong",
    "ssh_key",
)


def oracle_flow(port: int) -> str:
    """A database login flow whose password is inline in the config."""
    return (
        f'  - id: db_oracle\n    check: oracle_tns\n    target: "127.0.0.1:{port}"\n'
        f'    service_name: orclpdb1\n    username: scott\n    password: "{ORACLE_PASSWORD}"\n'
    )


@pytest.fixture
def tns() -> Iterator[TnsListener]:
    """A fake Oracle listener for the login flow: the driver gets as far as its ACCEPT."""
    with run_tns_listener(services=("orclpdb1",)) as listener:
        yield listener


def wait_for_every_flow(exporter: RunningExporter, flows: tuple[str, ...] = FLOWS) -> str:
    """Scrape until each flow has a result; return that scrape."""
    deadline = time.monotonic() + POLL_DEADLINE_S
    while True:
        status, text = exporter.get("/metrics")
        assert status == 200
        if all(f'certero_flow_up{{flow="{flow}"' in text for flow in flows):
            return text
        assert time.monotonic() < deadline, f"not every flow was checked:\n{text[:2000]}"
        time.sleep(0.1)


def run_debug_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line with every log line on, so the grep sees the most it can."""
    return run_cli("--log-level", "debug", *args, timeout=60)


@dataclass(frozen=True)
class InfrastructurePeers:
    """The fake vCenter and XAPI whose logins carry the test passwords, a real squid demanding
    basic auth in front of the real nginx, and the real sshd of the login flows."""

    vcenter: VsphereFake
    xapi: XapiFake
    ca_file: Path
    nginx: Nginx
    squid: Squid
    sshd: Sshd


@pytest.fixture
def infrastructure(
    pki: Pki, nginx: Nginx, squid: Squid, sshd: Sshd
) -> Iterator[InfrastructurePeers]:
    """A fake vCenter and a fake XAPI, each knowing its test password, and the real servers."""
    with (
        run_vsphere_fake(
            VCENTER, pki.valid.cert, pki.valid.key, password=VSPHERE_PASSWORD
        ) as vcenter,
        run_xapi_fake(password=XAPI_PASSWORD) as xapi,
    ):
        yield InfrastructurePeers(vcenter, xapi, pki.ca_cert, nginx, squid, sshd)


@dataclass(frozen=True)
class DatabasePeers:
    """The directory, database and file-sharing peers whose logins carry the test passwords."""

    sql: TdsFake
    tns: TnsListener
    slapd: Slapd
    samba: SambaSmb
    snmpd: Snmpd


@pytest.fixture
def databases(
    sql: TdsFake, tns: TnsListener, slapd: Slapd, samba_smb: SambaSmb, snmpd: Snmpd
) -> DatabasePeers:
    """The SQL Server fake, the Oracle listener fake, the real slapd, smbd and snmpd, together."""
    return DatabasePeers(sql, tns, slapd, samba_smb, snmpd)


def test_no_output_surface_shows_a_secret(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    peers: tuple[CapturingPeer, CapturingPeer],
    databases: DatabasePeers,
    infrastructure: InfrastructurePeers,
) -> None:
    """Metrics, page, probe debug, debug log, check output, validate and reload errors show
    no secret, while the flow's own target did receive every one of them."""
    sql, tns, slapd, samba = databases.sql, databases.tns, databases.slapd, databases.samba
    nginx, squid, sshd = infrastructure.nginx, infrastructure.squid, infrastructure.sshd
    snmpd = databases.snmpd
    own, other = peers
    secret_file = tmp_path / "api-key"
    secret_file.write_text(FILE_HEADER + "\n", encoding="utf-8")
    ldap_password_file = tmp_path / "ldap-password"
    ldap_password_file.write_text(USER_PASSWORD + "\n", encoding="utf-8")
    smb_password_file = tmp_path / "smb-password"
    smb_password_file.write_text(SMB_PASSWORD + "\n", encoding="utf-8")
    vsphere_password_file = tmp_path / "vsphere-password"
    vsphere_password_file.write_text(VSPHERE_PASSWORD + "\n", encoding="utf-8")
    vcenter, xapi = infrastructure.vcenter, infrastructure.xapi
    monkeypatch.setenv(XAPI_VARIABLE, XAPI_PASSWORD)
    proxy_password_file = tmp_path / "proxy-password"
    proxy_password_file.write_text(PROXY_PASSWORD + "\n", encoding="utf-8")
    ssh_password_file = tmp_path / "ssh-password"
    ssh_password_file.write_text(LOGIN_PASSWORD + "\n", encoding="utf-8")
    community_file = tmp_path / "snmp-community"
    community_file.write_text(COMMUNITY + "\n", encoding="utf-8")
    assert SHA256_AES.priv_password is not None
    monkeypatch.setenv(SNMP_PRIV_VARIABLE, SHA256_AES.priv_password)
    monkeypatch.setenv(QUERY_VARIABLE, ENV_QUERY)
    monkeypatch.setenv(COOKIE_VARIABLE, ENV_COOKIE)
    config = tmp_path / "config.yaml"
    extra = (
        sql_flows(secret_file, sql.port)
        + ldap_flows(slapd, ldap_password_file)
        + smb_flows(samba, smb_password_file)
        + oracle_flow(tns.port)
        + infrastructure_flows(vcenter, xapi, infrastructure.ca_file, vsphere_password_file)
        + proxy_flows(nginx, squid, proxy_password_file)
        + ssh_flows(sshd, ssh_password_file)
        + snmp_flows(snmpd, community_file)
    )
    write_config(config, secret_file, own.port, extra)
    probe_targets = {
        "sql_login": f"127.0.0.1:{sql.port}",
        "sql_wrong": f"127.0.0.1:{sql.port}",
        "ldap_bind": f"127.0.0.1:{slapd.ldap_port}",
        "ldap_wrong": f"127.0.0.1:{slapd.ldaps_port}",
        "smb_login": f"127.0.0.1:{samba.port}",
        "smb_wrong": f"127.0.0.1:{samba.port}",
        "vsphere_login": f"127.0.0.1:{vcenter.port}",
        "vsphere_wrong": f"127.0.0.1:{vcenter.port}",
        "xapi_login": f"127.0.0.1:{xapi.port}",
        "xapi_wrong": f"127.0.0.1:{xapi.port}",
        "proxied": f"127.0.0.1:{nginx.valid_port}",
        "proxied_wrong": f"127.0.0.1:{nginx.valid_port}",
        "ssh_login": f"127.0.0.1:{sshd.port}",
        "ssh_wrong": f"127.0.0.1:{sshd.port}",
        "ssh_key": f"127.0.0.1:{sshd.port}",
        **{flow: f"127.0.0.1:{snmpd.port}" for flow in SNMP_FLOWS},
    }
    surfaces: dict[str, str] = {}

    with run_exporter(config, tmp_path, global_args=["--log-level", "debug"]) as exporter:
        surfaces["/metrics"] = wait_for_every_flow(
            exporter, (*FLOWS, *INFRASTRUCTURE_FLOWS, *SNMP_FLOWS, "db_oracle")
        )
        surfaces["/"] = exporter.get("/")[1]
        for flow in (*FLOWS, *INFRASTRUCTURE_FLOWS, *SNMP_FLOWS):
            target = probe_targets.get(flow, f"127.0.0.1:{own.port}")
            status, body = exporter.get(f"/probe?module={flow}&target={target}&debug=true")
            assert status == 200
            assert "Logs for the probe" in body
            surfaces[f"/probe {flow}"] = body
        status, body = exporter.get(
            f"/probe?module=db_oracle&target=127.0.0.1:{tns.port}&debug=true"
        )
        assert "ORA-01017" in body  # the login ran: the driver had the password
        surfaces["/probe db_oracle"] = body
        good = config.read_bytes()
        config.write_bytes(good + b"# caf\xe9\n")
        status, body = exporter.post("/-/reload")
        assert status == 500
        assert "not UTF-8" in body
        surfaces["POST /-/reload"] = body
        config.write_bytes(good)
        surfaces["debug log"] = exporter.log()
    assert "level=DEBUG" in surfaces["debug log"]
    assert "detail=HTTP 200 OK for GET /health?token=<redacted>" in surfaces["/probe api_inline"]
    assert "detail=HTTP 200 OK for GET /?key=<redacted>" in surfaces["/probe api_by_reference"]
    assert "api_failing" in surfaces["/"]
    # the LDAP passwords reached slapd: one bind succeeded, the other was refused
    assert f"bound as 'dn:{slapd.user_dn}'" in surfaces["/probe ldap_bind"]
    assert "bind failed: invalidCredentials (49)" in surfaces["/probe ldap_wrong"]
    # the SMB passwords reached smbd: one login and tree connect passed, the other was refused
    assert f"tree connect to ADMIN$ as {samba.user}" in surfaces["/probe smb_login"]
    assert "STATUS_LOGON_FAILURE (0xC000006D)" in surfaces["/probe smb_wrong"]
    # the vSphere and XAPI passwords reached their fakes: one login each accepted, one refused
    assert "accepted and logged out" in surfaces["/probe vsphere_login"]
    assert "Login answered with fault InvalidLogin" in surfaces["/probe vsphere_wrong"]
    assert "login as 'root' accepted, logged out" in surfaces["/probe xapi_login"]
    assert "SESSION_AUTHENTICATION_FAILED" in surfaces["/probe xapi_wrong"]
    assert "flow xapi_login: a login over plain HTTP" in surfaces["debug log"]
    # both proxy passwords reached squid: one tunnel opened, the other was refused
    assert f"through proxy http://127.0.0.1:{squid.auth_port}" in surfaces["/probe proxied"]
    assert "credentials rejected" in surfaces["/probe proxied_wrong"]
    # the SSH password and the key's passphrase reached their use: two logins, one refusal
    assert f"logged in as '{sshd.login_user}' (password)" in surfaces["/probe ssh_login"]
    assert f"logged in as '{sshd.login_user}' (key)" in surfaces["/probe ssh_key"]
    assert f"login as '{sshd.login_user}' refused" in surfaces["/probe ssh_wrong"]
    # the SNMP community and pass phrases reached snmpd: two GETs answered, one dropped
    assert "detail=SNMPv2c: snmp-test.example.test" in surfaces["/probe snmp_v2c"]
    assert "detail=SNMPv3 authPriv as certero-sha256-aes:" in surfaces["/probe snmp_v3"]
    assert "the community is wrong" in surfaces["/probe snmp_wrong"]

    for fmt in ("table", "json", "junit", "markdown", "html"):
        done = run_debug_cli("check", "--config", str(config), "--format", fmt, "--no-progress")
        assert done.returncode == 1  # api_failing fails on purpose
        assert "api_inline" in done.stdout
        surfaces[f"check --format {fmt}"] = done.stdout + done.stderr
    rules = tmp_path / "rules.csv"
    done = run_debug_cli(
        "check", "--config", str(config), "--format", "csv", "--report", str(rules), "--no-progress"
    )
    assert done.returncode == 1
    assert "snmp_wrong" in rules.read_text(encoding="utf-8")  # a wrong community is silence
    surfaces["check --format csv --report"] = (
        done.stdout + done.stderr + rules.read_text(encoding="utf-8")
    )

    broken = tmp_path / "broken.yaml"
    write_config(
        broken,
        tmp_path / "no-such-file",
        own.port,
        extra="  - {id: api_unset, check: http, target: 127.0.0.1:1, headers: {A: {env: CFE_TEST_UNSET_TOKEN}}}\n",
    )
    monkeypatch.delenv("CFE_TEST_UNSET_TOKEN", raising=False)
    done = run_debug_cli("validate", str(broken))
    assert done.returncode == 1
    assert f"{broken}:13: extra_flows[1].headers.X-Api-Key: cannot read secret file" in done.stderr
    assert (
        f"{broken}:28: extra_flows[4].headers.A: environment variable CFE_TEST_UNSET_TOKEN is not set"
        in done.stderr
    )
    surfaces["validate"] = done.stdout + done.stderr

    leaks = {name: found_secrets(text) for name, text in surfaces.items() if found_secrets(text)}
    assert leaks == {}
    # the sessions the logins opened are credentials too: no vmware_soap_session cookie and
    # no XAPI session reference shows anywhere
    session_tokens = [*vcenter.sessions, *xapi.issued]
    assert len(xapi.issued) >= 2
    assert [
        name for name, text in surfaces.items() if any(token in text for token in session_tokens)
    ] == []
    http_secrets = [secret for secret in SECRETS if secret != SQL_WRONG_PASSWORD]
    assert sorted(found_secrets(own.text())) == sorted(http_secrets)  # every setting was used
    assert {(SQL_USER, True), (SQL_USER, False)} <= set(sql.logins)  # both passwords were sent
    assert other.requests  # the redirect was followed ...
    assert found_secrets(other.text()) == []  # ... without the flow's credentials
