"""The web configuration file (`--web.config.file`): TLS, basic auth and extra response headers.

The format is the one of the Prometheus exporter-toolkit, so the file an operator already keeps
for node_exporter or blackbox_exporter works here unchanged. The file is validated as strictly
as the main config: unknown keys, bad values, and settings that Python's `ssl` module cannot
honour are each a `ConfigError` with file, line and key — a security setting is never dropped
silently. Certificate, key and CA files are read when the file is loaded (at start-up and on
each reload), so a missing file or a key that does not match its certificate is one clear
message, never a listener without its certificate.

Relative paths are resolved against the directory of the web config file, as exporter-toolkit
does.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from exporter.config import (
    StrictModel,
    _LineMap,
    parse_yaml,
    read_config_text,
    validate_document,
)
from exporter.errors import ConfigError, ConfigProblem
from exporter.files import FileRefused, read_regular_file

MAX_FILE_BYTES = 1 << 20  # a web config is a few lines; anything near this size is a mistake
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")

ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "RequireClientCert",  # exporter-toolkit's older spelling of RequireAnyClientCert
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TlsVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
_TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Go's names (crypto/tls.CipherSuites, the ones exporter-toolkit accepts) → OpenSSL's names.
_CIPHER_SUITES: dict[str, str] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
_TLS13_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
# exporter-toolkit allows exactly these headers; None means any value.
_EXTRA_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
# Accepted in the file for compatibility, but not something this exporter can do.
_UNSUPPORTED_TLS_KEYS: dict[str, str] = {
    "cert": "an inline certificate is not supported: give cert_file",
    "key": "an inline key is not supported: give key_file",
    "client_allowed_sans": "matching client certificate SANs is not supported; "
    "issue client certificates from a dedicated CA given as client_ca_file instead",
    "curve_preferences": "choosing ECDHE curves is not supported by Python's ssl module; "
    "remove it to use OpenSSL's defaults",
}


def _bcrypt_hash(value: str) -> str:
    if not _BCRYPT_HASH.fullmatch(value):
        raise ValueError(
            "not a bcrypt hash (expected $2a$, $2b$ or $2y$, a cost of 04 to 31 and 53 characters"
            " of salt and hash, e.g. from `htpasswd -nBC 10 user`)"
        )
    return value


BcryptHash = Annotated[str, AfterValidator(_bcrypt_hash)]


class TlsServerConfig(StrictModel):
    """`tls_server_config`: the server certificate, TLS versions and client certificates."""

    cert_file: str = ""
    key_file: str = ""
    client_auth_type: ClientAuthType = "NoClientCert"
    client_ca_file: str = ""
    client_ca: str = ""
    min_version: TlsVersionName = "TLS12"
    max_version: TlsVersionName = "TLS13"
    cipher_suites: list[str] = Field(default_factory=list)
    prefer_server_cipher_suites: bool = True
    # Declared only so that each can be refused with a reason instead of "unknown field".
    cert: object = None
    key: object = None
    client_allowed_sans: object = None
    curve_preferences: object = None


class HttpServerConfig(StrictModel):
    """`http_server_config`: extra response headers, and `http2`.

    `http2: true` permits HTTP/2, it does not demand it: this exporter speaks HTTP/1.1 only,
    which every Prometheus accepts, so either value is honoured.
    """

    http2: bool = True
    headers: dict[str, str] = Field(default_factory=dict)


class RateLimitConfig(StrictModel):
    """`rate_limit`: declared so that it is refused with a reason, not as an unknown key."""

    interval: object = None
    burst: object = None


class WebConfigFile(StrictModel):
    """The whole web configuration file."""

    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = HttpServerConfig()
    basic_auth_users: dict[str, BcryptHash] = Field(default_factory=dict)
    rate_limit: RateLimitConfig | None = None


@dataclass(frozen=True)
class ServerTls:
    """What a reload applies to the listener's live TLS context, and what it cannot change.

    The listener keeps the context it was started with, so a reload changes that context in
    place: the certificate and key (a renewal), versions and cipher suites apply to the next
    handshake. OpenSSL can add trusted client CAs to a context but never remove one, so the
    client-certificate settings (`client_trust`) need a restart to change.
    """

    cert_file: Path
    key_file: Path
    minimum_version: ssl.TLSVersion
    maximum_version: ssl.TLSVersion
    ciphers: str | None
    prefer_server_ciphers: bool
    client_trust: tuple[str, bytes]  # client_auth_type and the trusted CA certificates

    def apply_to(self, context: ssl.SSLContext) -> None:
        """Set everything but the client trust on `context`; raises `ssl.SSLError`."""
        context.minimum_version = self.minimum_version
        context.maximum_version = self.maximum_version
        if self.prefer_server_ciphers:
            context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        else:
            context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        if self.ciphers is not None:
            context.set_ciphers(self.ciphers)
        context.load_cert_chain(self.cert_file, self.key_file, password=_refuse_password)


@dataclass(frozen=True)
class WebConfig:
    """A validated web config, ready to serve with: the TLS context is built and loaded."""

    origin: str
    ssl_context: ssl.SSLContext | None = None
    requires_client_cert: bool = False
    users: Mapping[str, bytes] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    tls: ServerTls | None = None


def load_web_config(path: str | Path) -> WebConfig:
    """Read, validate and apply a web config file; `ConfigError` names file, line and key."""
    origin = str(path)
    text = read_config_text(origin, MAX_FILE_BYTES, "web config")
    raw, lines = parse_yaml(text, origin)
    if raw is None:
        raw = {}
    parsed, problems = validate_document(WebConfigFile, raw, lines)
    problems.extend(_semantic_problems(parsed, lines))
    if problems:
        raise ConfigError(problems)
    tls = parsed.tls_server_config
    context = server_tls = None
    if tls is not None and _tls_enabled(tls):
        context, server_tls = _ssl_context(tls, Path(path).parent, lines)
    return WebConfig(
        origin=origin,
        ssl_context=context,
        requires_client_cert=context is not None and context.verify_mode == ssl.CERT_REQUIRED,
        users={user: hashed.encode() for user, hashed in parsed.basic_auth_users.items()},
        headers=dict(parsed.http_server_config.headers),
        tls=server_tls,
    )


def renew_tls(running: WebConfig, new: WebConfig) -> None:
    """Apply `new`'s TLS settings to the context the listener runs with, or say why not.

    Raises `ConfigError` when the change needs a restart (TLS turned on or off, other client
    certificate settings), leaving the running context as it was.
    """

    def refuse(message: str) -> ConfigError:
        return ConfigError([ConfigProblem(new.origin, None, "tls_server_config", message)])

    if (running.tls is None) != (new.tls is None):
        turned = "on" if new.tls is not None else "off"
        raise refuse(f"turning TLS {turned} needs a restart of the exporter")
    if running.tls is None or new.tls is None or running.ssl_context is None:
        return
    if new.tls.client_trust != running.tls.client_trust:
        raise refuse(
            "changing client_auth_type or the client CA needs a restart of the exporter "
            "(a running TLS context can trust more CAs but never fewer)"
        )
    try:
        new.tls.apply_to(running.ssl_context)
    except (ssl.SSLError, OSError, _EncryptedKeyError) as exc:  # the files changed meanwhile
        reason = exc.reason if isinstance(exc, ssl.SSLError) else type(exc).__name__
        raise refuse(f"could not load the new certificate and key: {reason}") from None


def _tls_enabled(tls: TlsServerConfig) -> bool:
    """Any key in `tls_server_config` switches TLS on (and then needs cert_file and key_file).

    exporter-toolkit falls back to plain HTTP when only, say, `min_version` is set; here that
    is an error, so that a TLS setting is never in the file without TLS being on.
    """
    return bool(tls.model_fields_set)


def _semantic_problems(parsed: WebConfigFile, lines: _LineMap) -> Iterator[ConfigProblem]:
    """Cross-field rules and the settings that cannot be honoured, each at its own key."""
    if parsed.rate_limit is not None:
        yield lines.problem(
            ("rate_limit",), "rate limiting is not supported; put a reverse proxy in front"
        )
    for name, value in parsed.http_server_config.headers.items():
        path = ("http_server_config", "headers", name)
        if name not in _EXTRA_HEADERS:
            allowed = ", ".join(_EXTRA_HEADERS)
            yield lines.problem(path, f"this header can not be configured (allowed: {allowed})")
            continue
        values = _EXTRA_HEADERS[name]
        if values is not None and value not in values:
            yield lines.problem(path, f"expected one of {', '.join(values)}, got {value!r}")
    for user in parsed.basic_auth_users:
        if ":" in user or not user:
            yield lines.problem(
                ("basic_auth_users", user), "a user name must be non-empty and without ':'"
            )
    tls = parsed.tls_server_config
    if tls is None:
        return
    yield from _tls_problems(tls, lines)


def _tls_problems(tls: TlsServerConfig, lines: _LineMap) -> Iterator[ConfigProblem]:
    base = ("tls_server_config",)
    for key in sorted(tls.model_fields_set & _UNSUPPORTED_TLS_KEYS.keys()):
        yield lines.problem((*base, key), _UNSUPPORTED_TLS_KEYS[key])
    if not _tls_enabled(tls):
        return
    if not tls.cert_file and "cert" not in tls.model_fields_set:
        yield lines.problem(base, "missing cert_file")
    if not tls.key_file and "key" not in tls.model_fields_set:
        yield lines.problem(base, "missing key_file")
    auth = tls.client_auth_type
    auth_path = (*base, "client_auth_type")
    if auth in ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert"):
        yield lines.problem(
            auth_path,
            f"{auth} accepts client certificates without verifying them, which Python's ssl "
            "module cannot do; use RequireAndVerifyClientCert with client_ca_file",
        )
    has_ca = bool(tls.client_ca_file or tls.client_ca)
    if tls.client_ca_file and tls.client_ca:
        yield lines.problem((*base, "client_ca"), "give either client_ca or client_ca_file")
    if has_ca and auth == "NoClientCert":
        yield lines.problem(
            (*base, "client_ca_file" if tls.client_ca_file else "client_ca"),
            "a client CA is configured but client_auth_type is NoClientCert",
        )
    if not has_ca and auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        yield lines.problem(auth_path, f"{auth} needs client_ca_file")
    if _TLS_VERSIONS[tls.min_version] > _TLS_VERSIONS[tls.max_version]:
        yield lines.problem((*base, "min_version"), "min_version is above max_version")
    for index, suite in enumerate(tls.cipher_suites):
        path = (*base, "cipher_suites", index)
        if suite in _TLS13_SUITES:
            yield lines.problem(
                path, f"{suite} is a TLS 1.3 suite; TLS 1.3 suites are not configurable"
            )
        elif suite not in _CIPHER_SUITES:
            yield lines.problem(path, f"unknown cipher suite {suite!r}")


class _EncryptedKeyError(Exception):
    """Raised from the password callback: a start-up must never prompt on the terminal."""


def _refuse_password() -> str:
    raise _EncryptedKeyError


def _ssl_context(
    tls: TlsServerConfig, directory: Path, lines: _LineMap
) -> tuple[ssl.SSLContext, ServerTls]:
    """Build the server context; every file is read now and each failure names its key."""
    base = ("tls_server_config",)
    cert_file = _resolve(directory, tls.cert_file)
    key_file = _resolve(directory, tls.key_file)
    problems = [
        problem
        for key, path in (("cert_file", cert_file), ("key_file", key_file))
        if (problem := _unreadable(path, (*base, key), lines)) is not None
    ]
    ca_file = _resolve(directory, tls.client_ca_file) if tls.client_ca_file else None
    if ca_file is not None and (problem := _unreadable(ca_file, (*base, "client_ca_file"), lines)):
        problems.append(problem)
    if problems:
        raise ConfigError(problems)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ciphers = ":".join(_CIPHER_SUITES[suite] for suite in tls.cipher_suites) or None
    if ciphers is not None:
        try:
            context.set_ciphers(ciphers)
        except ssl.SSLError as exc:
            message = f"none of these cipher suites is available in this OpenSSL: {exc.reason}"
            raise ConfigError([lines.problem((*base, "cipher_suites"), message)]) from exc
    trusted = b""
    if tls.client_auth_type != "NoClientCert":
        ca_key = "client_ca_file" if ca_file is not None else "client_ca"
        try:
            if ca_file is not None:
                context.load_verify_locations(cafile=ca_file)
            else:
                context.load_verify_locations(cadata=tls.client_ca)
        except (ssl.SSLError, ValueError) as exc:
            message = f"no usable CA certificate: {getattr(exc, 'reason', None) or exc}"
            raise ConfigError([lines.problem((*base, ca_key), message)]) from exc
        trusted = b"".join(context.get_ca_certs(binary_form=True))
        context.verify_mode = (
            ssl.CERT_REQUIRED
            if tls.client_auth_type == "RequireAndVerifyClientCert"
            else ssl.CERT_OPTIONAL
        )
    server_tls = ServerTls(
        cert_file=cert_file,
        key_file=key_file,
        minimum_version=_TLS_VERSIONS[tls.min_version],
        maximum_version=_TLS_VERSIONS[tls.max_version],
        ciphers=ciphers,
        prefer_server_ciphers=tls.prefer_server_cipher_suites,
        client_trust=(tls.client_auth_type, trusted),
    )
    try:
        server_tls.apply_to(context)
    except _EncryptedKeyError:
        message = "the key is encrypted; give an unencrypted key readable only by the exporter"
        raise ConfigError([lines.problem((*base, "key_file"), message)]) from None
    except ssl.SSLError as exc:
        raise ConfigError([lines.problem((*base, "key_file"), _key_message(exc))]) from exc
    return context, server_tls


def _resolve(directory: Path, name: str) -> Path:
    return directory / name


def _unreadable(path: Path, key: tuple[str | int, ...], lines: _LineMap) -> ConfigProblem | None:
    """A located problem when `path` cannot be read (missing, a directory, a FIFO, too large)."""
    try:
        read_regular_file(path, MAX_FILE_BYTES, "TLS file")
    except FileRefused as exc:
        return lines.problem(key, f"cannot read {path}: {exc}")
    return None


def _key_message(exc: ssl.SSLError) -> str:
    """OpenSSL's reason in words an operator can act on."""
    reason = exc.reason or str(exc)
    if reason == "KEY_VALUES_MISMATCH":
        return "the key does not match the certificate in cert_file"
    return f"cannot load the certificate and key: {reason} (are both PEM?)"
