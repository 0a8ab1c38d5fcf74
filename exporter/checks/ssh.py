"""`ssh`: the port answers with an SSH identification string (RFC 4253 §4.2), and optionally
the login a connector needs succeeds.

We send our own identification first (allowed by the RFC) so that a peer which waits for the
client, such as an HTTP server, answers with something that is visibly not SSH instead of
keeping silent. Optionally the host key is read (on a second connection, through asyncssh's key
exchange) and compared with expected fingerprints, which proves it is the *right* SSH server.

With `username` and a `password` or `client_keys`, that second connection is an authenticated
login (RFC 4252) through asyncssh which opens no channel and runs nothing: connect, key
exchange (phase `handshake`), authentication (phase `auth`), close. That is what the IBM HMC
connector needs of the `ssh_hmc` flow. The host key is checked against the pinned fingerprints
during the key exchange, before any credential is sent. Nothing of the client's environment is
used (no ~/.ssh/config, known_hosts, default keys or agent), so the result depends only on the
flow's settings. A refused login is `auth_failed` naming the methods the server offers, asked
for on one more connection (asyncssh's `get_server_auth_methods`): "password refused, server
offers publickey" tells a disabled method from a wrong password.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import sys
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from exporter import __version__
from exporter.blocking import Deadline
from exporter.checks.base import CheckContext, CheckSettings, CheckSpec, Target, quote_peer
from exporter.checks.net import close_stream, connect_tcp, open_stream
from exporter.errors import CheckFailure, ExporterFault
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.secrets import Secret, SecretRef, reveal

if TYPE_CHECKING:
    import asyncssh

CLIENT_IDENTIFICATION = f"SSH-2.0-CerteroFlowExporter_{__version__.split('+')[0]}"
MAX_LINE_BYTES = 255  # RFC 4253: the identification line including CR LF
MAX_PRELUDE_LINES = 32  # lines a server may send before its identification
# Of the time left after a refused login, the share spent asking which methods the server offers.
METHODS_QUERY_SHARE = 0.5
METHODS_QUERY_CAP_SECONDS = 1.0
CLOSE_WAIT_SECONDS = 0.5  # a server slow to acknowledge our disconnect does not hold the result
_IDENTIFICATION = re.compile(rb"^SSH-(\d+\.\d+)-([!-~]+)(?: ([ -~]*))?\r?\n$")


class SshSettings(CheckSettings):
    """Options of the SSH check."""

    host_key_fingerprints: list[str] = Field(
        default_factory=list,
        description='Accepted host key fingerprints ("SHA256:..." as ssh-keygen -l prints them).',
    )
    username: str | None = Field(
        default=None, description="Log in as this user (with `password` or `client_keys`)."
    )
    password: Secret | None = Field(
        default=None, description="Password (also for keyboard-interactive password prompts)."
    )
    client_keys: list[Secret] = Field(
        default_factory=list,
        description="Private keys in OpenSSH or PEM form: {file: PATH}, {env: NAME} or inline.",
    )
    client_key_passphrase: Secret | None = Field(
        default=None, description="Passphrase of the encrypted keys among `client_keys`."
    )

    @model_validator(mode="after")
    def _login_settings(self) -> SshSettings:
        has_credentials = self.password is not None or bool(self.client_keys)
        if self.username is not None and not has_credentials:
            raise ValueError("username needs a password or client_keys")
        if self.username is None and has_credentials:
            raise ValueError("password and client_keys need a username")
        if self.client_key_passphrase is not None and not self.client_keys:
            raise ValueError("client_key_passphrase needs client_keys")
        return self


async def run(target: Target, settings: SshSettings, context: CheckContext) -> CheckResult:
    """Exchange identification strings and, if configured, verify the host key."""
    reader, writer = await open_stream(context, target)
    try:
        with context.phase(Phase.HANDSHAKE):
            writer.write(CLIENT_IDENTIFICATION.encode() + b"\r\n")
            protocol, software, comments = await _read_identification(reader, context)
    finally:
        await close_stream(writer)
    product, _, version = software.partition("_")
    context.peer = PeerInfo(product=product, version=version)
    if protocol not in ("2.0", "1.99"):
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"server speaks SSH protocol {protocol} only ({software})"
        )
    detail = f"SSH-{protocol} {software}" + (f" {comments}" if comments else "")
    if settings.username is not None:
        return context.ok(detail + await _login(context, target, settings))
    if settings.host_key_fingerprints:
        fingerprint = await _host_key_fingerprint(context, target)
        if fingerprint not in settings.host_key_fingerprints:
            raise CheckFailure(
                Result.AUTH_FAILED, f"host key {fingerprint} is not one of the expected keys"
            )
        detail += f", host key {fingerprint} verified"
    return context.ok(detail)


async def _read_identification(
    reader: asyncio.StreamReader, context: CheckContext
) -> tuple[str, str, str]:
    first_line = b""
    for _ in range(MAX_PRELUDE_LINES):
        try:
            line = await reader.readline()
        except ValueError as exc:  # the stream limit: a line of tens of kilobytes
            raise CheckFailure(Result.PROTOCOL_MISMATCH, "not an SSH server: endless line") from exc
        if not line:
            break
        context.debug("received line", length=len(line), text=quote_peer(line))
        first_line = first_line or line
        if line.startswith(b"SSH-"):
            if not line.endswith(b"\n"):  # end of stream before the CR LF (RFC 4253 4.2)
                raise CheckFailure(
                    Result.SERVICE_ERROR,
                    f"connection closed in the SSH identification string {quote_peer(line)}",
                )
            return _parse_identification(line)
        if len(line) > MAX_LINE_BYTES or not line.endswith(b"\n"):
            break
    if not first_line:
        raise CheckFailure(
            Result.SERVICE_ERROR, "connection closed before the SSH identification string"
        )
    raise CheckFailure(
        Result.PROTOCOL_MISMATCH, f"not an SSH server: it sent {quote_peer(first_line)}"
    )


def _parse_identification(line: bytes) -> tuple[str, str, str]:
    match = _IDENTIFICATION.match(line)
    if match is None or len(line) > MAX_LINE_BYTES:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"malformed SSH identification string {quote_peer(line)}"
        )
    protocol, software, comments = match.groups()
    return protocol.decode(), software.decode(), (comments or b"").decode()


async def _host_key_fingerprint(context: CheckContext, target: Target) -> str:
    """Run a key exchange with asyncssh and return the server key's SHA256 fingerprint."""
    import asyncssh  # noqa: PLC0415 - 0.12 s to import; only needed when fingerprints are set

    with context.phase(Phase.HANDSHAKE):
        try:
            key = await asyncssh.get_server_host_key(
                context.address or target.host,
                target.port or 22,
                client_version=CLIENT_IDENTIFICATION.removeprefix("SSH-2.0-"),
                options=asyncssh.SSHClientConnectionOptions(connect_timeout=context.remaining()),
            )
        except (asyncssh.Error, ValueError) as exc:
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH, f"SSH key exchange failed: {type(exc).__name__}"
            ) from exc
    if key is None:
        raise CheckFailure(Result.SERVICE_ERROR, "server offered no host key")
    return str(key.get_fingerprint("sha256"))


