"""The web config loader, basic-auth verification and the start-up exposure warnings."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest

from exporter import webauth
from exporter.errors import ConfigError
from exporter.webauth import AuthBusy, BasicAuth, exposure_warnings
from exporter.webconfig import WebConfig, load_web_config
from tests.peers.pki import Pki

TESTDATA = Path(__file__).parent / "testdata" / "web"
HASH = "$2b$04$dno1tNT3tGuhqBV8vFcQpOVGkFCp011QP9u7CeI6t2IwhDSWeEUoO"

# Every testdata/web/invalid-*.yml and the exact problems it must produce.
INVALID_CASES: dict[str, list[tuple[int, str, str]]] = {
    "invalid-cipher-suites.yml": [
        (6, "tls_server_config.cipher_suites[1]", "TLS_AES_128_GCM_SHA256 is a TLS 1.3 suite"),
        (
            7,
            "tls_server_config.cipher_suites[2]",
            "unknown cipher suite 'TLS_RSA_WITH_RC4_128_SHA'",
        ),
    ],
    "invalid-client-allowed-sans.yml": [
        (
            6,
            "tls_server_config.client_allowed_sans",
            "matching client certificate SANs is not supported",
        ),
    ],
    "invalid-client-auth-type.yml": [
        (
            4,
            "tls_server_config.client_auth_type",
            "Input should be 'NoClientCert', 'RequestClientCert'",
        ),
    ],
    "invalid-client-ca-without-client-auth.yml": [
        (
            4,
            "tls_server_config.client_ca_file",
            "a client CA is configured but client_auth_type is NoClientCert",
        ),
    ],
    "invalid-curve-preferences.yml": [
        (4, "tls_server_config.curve_preferences", "choosing ECDHE curves is not supported"),
    ],
    "invalid-duplicate-key.yml": [(3, "basic_auth_users.alice", "duplicate key")],
    "invalid-header-not-allowed.yml": [
        (
            3,
            "http_server_config.headers.Server",
            "this header can not be configured (allowed: Strict-Transport-Security,",
        ),
    ],
    "invalid-header-value.yml": [
        (
            3,
            "http_server_config.headers.X-Frame-Options",
            "expected one of deny, sameorigin, got 'allow'",
        ),
    ],
    "invalid-inline-cert.yml": [
        (2, "tls_server_config.cert", "an inline certificate is not supported: give cert_file"),
    ],
    "invalid-min-above-max.yml": [
        (4, "tls_server_config.min_version", "min_version is above max_version")
    ],
    "invalid-missing-key-file.yml": [(1, "tls_server_config", "missing key_file")],
    "invalid-not-bcrypt.yml": [(2, "basic_auth_users.alice", "not a bcrypt hash")],
    "invalid-rate-limit.yml": [(1, "rate_limit", "rate limiting is not supported")],
    "invalid-require-any-client-cert.yml": [
        (
            4,
            "tls_server_config.client_auth_type",
            "RequireAnyClientCert accepts client certificates without verifying them",
        ),
    ],
    "invalid-tls-version.yml": [
        (
            4,
            "tls_server_config.min_version",
            "Input should be 'TLS10', 'TLS11', 'TLS12' or 'TLS13'",
        ),
    ],
    "invalid-tls-setting-without-certificate.yml": [
        (1, "tls_server_config", "missing cert_file"),
        (1, "tls_server_config", "missing key_file"),
    ],
    "invalid-top-level-list.yml": [(1, "", "the top level must be a mapping")],
    "invalid-unknown-key.yml": [(4, "tls_server_config.min_versoin", "unknown field")],
    "invalid-unknown-top-level-key.yml": [(1, "basic_auth_user", "unknown field")],
    "invalid-user-with-colon.yml": [
        (2, "basic_auth_users.alice:admin", "a user name must be non-empty and without ':'"),
    ],
    "invalid-verify-without-client-ca.yml": [
        (
            4,
            "tls_server_config.client_auth_type",
            "RequireAndVerifyClientCert needs client_ca_file",
        ),
    ],
    "invalid-yaml-syntax.yml": [(3, "", "YAML syntax error: expected ',' or ']', but got ':'")],
}


def test_every_invalid_web_config_has_a_case() -> None:
    """No testdata/web/invalid-*.yml file is left without pinned messages."""
    assert {path.name for path in TESTDATA.glob("invalid-*.yml")} == set(INVALID_CASES)


@pytest.mark.parametrize("name", sorted(INVALID_CASES))
def test_invalid_web_config_names_file_line_and_key(name: str) -> None:
    """Each invalid web config fails with exactly the pinned problems, located by line and key."""
    path = TESTDATA / name
    with pytest.raises(ConfigError) as excinfo:
        load_web_config(path)
    problems = excinfo.value.problems
    assert len(problems) == len(INVALID_CASES[name]), str(excinfo.value)
    for problem, (line, key, message) in zip(problems, INVALID_CASES[name], strict=True):
        assert (problem.file, problem.line, problem.field) == (str(path), line, key)
        assert problem.message.startswith(message), problem.message


def tls_config(pki: Pki, directory: Path, body: str) -> Path:
    """A web config in `directory` whose TLS section starts with the valid server pair."""
    path = directory / "web.yml"
    path.write_text(
        f"tls_server_config:\n  cert_file: {pki.valid.cert}\n  key_file: {pki.valid.key}\n{body}"
    )
    return path


def only_problem(path: Path) -> str:
    """Load `path`, which must fail with exactly one problem, and return it as printed."""
    with pytest.raises(ConfigError) as excinfo:
        load_web_config(path)
    assert len(excinfo.value.problems) == 1, str(excinfo.value)
    return str(excinfo.value)


def test_a_full_web_config_builds_the_server_context(pki: Pki, tmp_path: Path) -> None:
    """Versions, client verification, users and headers all reach the loaded config."""
    path = tls_config(
        pki,
        tmp_path,
        f"  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {pki.ca_cert}\n"
        f"  min_version: TLS13\n"
        f"  prefer_server_cipher_suites: false\n"
        f"http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n"
        f"basic_auth_users:\n  alice: '{HASH}'\n",
    )
    loaded = load_web_config(path)
    context = loaded.ssl_context
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert not context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert loaded.requires_client_cert
    assert loaded.users == {"alice": HASH.encode()}
    assert loaded.headers == {"X-Frame-Options": "deny"}


def test_verify_if_given_makes_the_client_certificate_optional(pki: Pki, tmp_path: Path) -> None:
    """VerifyClientCertIfGiven verifies a certificate when one is sent but does not demand one."""
    path = tls_config(
        pki,
        tmp_path,
        f"  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {pki.ca_cert}\n",
    )
    loaded = load_web_config(path)
    assert loaded.ssl_context is not None
    assert loaded.ssl_context.verify_mode == ssl.CERT_OPTIONAL
    assert not loaded.requires_client_cert


def test_an_inline_client_ca_is_loaded(pki: Pki, tmp_path: Path) -> None:
    """client_ca (PEM text in the file) works like client_ca_file."""
    pem = pki.ca_cert.read_text().strip().replace("\n", "\n    ")
    path = tls_config(
        pki,
        tmp_path,
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca: |\n    {pem}\n",
    )
    context = load_web_config(path).ssl_context
    assert context is not None
    assert context.cert_store_stats()["x509_ca"] == 1


def test_cipher_suites_are_applied_in_openssl_names(pki: Pki, tmp_path: Path) -> None:
    """Go's suite names are translated; only the listed TLS 1.2 suites remain enabled."""
    path = tls_config(pki, tmp_path, "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n")
    context = load_web_config(path).ssl_context
    assert context is not None
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == {"ECDHE-ECDSA-AES128-GCM-SHA256"}
    assert context.options & ssl.OP_CIPHER_SERVER_PREFERENCE


