"""Unit tests of exporter/classify.py: exception (and phase) to result class and detail."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl

import pytest

from exporter.checks import CheckContext, CheckSettings, CheckSpec, Target
from exporter.classify import classify, is_expected
from exporter.errors import CheckFailure, CredentialError
from exporter.result import CheckResult, Phase, Result
from exporter.runner import run_check


def _wrong_version_number_error() -> ssl.SSLError:
    """A real OpenSSL error: a TLS client that receives an HTTP answer instead of a ServerHello."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="example")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    incoming.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with pytest.raises(ssl.SSLError) as excinfo:
        client.do_handshake()
    return excinfo.value


def _ssl_error(reason: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    error.reason = reason  # set by the _ssl module on errors raised by OpenSSL
    return error


def _verification_error(message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    error.verify_message = message  # set by the _ssl module on verification failures
    return error


def test_gaierror_is_dns_error() -> None:
    """A resolver error is dns_error and quotes the resolver's message."""
    error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert classify(error, Phase.RESOLVE) == (
        Result.DNS_ERROR,
        "name resolution failed: Name or service not known",
    )
    assert is_expected(error)


def test_connection_refused_is_refused() -> None:
    """ConnectionRefusedError is refused."""
    result, detail = classify(ConnectionRefusedError(errno.ECONNREFUSED, "refused"), Phase.CONNECT)
    assert result is Result.REFUSED
    assert detail.startswith("connection refused")


@pytest.mark.parametrize("code", [errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES])
def test_path_errors_are_unreachable(code: int) -> None:
    """An OSError saying the path is closed (no route, or local policy) is unreachable."""
    error = OSError(code, os.strerror(code))
    assert classify(error, Phase.CONNECT) == (
        Result.UNREACHABLE,
        f"{os.strerror(code)} (no route, or rejected by a firewall) during connect",
    )
    assert is_expected(error)


def test_timeout_error_is_timeout_naming_phase() -> None:
    """TimeoutError is timeout and the detail names the phase it happened in."""
    assert classify(TimeoutError(), Phase.CONNECT) == (Result.TIMEOUT, "timed out during connect")


def test_etimedout_oserror_is_timeout() -> None:
    """An OSError with ETIMEDOUT (the kernel giving up on a connect) is timeout."""
    result, _ = classify(OSError(errno.ETIMEDOUT, "Connection timed out"), None)
    assert result is Result.TIMEOUT


def test_certificate_verification_error_is_tls_error() -> None:
    """A certificate verification failure is tls_error quoting OpenSSL's verify message."""
    error = _verification_error("certificate has expired")
    assert classify(error, Phase.TLS) == (
        Result.TLS_ERROR,
        "certificate rejected: certificate has expired",
    )


def test_wrong_version_number_is_protocol_mismatch() -> None:
    """OpenSSL's WRONG_VERSION_NUMBER means the peer does not speak TLS: protocol_mismatch."""
    error = _wrong_version_number_error()
    assert error.reason == "WRONG_VERSION_NUMBER"
    assert classify(error, Phase.TLS) == (
        Result.PROTOCOL_MISMATCH,
        "peer does not speak TLS (wrong_version_number)",
    )


def test_other_ssl_error_is_tls_error() -> None:
    """An SSL error from a TLS-speaking peer (a handshake alert) is tls_error with its reason."""
    error = _ssl_error("SSLV3_ALERT_HANDSHAKE_FAILURE")
    assert classify(error, Phase.TLS) == (
        Result.TLS_ERROR,
        "TLS handshake failed: sslv3 alert handshake failure",
    )


def test_incomplete_read_in_tls_phase_is_tls_error() -> None:
    """A peer closing in the middle of the TLS handshake is tls_error."""
    error = asyncio.IncompleteReadError(partial=b"", expected=5)
    assert classify(error, Phase.TLS) == (
        Result.TLS_ERROR,
        "connection closed by peer during the TLS handshake",
    )
    assert is_expected(error)


def test_incomplete_read_in_handshake_phase_is_service_error() -> None:
    """A peer closing in the middle of the protocol exchange is service_error."""
    error = asyncio.IncompleteReadError(partial=b"SSH-", expected=255)
    assert classify(error, Phase.HANDSHAKE) == (
        Result.SERVICE_ERROR,
        "connection closed by peer during handshake",
    )


def test_connection_reset_is_service_error() -> None:
    """A reset after connecting is a service_error about the peer closing."""
    error = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    result, detail = classify(error, Phase.HANDSHAKE)
    assert result is Result.SERVICE_ERROR
    assert "closed by peer during handshake" in detail


def test_check_failure_passes_through() -> None:
    """A CheckFailure keeps the class and detail the check chose, whatever the phase."""
    failure = CheckFailure(Result.AUTH_FAILED, "host key SHA256:x is not one of the expected keys")
    assert classify(failure, Phase.HANDSHAKE) == (
        Result.AUTH_FAILED,
        "host key SHA256:x is not one of the expected keys",
    )
    assert is_expected(failure)


def test_unknown_exception_is_service_error_and_unexpected() -> None:
    """An exception that is no network failure is service_error and flagged as a defect."""
    error = KeyError("version")
    assert classify(error, Phase.HANDSHAKE) == (
        Result.SERVICE_ERROR,
        "check failed unexpectedly during handshake: KeyError",
    )
    assert not is_expected(error)


def test_detail_without_phase_has_no_phase_suffix() -> None:
    """Without a current phase, details carry no " during ..." suffix."""
    assert classify(TimeoutError(), None) == (Result.TIMEOUT, "timed out")


class _NoSettings(CheckSettings):
    """No options."""


async def test_runner_turns_a_defect_into_service_error(caplog: pytest.LogCaptureFixture) -> None:
    """run_check never raises: a defect in a check becomes service_error and is logged."""

    async def broken(target: Target, settings: _NoSettings, context: CheckContext) -> CheckResult:
        with context.phase(Phase.HANDSHAKE):
            raise KeyError("version")

    spec = CheckSpec("broken", _NoSettings, broken, "always raises")
    outcome = await run_check(spec, Target("127.0.0.1", 1), _NoSettings(), 1.0)
    assert outcome.result.result is Result.SERVICE_ERROR
    assert outcome.result.detail == "check failed unexpectedly during handshake: KeyError"
    assert Phase.HANDSHAKE in outcome.result.phases
    assert "check raised an unexpected error check=broken" in caplog.text


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.EMFILE, "no free file descriptors (EMFILE)"),
        (errno.ENFILE, "no free file descriptors (ENFILE)"),
        (errno.ENOBUFS, "no free socket buffers"),
    ],
)
def test_exhausted_exporter_resources_are_not_the_targets_fault(code: int, words: str) -> None:
    """Running out of descriptors or buffers is exporter_error, never a fault of the target."""
    result, detail = classify(OSError(code, os.strerror(code)), Phase.CONNECT)
    assert result is Result.EXPORTER_ERROR
    assert detail.startswith("not checked during connect: the ")
    assert words in detail