def _import_key(deadline: Deadline, text: str, passphrase: str | None) -> asyncssh.SSHKey:
    """Parse and decrypt one private key: bcrypt_pbkdf makes this ~0.2 s of CPU for an
    encrypted OpenSSH key, so it runs on the blocking pool, never on the event loop."""
    import asyncssh  # noqa: PLC0415 - only needed for a login

    deadline.timeout()
    return asyncssh.import_private_key(text, passphrase)


# Imported keys by a digest of (key text, passphrase): the pool pays the decryption once per
# key version, not on every run. Bounded; a rotated key or passphrase is a new entry.
_KEY_CACHE: dict[bytes, asyncssh.SSHKey] = {}
_KEY_CACHE_SIZE = 64


async def _client_keys(
    context: CheckContext, settings: SshSettings
) -> list[asyncssh.SSHKey] | None:
    """The configured private keys, read and decrypted now; a key that cannot be used is the
    exporter's problem (`exporter_error`), named by its position and reference, never shown."""
    import asyncssh  # noqa: PLC0415 - 0.12 s to import; only needed for a login

    if not settings.client_keys:
        return None
    passphrase = (
        reveal(settings.client_key_passphrase)
        if settings.client_key_passphrase is not None
        else None
    )
    keys = []
    for index, secret in enumerate(settings.client_keys):
        where = f"client_keys[{index}]" + (
            f" ({secret})" if isinstance(secret, SecretRef) else " (inline)"
        )
        text = reveal(secret)
        digest = hashlib.sha256(f"{text}\0{passphrase}".encode()).digest()
        if (key := _KEY_CACHE.get(digest)) is not None:
            keys.append(key)
            continue
        try:
            key = await context.run_blocking(_import_key, text, passphrase)
        except (asyncssh.KeyImportError, ValueError):
            # from None: the library's message may quote the key's text
            raise ExporterFault(
                f"{where} cannot be used: not a private key, or encrypted and "
                "client_key_passphrase is missing or wrong"
            ) from None
        if len(_KEY_CACHE) >= _KEY_CACHE_SIZE:
            del _KEY_CACHE[next(iter(_KEY_CACHE))]
        _KEY_CACHE[digest] = key
        keys.append(key)
    return keys