def test_relative_paths_are_resolved_against_the_web_config_directory(
    pki: Pki, tmp_path: Path
) -> None:
    """cert_file and key_file relative to the file's directory work from any working directory."""
    (tmp_path / "server.crt").write_bytes(pki.valid.cert.read_bytes())
    (tmp_path / "server.key").write_bytes(pki.valid.key.read_bytes())
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    assert load_web_config(path).ssl_context is not None


def test_an_empty_web_config_turns_nothing_on(tmp_path: Path) -> None:
    """As with exporter-toolkit, an empty file means plain HTTP and no authentication."""
    path = tmp_path / "web.yml"
    path.write_text("")
    assert load_web_config(path) == WebConfig(origin=str(path))


def test_missing_certificate_and_key_files_are_each_named(pki: Pki, tmp_path: Path) -> None:
    """Both unreadable files are reported at once, each at its own key."""
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n")
    with pytest.raises(ConfigError) as excinfo:
        load_web_config(path)
    assert str(excinfo.value).splitlines() == [
        f"{path}:2: tls_server_config.cert_file: cannot read {tmp_path}/nope.crt: "
        "No such file or directory",
        f"{path}:3: tls_server_config.key_file: cannot read {tmp_path}/nope.key: "
        "No such file or directory",
    ]


def test_a_key_that_does_not_match_the_certificate_is_named(pki: Pki, tmp_path: Path) -> None:
    """The expired pair's key with the valid pair's certificate is a located mismatch."""
    path = tmp_path / "web.yml"
    path.write_text(
        f"tls_server_config:\n  cert_file: {pki.valid.cert}\n  key_file: {pki.expired.key}\n"
    )
    assert only_problem(path) == (
        f"{path}:3: tls_server_config.key_file: the key does not match the certificate in cert_file"
    )