def test_credential_error_is_exporter_error_naming_the_reference() -> None:
    """An unreadable secret is exporter_error; the detail names the reference it could not read."""
    error = CredentialError("environment variable LDAP_PASSWORD is not set")
    assert classify(error, None) == (
        Result.EXPORTER_ERROR,
        "not checked: environment variable LDAP_PASSWORD is not set",
    )
    assert is_expected(error)


class FakeLibraryError(Exception):
    """Stands in for a library's own error type (ldap3's LDAPException, pymssql's Error)."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"result {code}")


_FAKE_CODES = {
    49: (Result.AUTH_FAILED, "invalidCredentials"),
    32: (Result.SERVICE_ERROR, "noSuchObject"),
}


def classify_fake_library(exc: BaseException, phase: Phase | None) -> tuple[Result, str] | None:
    """A check's mapping of its library's errors: the code named in the detail."""
    if not isinstance(exc, FakeLibraryError):
        return None
    result, name = _FAKE_CODES.get(exc.code, (Result.SERVICE_ERROR, "unknown result"))
    where = f" during {phase.value}" if phase is not None else ""
    return result, f"{name} ({exc.code}){where}"


def test_check_mapping_is_consulted_before_the_generic_one() -> None:
    """A library error becomes the class the check's mapping gives, with its code in the detail."""
    error = FakeLibraryError(49)
    assert classify(error, Phase.AUTH, classify_fake_library) == (
        Result.AUTH_FAILED,
        "invalidCredentials (49) during auth",
    )
    assert is_expected(error, classify_fake_library, Phase.AUTH)
    assert not is_expected(error)  # without the check's mapping it would be a defect


