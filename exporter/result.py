"""The one result type every check returns.

A bare up/down loses the reason a flow is broken; this type keeps the reason as a bounded class
(`Result`), the time spent in each phase, what the peer said it is, and a one-line detail for
humans. The detail is built by checks from facts about the exchange and never holds a secret.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Result(enum.StrEnum):
    """Why a check ended the way it did; the label values of `certero_flow_result`."""

    OK = "ok"
    DNS_ERROR = "dns_error"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    TLS_ERROR = "tls_error"
    PROTOCOL_MISMATCH = "protocol_mismatch"
    AUTH_FAILED = "auth_failed"
    SERVICE_ERROR = "service_error"
    EXPORTER_ERROR = "exporter_error"  # the exporter could not run the check; the flow is unknown


class Phase(enum.StrEnum):
    """Steps of a check, timed separately so a slow flow says where the time went."""

    RESOLVE = "resolve"
    CONNECT = "connect"
    PROXY = "proxy"  # the CONNECT exchange with an HTTP proxy, before the destination's TLS
    TLS = "tls"
    HANDSHAKE = "handshake"
    AUTH = "auth"


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What the peer reported about itself (banner, server header, certificate subject)."""

    product: str
    version: str = ""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Outcome of one run of one check against one target."""

    result: Result
    duration_seconds: float
    detail: str
    phases: Mapping[Phase, float] = field(default_factory=dict)
    peer: PeerInfo | None = None
    address: str = ""
    tls_cert_expiry_seconds: float | None = None  # the leaf's notAfter
    tcp_rtt_seconds: float | None = None
    tls_chain_expiry_seconds: float | None = None  # the earliest notAfter of the presented chain

    @property
    def ok(self) -> bool:
        """True when the flow is open and answered by the right service."""
        return self.result is Result.OK