def test_an_encrypted_key_is_refused_without_prompting(pki: Pki, tmp_path: Path) -> None:
    """A passphrase-protected key is an error, never a prompt on the terminal."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - test-only

    key = serialization.load_pem_private_key(pki.valid.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {pki.valid.cert}\n  key_file: {encrypted}\n")
    assert "tls_server_config.key_file: the key is encrypted" in only_problem(path)


def test_a_certificate_file_that_is_not_pem_is_named(pki: Pki, tmp_path: Path) -> None:
    """A cert_file holding something else is an error at the key, not a traceback."""
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {garbage}\n  key_file: {pki.valid.key}\n")
    assert "tls_server_config.key_file: cannot load the certificate and key" in only_problem(path)


def test_a_client_ca_file_without_certificates_is_named(pki: Pki, tmp_path: Path) -> None:
    """A client_ca_file with no certificate in it is refused at start-up."""
    empty = tmp_path / "empty-ca.crt"
    empty.write_text("nothing here\n")
    path = tls_config(
        pki,
        tmp_path,
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {empty}\n",
    )
    assert "tls_server_config.client_ca_file: no usable CA certificate" in only_problem(path)


def test_a_fifo_as_web_config_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO at the path is named as not a regular file instead of hanging start-up."""
    fifo = tmp_path / "web.yml"
    os.mkfifo(fifo)
    assert (
        only_problem(fifo)
        == f"{fifo}: is a FIFO (named pipe); the web config must be a regular file"
    )


def header(user: str, password: str | bytes) -> str:
    """An Authorization header value for basic auth."""
    raw = password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(user.encode() + b":" + raw).decode()


CheckCalls = list[tuple[bytes, bytes, str]]


@pytest.fixture
def checkpw_calls(monkeypatch: pytest.MonkeyPatch) -> CheckCalls:
    """Every bcrypt verification: password, stored hash and the thread it ran on."""
    calls: CheckCalls = []
    real: Callable[[bytes, bytes], bool] = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append((password, hashed, threading.current_thread().name))
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return calls


async def test_a_verified_password_is_cached_and_bcrypt_runs_off_the_event_loop(
    checkpw_calls: CheckCalls,
) -> None:
    """The second request with the same credentials costs no bcrypt; the first ran in a worker."""
    auth = BasicAuth({"alice": bcrypt.hashpw(b"right", bcrypt.gensalt(4))})
    try:
        assert await auth.verify(header("alice", "right")) == "alice"
        assert await auth.verify(header("alice", "right")) == "alice"
    finally:
        auth.close()
    assert len(checkpw_calls) == 1
    assert checkpw_calls[0][2].startswith("bcrypt")
    assert checkpw_calls[0][2] != threading.main_thread().name


async def test_a_changed_password_never_hits_the_cache(checkpw_calls: CheckCalls) -> None:
    """After a success, a different password for the same user is checked by bcrypt and fails."""
    auth = BasicAuth({"alice": bcrypt.hashpw(b"right", bcrypt.gensalt(4))})
    try:
        assert await auth.verify(header("alice", "right")) == "alice"
        assert await auth.verify(header("alice", "wrong")) is None
        assert await auth.verify(header("alice", "wrong")) is None
    finally:
        auth.close()
    assert [password for password, _, _ in checkpw_calls] == [b"right", b"wrong", b"wrong"]


async def test_a_changed_stored_hash_never_hits_the_cache(checkpw_calls: CheckCalls) -> None:
    """A cache key includes the stored hash: a new hash for the same user is checked afresh."""
    first = bcrypt.hashpw(b"right", bcrypt.gensalt(4))
    second = bcrypt.hashpw(b"right", bcrypt.gensalt(4))
    auth = BasicAuth({"alice": first})
    try:
        assert await auth.verify(header("alice", "right")) == "alice"
        auth._users["alice"] = second
        assert await auth.verify(header("alice", "right")) == "alice"
    finally:
        auth.close()
    assert [stored for _, stored, _ in checkpw_calls] == [first, second]


async def test_an_unknown_user_costs_a_bcrypt_check_at_the_configured_cost(
    checkpw_calls: CheckCalls,
) -> None:
    """An unknown user is checked against a decoy hash of the same cost and never succeeds."""
    auth = BasicAuth({"alice": bcrypt.hashpw(b"right", bcrypt.gensalt(5))})
    try:
        assert await auth.verify(header("mallory", "right")) is None
        assert await auth.verify(header("mallory", "right")) is None
    finally:
        auth.close()
    assert len(checkpw_calls) == 2
    assert all(stored.startswith(b"$2b$05$") for _, stored, _ in checkpw_calls)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "Basic",
        "Basic !!!",
        "Bearer abc",
        "Basic " + base64.b64encode(b"no-colon").decode(),
    ],
)
async def test_malformed_credentials_fail_without_bcrypt(
    checkpw_calls: CheckCalls, value: str | None
) -> None:
    """A missing or malformed Authorization header is refused before any bcrypt work."""
    auth = BasicAuth({"alice": HASH.encode()})
    try:
        assert await auth.verify(value) is None
    finally:
        auth.close()
    assert checkpw_calls == []


