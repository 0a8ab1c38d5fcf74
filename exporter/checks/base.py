"""The one shape every protocol check shares.

A check is `async def run(target, settings, context) -> CheckResult`. The context carries the
deadline, times phases, runs blocking library calls on the exporter's pool
(`exporter.blocking`), collects per-run debug lines (for `/probe?debug=true`), and gathers
what was learnt about the peer so that a failure still reports it (a certificate that failed
verification still has an expiry date).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from pydantic import BaseModel, ConfigDict

from exporter.blocking import BlockingPool, Deadline
from exporter.classify import Classifier
from exporter.errors import ExporterFault
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.secrets import hide_secrets, secret_fields

logger = logging.getLogger("exporter.checks")
P = ParamSpec("P")
T = TypeVar("T")


class CheckSettings(BaseModel):
    """Base of every check's settings model: strict, immutable, unknown keys rejected.

    A field typed `Secret` (or holding one) shows in `repr` and `str` with its inline values
    hidden, so that logging a settings object can never print a credential.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        hidden = secret_fields(type(self))
        for name, value in super().__repr_args__():
            yield name, (hide_secrets(value) if name in hidden else value)

    def load_warnings(self) -> tuple[str, ...]:
        """Sentences to warn about when a config loads these valid but risky settings.

        The config loader adds each, prefixed with the flow id, to its warnings (a password
        that the settings send in clear, for instance). None by default.
        """
        return ()


@dataclass(frozen=True, slots=True)
class Target:
    """One destination: a host name or IP literal, and the port where the check needs one."""

    host: str
    port: int | None = None

    @property
    def literal_family(self) -> socket.AddressFamily | None:
        """AF_INET/AF_INET6 when the host is an IP literal (no resolution needed), else None."""
        return _literal_family(self.host)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


@functools.lru_cache(maxsize=65536)
def _literal_family(host: str) -> socket.AddressFamily | None:
    """Parsed once per host: a check runs against the same targets again and again."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


class CheckContext:
    """Per-run state handed to a check: deadline, phase timer, debug log and peer facts."""

    def __init__(
        self,
        timeout_seconds: float,
        *,
        capture_log: bool = False,
        blocking: BlockingPool | None = None,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.blocking = blocking
        self.started = time.perf_counter()
        self.phases: dict[Phase, float] = {}
        self.current_phase: Phase | None = None
        self.peer: PeerInfo | None = None
        self.address = ""
        self.tls_cert_expiry_seconds: float | None = None
        self.tls_chain_expiry_seconds: float | None = None
        self.tcp_rtt_seconds: float | None = None
        # What a timeout means at this point of the run, set by a step waiting on a peer that may
        # stay silent (a UDP request); the run's deadline then reports it instead of its own words.
        self.timeout_detail: str | None = None
        self.log_lines: list[str] | None = [] if capture_log else None

    def remaining(self) -> float:
        """Seconds left before the hard deadline of this run."""
        return max(0.0, self.timeout_seconds - (time.perf_counter() - self.started))

    async def run_blocking(
        self, fn: Callable[Concatenate[Deadline, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run a blocking library call on the exporter's pool, never on the event loop.

        `fn` gets this run's `Deadline` first and must give every socket `deadline.timeout()`
        (the contract in `exporter.blocking`), so that a call abandoned at the deadline frees
        its worker soon after.
        """
        if self.blocking is None:
            raise ExporterFault("no worker pool for blocking checks in this process")
        deadline = Deadline(time.perf_counter() + self.remaining())
        return await self.blocking.run(deadline, fn, *args, **kwargs)

    @contextmanager
    def phase(self, phase: Phase) -> Iterator[None]:
        """Time a phase; a phase entered twice (redirects, second connection) accumulates."""
        previous = self.current_phase
        self.current_phase = phase
        begin = time.perf_counter()
        try:
            yield
        except BaseException:
            raise  # current_phase keeps naming the phase that failed
        else:
            self.current_phase = previous
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - begin

    def debug(self, message: str, **fields: object) -> None:
        """Record a debug line for this run: kept for `debug=true`, logged at DEBUG level."""
        if self.log_lines is None and not logger.isEnabledFor(logging.DEBUG):
            return
        elapsed = time.perf_counter() - self.started
        text = " ".join(
            [f"{elapsed * 1000:8.3f}ms", message, *(f"{k}={v}" for k, v in fields.items())]
        )
        if self.log_lines is not None:
            self.log_lines.append(text)
        logger.debug(text)

    def ok(self, detail: str) -> CheckResult:
        """Build the successful result of this run."""
        return self._result(Result.OK, detail)

    def failure(self, result: Result, detail: str) -> CheckResult:
        """Build a failed result of this run, keeping whatever was learnt about the peer."""
        return self._result(result, detail)

    def _result(self, result: Result, detail: str) -> CheckResult:
        self.debug("result", result=result.value, detail=detail)
        return CheckResult(
            result=result,
            duration_seconds=time.perf_counter() - self.started,
            detail=detail,
            phases=dict(self.phases),
            peer=self.peer,
            address=self.address,
            tls_cert_expiry_seconds=self.tls_cert_expiry_seconds,
            tls_chain_expiry_seconds=self.tls_chain_expiry_seconds,
            tcp_rtt_seconds=self.tcp_rtt_seconds,
        )


def quote_peer(data: bytes | str, limit: int = 60) -> str:
    """A short, printable excerpt of what a peer sent, for a detail or a debug line.

    Control characters become spaces, so a hostile peer cannot break a log line or a label
    value, and at most `limit` characters are kept ("…" marks a cut).
    """
    text = data.decode("ascii", errors="replace") if isinstance(data, bytes) else data
    text = "".join(char if char.isprintable() else " " for char in text).strip()
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


SettingsT = TypeVar("SettingsT", bound=CheckSettings)


@dataclass(frozen=True, slots=True)
class CheckSpec(Generic[SettingsT]):
    """Registration of one protocol check: its id, settings model and coroutine.

    `classify` maps the errors of the check's library (ldap3, pymssql, ...) in one place, the
    most specific first, with the library's codes in the detail; `exporter.classify` consults
    it before the generic mapping, and anything it returns None for falls through to that.

    `port_range` (inclusive) is where a protocol lives by definition (SAP dispatchers on
    3200-3299): the config refuses other ports for the check. `settings_port` gives the port a
    setting names (an SAP instance number), used where no port is written.
    """

    name: str
    settings_model: type[SettingsT]
    run: Callable[[Target, SettingsT, CheckContext], Awaitable[CheckResult]]
    summary: str
    uses_port: bool = True
    classify: Classifier | None = None
    transport: str = "tcp"  # what the check sends: tcp, udp or icmp (for a custom flow's info)
    port_range: tuple[int, int] | None = None
    settings_port: Callable[[SettingsT], int | None] | None = None


AnyCheckSpec = CheckSpec[Any]