async def _login(context: CheckContext, target: Target, settings: SshSettings) -> str:
    """Log in on a second connection, run nothing, close; returns the detail's suffix."""
    import asyncssh  # noqa: PLC0415 - 0.12 s to import; only needed for a login

    assert settings.username is not None
    password = reveal(settings.password) if settings.password is not None else None
    keys = await _client_keys(context, settings)
    methods = (["publickey"] if keys else []) + (
        ["keyboard-interactive", "password"] if password is not None else []
    )
    pinned = frozenset(settings.host_key_fingerprints)
    phases = contextlib.ExitStack()
    seen: list[str] = []  # the host key fingerprint the server presented

    class LoginClient(asyncssh.SSHClient):
        """Checks the pinned host key during the key exchange and times the auth phase."""

        def validate_host_public_key(
            self, host: str, addr: str, port: int, key: asyncssh.SSHKey
        ) -> bool:
            seen.append(str(key.get_fingerprint("sha256")))
            return seen[-1] in pinned

        def begin_auth(self, username: str) -> None:
            phases.close()  # the key exchange is over
            phases.enter_context(context.phase(Phase.AUTH))

    sock = await connect_tcp(context, target)
    options = asyncssh.SSHClientConnectionOptions(
        username=settings.username,
        password=password,
        client_keys=keys,
        passphrase=None,
        preferred_auth=",".join(methods),
        known_hosts=([], [], []) if pinned else None,
        agent_path=None,
        gss_host=None,
        host_based_auth=False,
        client_version=CLIENT_IDENTIFICATION.removeprefix("SSH-2.0-"),
        connect_timeout=max(context.remaining(), 0.001),
        login_timeout=max(context.remaining(), 0.001),
    )
    context.debug("ssh login", user=settings.username, methods=",".join(methods))
    try:
        with phases:
            phases.enter_context(context.phase(Phase.HANDSHAKE))
            try:
                connection = await asyncssh.connect(
                    sock=sock, config=None, client_factory=LoginClient, options=options
                )
            except BaseException:
                sock.close()  # once connected, the connection owns the socket
                raise
    except asyncssh.HostKeyNotVerifiable as exc:
        fingerprint = seen[-1] if seen else "of an unknown type"
        raise CheckFailure(
            Result.AUTH_FAILED, f"host key {fingerprint} is not one of the expected keys"
        ) from exc
    except asyncssh.PermissionDenied as exc:
        offered = await _offered_methods(context, target, settings.username)
        raise CheckFailure(
            Result.AUTH_FAILED,
            f"login as {settings.username!r} refused ({'/'.join(methods)} tried)" + offered,
        ) from exc
    connection.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(min(CLOSE_WAIT_SECONDS, context.remaining())):
            await connection.wait_closed()
    method = {"publickey": "key", "password": "password"}.get(methods[0], "password")
    if len(methods) > 2:  # a key and a password: either may have been the one accepted
        method = "key or password"
    verified = f", host key {seen[-1]} verified" if pinned and seen else ""
    return f"{verified}, logged in as {settings.username!r} ({method})"


async def _offered_methods(context: CheckContext, target: Target, username: str) -> str:
    """The detail's "; server offers publickey,password", asked on one more connection.

    Empty when the server cannot tell within a share of the time left: the refusal itself is
    the result, and the list only explains it.
    """
    import asyncssh  # noqa: PLC0415 - only needed for a login

    budget = min(context.remaining() * METHODS_QUERY_SHARE, METHODS_QUERY_CAP_SECONDS)
    try:
        async with asyncio.timeout(budget):
            offered = await asyncssh.get_server_auth_methods(
                context.address or target.host,
                target.port or 22,
                username,
                config=None,
                client_version=CLIENT_IDENTIFICATION.removeprefix("SSH-2.0-"),
            )
    except (OSError, asyncssh.Error, TimeoutError, ValueError) as exc:
        context.debug("could not ask for the offered methods", error=type(exc).__name__)
        return ""
    return f"; server offers {','.join(offered) or 'no method'}"


def classify(exc: BaseException, phase: Phase | None) -> tuple[Result, str] | None:
    """asyncssh's errors during a login, by what the server did (RFC 4253 §11.1 reasons)."""
    asyncssh = sys.modules.get("asyncssh")  # not imported: the error cannot be one of its own
    if asyncssh is None or not isinstance(exc, asyncssh.Error):
        return None
    where = f" during {phase.value}" if phase is not None else ""
    reason = quote_peer(exc.reason, 80)
    if isinstance(exc, asyncssh.KeyExchangeFailed | asyncssh.ProtocolError):
        return Result.PROTOCOL_MISMATCH, f"SSH key exchange failed{where}: {reason}"
    if isinstance(exc, asyncssh.ConnectionLost):
        return Result.SERVICE_ERROR, f"connection closed by peer{where}"
    if isinstance(exc, asyncssh.PermissionDenied):
        return Result.AUTH_FAILED, f"login refused: {reason}"
    return Result.SERVICE_ERROR, f"server disconnected{where}: {reason} (code {exc.code})"


SPEC = CheckSpec(
    "ssh",
    SshSettings,
    run,
    "SSH identification exchange (RFC 4253), host key, optional login (RFC 4252)",
    classify=classify,
)