def test_errors_the_check_mapping_leaves_fall_through_to_the_generic_one() -> None:
    """An OS error in a check with its own mapping is still classified the generic way."""
    error = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    result, _ = classify(error, Phase.CONNECT, classify_fake_library)
    assert result is Result.REFUSED


async def _raise_in_auth(error: Exception, context: CheckContext) -> CheckResult:
    with context.phase(Phase.AUTH):
        raise error


async def test_runner_uses_the_spec_mapping_and_counts_no_defect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """run_check passes the spec's mapping: a mapped library error is no defect and not logged."""

    async def run(target: Target, settings: _NoSettings, context: CheckContext) -> CheckResult:
        return await _raise_in_auth(FakeLibraryError(32), context)

    spec = CheckSpec("fake_library", _NoSettings, run, "raises", classify=classify_fake_library)
    outcome = await run_check(spec, Target("127.0.0.1", 1), _NoSettings(), 1.0)
    assert outcome.result.result is Result.SERVICE_ERROR
    assert outcome.result.detail == "noSuchObject (32) during auth"
    assert not outcome.defect
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


async def test_a_defect_is_flagged_every_run_and_logged_once_per_error_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unmapped error is service_error and a defect each run; logged once per check and type."""
    errors: list[Exception] = [KeyError("a"), KeyError("b"), ValueError("c"), ValueError("d")]

    async def run(target: Target, settings: _NoSettings, context: CheckContext) -> CheckResult:
        return await _raise_in_auth(errors.pop(0), context)

    spec = CheckSpec("defective", _NoSettings, run, "raises", classify=classify_fake_library)
    outcomes = [await run_check(spec, Target("127.0.0.1", 1), _NoSettings(), 1.0) for _ in range(4)]
    assert [outcome.defect for outcome in outcomes] == [True] * 4
    assert {outcome.result.result for outcome in outcomes} == {Result.SERVICE_ERROR}
    logged = [record for record in caplog.records if "check=defective " in record.getMessage()]
    assert [record.levelname for record in logged] == ["ERROR", "ERROR"]
    assert "error=builtins.KeyError " in logged[0].getMessage()
    assert "error=builtins.ValueError " in logged[1].getMessage()
    assert all(record.exc_info is not None for record in logged)  # with the traceback


async def test_a_timeout_of_the_checks_own_is_classified_not_blamed_on_the_deadline() -> None:
    """A TimeoutError raised inside the check (a socket's own timeout) names its phase."""

    async def run(target: Target, settings: _NoSettings, context: CheckContext) -> CheckResult:
        return await _raise_in_auth(TimeoutError(), context)

    spec = CheckSpec("own_timeout", _NoSettings, run, "times out on its own")
    outcome = await run_check(spec, Target("127.0.0.1", 1), _NoSettings(), 10.0)
    assert outcome.result.result is Result.TIMEOUT
    assert outcome.result.detail == "timed out during auth"
    assert not outcome.defect
