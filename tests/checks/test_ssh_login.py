"""`ssh` with credentials: an authenticated login that runs nothing, against a real OpenSSH."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from exporter.blocking import BlockingPool
from exporter.checks import CHECKS, Target
from exporter.checks.ssh import SshSettings
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.runner import run_check
from tests.checks.fakes import HOST, fake_server, sends_then_waits
from tests.peers.sshd import Sshd

WRONG_FINGERPRINT = "SHA256:" + "A" * 43
WRONG_PASSWORD = "S3CR3T-WRONG-SSH-PW"


@pytest.fixture(scope="module")
def pool() -> Iterator[BlockingPool]:
    """The blocking pool that parses and decrypts client keys."""
    with BlockingPool(2) as workers:
        yield workers


async def _ssh(port: int, pool: BlockingPool | None = None, **settings: Any) -> CheckResult:
    outcome = await run_check(
        CHECKS["ssh"], Target(HOST, port), SshSettings.model_validate(settings), 5.0, blocking=pool
    )
    return outcome.result


def _fingerprint(sshd: Sshd) -> str:
    (fingerprint,) = sshd.host_key_sha256_fingerprints.values()
    return fingerprint


def _offers(result: CheckResult) -> set[str]:
    """The methods the detail says the server offers."""
    return set(result.detail.rpartition("server offers ")[2].split(","))


async def test_password_login(sshd: Sshd) -> None:
    """A password login is ok, timed as handshake and auth, and the detail names the user."""
    result = await _ssh(sshd.port, username=sshd.login_user, password=sshd.login_password)
    assert result.result is Result.OK
    assert result.detail.startswith("SSH-2.0 OpenSSH_")
    assert result.detail.endswith(f", logged in as '{sshd.login_user}' (password)")
    assert {Phase.CONNECT, Phase.HANDSHAKE, Phase.AUTH} <= set(result.phases)
    assert result.peer is not None
    assert result.peer.product == "OpenSSH"


async def test_key_login_from_a_file(sshd: Sshd, pool: BlockingPool) -> None:
    """A private key given as {file: PATH} logs in."""
    key = {"file": str(sshd.client_key)}
    result = await _ssh(sshd.port, pool, username=sshd.login_user, client_keys=[key])
    assert result.result is Result.OK
    assert result.detail.endswith(f", logged in as '{sshd.login_user}' (key)")


async def test_encrypted_key_with_its_passphrase(sshd: Sshd, pool: BlockingPool) -> None:
    """An encrypted key is decrypted with client_key_passphrase and logs in."""
    result = await _ssh(
        sshd.port,
        pool,
        username=sshd.login_user,
        client_keys=[{"file": str(sshd.encrypted_client_key)}],
        client_key_passphrase=sshd.key_passphrase,
    )
    assert result.result is Result.OK


async def test_encrypted_key_without_passphrase_is_exporter_error(
    sshd: Sshd, pool: BlockingPool
) -> None:
    """A key that cannot be decrypted is the exporter's problem, named by its reference."""
    key = {"file": str(sshd.encrypted_client_key)}
    result = await _ssh(sshd.port, pool, username=sshd.login_user, client_keys=[key])
    assert result.result is Result.EXPORTER_ERROR
    assert result.detail.startswith(
        f"not checked: client_keys[0] ({{file: {sshd.encrypted_client_key}}}) cannot be used"
    )
    assert Phase.AUTH not in result.phases


async def test_wrong_password_is_auth_failed_naming_offered_methods(sshd: Sshd) -> None:
    """A wrong password is auth_failed naming what was tried and what the server offers."""
    result = await _ssh(sshd.port, username=sshd.login_user, password=WRONG_PASSWORD)
    assert result.result is Result.AUTH_FAILED
    assert result.detail.startswith(
        f"login as '{sshd.login_user}' refused (keyboard-interactive/password tried); "
        "server offers "
    )
    assert _offers(result) == {"publickey", "password"}
    assert WRONG_PASSWORD not in result.detail
    assert Phase.AUTH in result.phases


async def test_unauthorised_key_is_auth_failed(sshd: Sshd, pool: BlockingPool) -> None:
    """A key the server does not know is auth_failed with the offered methods."""
    key = sshd.stranger_key.read_text()  # inline
    result = await _ssh(sshd.port, pool, username=sshd.login_user, client_keys=[key])
    assert result.result is Result.AUTH_FAILED
    assert result.detail.startswith(f"login as '{sshd.login_user}' refused (publickey tried)")
    assert _offers(result) == {"publickey", "password"}


async def test_pinned_host_key_and_login(sshd: Sshd) -> None:
    """With a pinned key, the key is verified during the login's own key exchange."""
    fingerprint = _fingerprint(sshd)
    result = await _ssh(
        sshd.port,
        username=sshd.login_user,
        password=sshd.login_password,
        host_key_fingerprints=[fingerprint],
    )
    assert result.result is Result.OK
    assert f"host key {fingerprint} verified, logged in as" in result.detail


async def test_wrong_host_key_sends_no_credentials(sshd: Sshd) -> None:
    """A host key that is not pinned ends the login before authentication begins."""
    result = await _ssh(
        sshd.port,
        username=sshd.login_user,
        password=sshd.login_password,
        host_key_fingerprints=[WRONG_FINGERPRINT],
    )
    assert result.result is Result.AUTH_FAILED
    assert result.detail == f"host key {_fingerprint(sshd)} is not one of the expected keys"
    assert Phase.AUTH not in result.phases


async def test_garbage_after_banner_is_protocol_mismatch() -> None:
    """A server with an SSH banner and garbage instead of a key exchange: protocol_mismatch."""
    async with fake_server(sends_then_waits(b"SSH-2.0-Fake_1.0\r\n" + b"\xff" * 64)) as port:
        result = await _ssh(port, username="monitor", password=WRONG_PASSWORD)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "SSH key exchange failed during handshake" in result.detail
    assert result.peer == PeerInfo(product="Fake", version="1.0")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"username": "monitor"}, "username needs a password or client_keys"),
        ({"password": "x"}, "need a username"),
        ({"client_keys": [{"file": "/k"}]}, "need a username"),
        (
            {"username": "m", "password": "x", "client_key_passphrase": "p"},
            "client_key_passphrase needs client_keys",
        ),
    ],
)
def test_invalid_login_settings_are_rejected(settings: dict[str, object], message: str) -> None:
    """Incomplete login settings are refused when the config is loaded."""
    with pytest.raises(ValidationError, match=message):
        SshSettings.model_validate(settings)


def test_settings_repr_hides_password_and_keys(sshd: Sshd) -> None:
    """An inline password or key never shows in the settings' repr."""
    key = sshd.client_key.read_text()
    settings = SshSettings(username="m", password=WRONG_PASSWORD, client_keys=[key])
    assert WRONG_PASSWORD not in repr(settings)
    assert key.splitlines()[1] not in repr(settings)