async def test_a_password_over_72_bytes_does_not_match(checkpw_calls: CheckCalls) -> None:
    """bcrypt cannot check more than 72 bytes; such a password is refused, never an error."""
    auth = BasicAuth({"alice": bcrypt.hashpw(b"right", bcrypt.gensalt(4))})
    try:
        assert await auth.verify(header("alice", b"x" * 100)) is None
    finally:
        auth.close()
    assert len(checkpw_calls) == 1


async def test_a_full_queue_refuses_new_checks_but_not_cached_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With MAX_PENDING checks waiting, an uncached credential is AuthBusy; a cached one passes."""
    auth = BasicAuth({"alice": bcrypt.hashpw(b"right", bcrypt.gensalt(4))})
    try:
        assert await auth.verify(header("alice", "right")) == "alice"
        monkeypatch.setattr(webauth, "MAX_PENDING", 0)
        assert await auth.verify(header("alice", "right")) == "alice"
        with pytest.raises(AuthBusy):
            await auth.verify(header("alice", "other"))
    finally:
        auth.close()


async def test_concurrent_checks_share_the_bounded_pool() -> None:
    """Many simultaneous first requests all complete, through at most WORKERS threads."""
    auth = BasicAuth({"alice": bcrypt.hashpw(b"right", bcrypt.gensalt(4))})
    try:
        results = await asyncio.gather(
            *(auth.verify(header("alice", f"guess{n}")) for n in range(20))
        )
        assert results == [None] * 20
        assert len(auth._executor._threads) <= webauth.WORKERS
    finally:
        auth.close()


def loaded(*, tls: bool, users: bool, client_cert: bool = False) -> WebConfig:
    """A WebConfig as the loader would return it, without files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER) if tls else None
    return WebConfig(
        origin="web.yml",
        ssl_context=context,
        requires_client_cert=client_cert,
        users={"alice": HASH.encode()} if users else {},
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.1.2.3"])
def test_loopback_listeners_get_no_warning(host: str) -> None:
    """Only this host can reach a loopback listener: nothing to warn about."""
    assert exposure_warnings(host, None) == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "exporter.corp.example"])
def test_an_open_listener_is_warned_about_once(host: str) -> None:
    """Without auth on a reachable address, one warning names the open routes and the flag."""
    for web_config in (None, loaded(tls=True, users=False)):
        (warning,) = exposure_warnings(host, web_config)
        assert "/metrics and /probe are open to anyone who can reach the port" in warning
        assert "--web.config.file" in warning


def test_basic_auth_without_tls_is_warned_about() -> None:
    """Passwords in clear text on a reachable address are worth one warning."""
    (warning,) = exposure_warnings("0.0.0.0", loaded(tls=False, users=True))
    assert "without TLS" in warning


@pytest.mark.parametrize(
    "web_config",
    [loaded(tls=True, users=True), loaded(tls=True, users=False, client_cert=True)],
)
def test_a_guarded_tls_listener_gets_no_warning(web_config: WebConfig) -> None:
    """TLS with basic auth, or with required client certificates, is what the warning asks for."""
    assert exposure_warnings("0.0.0.0", web_config) == []


async def test_an_htpasswd_2y_hash_is_accepted(checkpw_calls: CheckCalls) -> None:
    """htpasswd -B writes $2y$ hashes, as in exporter-toolkit's documentation; they verify."""
    hashed = b"$2y$" + bcrypt.hashpw(b"right", bcrypt.gensalt(4))[4:]
    auth = BasicAuth({"alice": hashed})
    try:
        assert await auth.verify(header("alice", "right")) == "alice"
    finally:
        auth.close()
    assert len(checkpw_calls) == 1


def test_the_example_web_config_loads(pki: Pki, tmp_path: Path) -> None:
    """config/web-config.example.yml is valid once its certificate paths exist."""
    example = Path(__file__).parent.parent / "config" / "web-config.example.yml"
    text = example.read_text().replace(
        "/etc/certero-flow-exporter/tls/exporter.crt", str(pki.valid.cert)
    )
    path = tmp_path / "web.yml"
    path.write_text(text.replace("/etc/certero-flow-exporter/tls/exporter.key", str(pki.valid.key)))
    loaded = load_web_config(path)
    assert loaded.ssl_context is not None
    assert set(loaded.users) == {"prometheus"}
    assert loaded.headers == {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "deny"}
