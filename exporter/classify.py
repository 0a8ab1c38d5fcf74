"""Exception → result class, in one place.

Checks let OS, resolver and TLS errors propagate; this module turns them into the bounded
`Result` classes and a one-line detail. A check whose library has errors of its own (ldap3,
pymssql, oracledb) registers a `Classifier` on its `CheckSpec`, consulted first: the one place
where that library's errors and codes become classes. Then the most specific generic match
comes first, as the order of the tests below is the order of Python's exception hierarchy
(e.g. ConnectionRefusedError is an OSError, SSLCertVerificationError is an SSLError).

An exception neither mapping knows is a defect of the check: `service_error` "check failed
unexpectedly", which the runner counts and logs.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Callable

from exporter.errors import CheckFailure, ExporterFault
from exporter.result import Phase, Result

Classifier = Callable[[BaseException, Phase | None], tuple[Result, str] | None]
"""A check's own exception mapping: its library's errors → (class, detail), None for others.

It gets the phase too, since one library error can mean different things in different phases
(a closed connection during the handshake or during the login).
"""

# Errors that say the path to the host is closed rather than the service: a router or a
# firewall answered (ICMP unreachable / admin-prohibited), or the local policy refused.
_UNREACHABLE_ERRNOS = frozenset(
    {
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ENETDOWN,
        errno.EACCES,
        errno.EPERM,
        errno.EADDRNOTAVAIL,
    }
)
# The exporter's own process or host ran out of something: the target was never reached.
_EXHAUSTED_ERRNOS = {
    errno.EMFILE: "the exporter has no free file descriptors (EMFILE)",
    errno.ENFILE: "the host has no free file descriptors (ENFILE)",
    errno.ENOBUFS: "the host has no free socket buffers (ENOBUFS)",
    errno.ENOMEM: "the host is out of memory (ENOMEM)",
}
# Windows socket errors reach Python with `winerror` set and a generic errno.
_WINDOWS_ERRORS = {
    10061: Result.REFUSED,  # WSAECONNREFUSED
    10060: Result.TIMEOUT,  # WSAETIMEDOUT
    10065: Result.UNREACHABLE,  # WSAEHOSTUNREACH
    10051: Result.UNREACHABLE,  # WSAENETUNREACH
    10013: Result.UNREACHABLE,  # WSAEACCES
    10054: Result.SERVICE_ERROR,  # WSAECONNRESET
}
# OpenSSL reasons meaning "the peer does not speak TLS at all", not "TLS went wrong".
_NOT_TLS_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "HTTP_REQUEST",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
        "UNEXPECTED_RECORD",
    }
)


# The peer accepted, then went away (reset, EOF, broken pipe) before the exchange was done.
_CLOSED_BY_PEER = (
    EOFError,  # asyncio.IncompleteReadError too
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


def is_expected(
    exc: BaseException, check_classify: Classifier | None = None, phase: Phase | None = None
) -> bool:
    """True for failures of the network, the peer or a check's library; False for a defect."""
    if check_classify is not None and check_classify(exc, phase) is not None:
        return True
    return isinstance(exc, CheckFailure | ExporterFault | OSError | EOFError)


def classify(  # noqa: PLR0911 - a flat dispatch, most specific first
    exc: BaseException, phase: Phase | None, check_classify: Classifier | None = None
) -> tuple[Result, str]:
    """Return the result class and a one-line detail for an exception raised by a check.

    `check_classify`, the check's own mapping, is consulted before the generic one.
    """
    if check_classify is not None:
        mapped = check_classify(exc, phase)
        if mapped is not None:
            return mapped
    where = f" during {phase.value}" if phase is not None else ""
    if isinstance(exc, CheckFailure):
        return exc.result, exc.detail
    if isinstance(exc, ExporterFault):
        return Result.EXPORTER_ERROR, f"not checked: {exc}"
    if isinstance(exc, socket.gaierror):
        return Result.DNS_ERROR, f"name resolution failed: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError):
        return Result.TIMEOUT, f"timed out{where}"
    if isinstance(exc, ConnectionRefusedError):
        return Result.REFUSED, "connection refused (port closed or reset by a firewall)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Result.TLS_ERROR, f"certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return _classify_ssl(exc)
    if isinstance(exc, _CLOSED_BY_PEER):
        return _closed_by_peer(phase)
    if isinstance(exc, OSError):
        return _classify_os_error(exc, where)
    return Result.SERVICE_ERROR, f"check failed unexpectedly{where}: {type(exc).__name__}"


def _classify_ssl(exc: ssl.SSLError) -> tuple[Result, str]:
    reason = exc.reason or ""
    if reason in _NOT_TLS_REASONS:
        return Result.PROTOCOL_MISMATCH, f"peer does not speak TLS ({reason.lower()})"
    text = reason.lower().replace("_", " ") if reason else str(exc)
    return Result.TLS_ERROR, f"TLS handshake failed: {text}"


def _closed_by_peer(phase: Phase | None) -> tuple[Result, str]:
    if phase is Phase.TLS:
        return Result.TLS_ERROR, "connection closed by peer during the TLS handshake"
    where = f" during {phase.value}" if phase is not None else ""
    return Result.SERVICE_ERROR, f"connection closed by peer{where}"


def _classify_os_error(exc: OSError, where: str) -> tuple[Result, str]:
    winerror = getattr(exc, "winerror", None)
    if isinstance(winerror, int) and winerror in _WINDOWS_ERRORS:
        return _WINDOWS_ERRORS[winerror], f"{exc.strerror or exc}{where}"
    code = exc.errno
    reason = exc.strerror or str(exc)
    if code in _EXHAUSTED_ERRNOS:
        return Result.EXPORTER_ERROR, f"not checked{where}: {_EXHAUSTED_ERRNOS[code]}"
    if code == errno.ECONNREFUSED:
        return Result.REFUSED, "connection refused (port closed or reset by a firewall)"
    if code in _UNREACHABLE_ERRNOS:
        return Result.UNREACHABLE, f"{reason} (no route, or rejected by a firewall){where}"
    return Result.SERVICE_ERROR, f"network error{where}: {reason}"
