"""`snmp`: an SNMP agent answers a GET of sysDescr.0, sysObjectID.0, sysUpTime.0 and sysName.0.

v2c sends the community (RFC 3416 GetRequest-PDU in an RFC 1901 message). v3 uses the
User-based Security Model (RFC 3414): engine discovery first (§4: a GetRequest with no user and
no variables, answered by a usmStatsUnknownEngineIDs report that carries the agent's engine ID,
boots and time), then the GET as the configured user at the level the settings give
(noAuthNoPriv, authNoPriv, authPriv). An authenticated request answered by an authenticated
notInTimeWindow report is sent once more with the agent's clock from that report (§4 time
synchronisation). Each request and its ids are a debug line. Phases: `handshake` is the v2c GET
or the v3 discovery, `auth` the v3 GET (with its time-window resend).

Design: the exchange is ours, the wire format pysnmp's. Each request is encoded with pysnmp's
ASN.1 message definitions (pyasn1) and sent through `exchange_datagram` on a connected socket,
so an ICMP port unreachable is `refused` (pysnmp's own transport ignores ICMP errors, which
would make a closed port look like a wrong community), every read is bounded, the timeout is
the check's own, and there are no hidden retries (`retransmissions`, default 0, as every UDP
check). pysnmp's SnmpEngine is not used at all: no engine state is shared between concurrent
checks, nothing grows with the number of targets, and a v3 check costs two or three small
datagrams. Its privacy services (DES, 3DES, AES with both key extensions) encrypt and decrypt
the scoped PDU; authentication is HMAC from the standard library (RFC 3414 6.3 and 7.3, RFC 7860
4.2). Password-to-key (RFC 3414 A.2, one MiB hashed) is cached per password, and the localized
keys per engine ID, so a sweep of thousands of agents does not pay it again.

Results: a reply is `ok` with sysName and sysDescr as peer info (`product` = sysDescr,
`version` = sysName); silence is `timeout` whose detail says what silence can mean (v2c cannot
tell a filtered port, a stopped agent and a wrong community apart: an agent drops a request
with an unknown community); ICMP port unreachable is `refused`; a v3 report (unknown user,
wrong digest, decryption error, not in time window, unsupported security level) is
`auth_failed` naming the report; an authPriv request that the agent leaves unanswered after it
answered discovery is `auth_failed` too, when the wait lasted at least ten discovery round trips:
net-snmp drops a request it cannot decrypt instead of reporting decryptionError, so a wrong
privacy password or protocol is silent.
Anything that is not an SNMP answer to our request (garbage, a truncated message, another
request id, our request echoed back) is `protocol_mismatch`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from pyasn1.codec.ber import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pydantic import Field, field_validator, model_validator
from pysnmp.proto import error as pysnmp_error
from pysnmp.proto.api import v2c
from pysnmp.proto.mpmod.rfc3412 import HeaderData, ScopedPDU, SNMPv3Message

# USM's package first: importing one of its privacy modules on its own is a circular import.
from pysnmp.proto.secmod import rfc3414 as usm
from pysnmp.proto.secmod.eso.priv import aes192, aes256, des3
from pysnmp.proto.secmod.rfc3414.auth import hmacmd5, hmacsha
from pysnmp.proto.secmod.rfc3414.priv import des
from pysnmp.proto.secmod.rfc3826.priv import aes
from pysnmp.proto.secmod.rfc7860.auth import hmacsha2

from exporter.checks.base import CheckContext, CheckSpec, Target, quote_peer
from exporter.checks.net import DatagramReply, UdpSettings, exchange_datagram
from exporter.errors import CheckFailure, ExporterFault
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.secrets import Secret, SecretRef, reveal

SNMP_PORT: Final = 161
SYS_DESCR: Final = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID: Final = "1.3.6.1.2.1.1.2.0"
SYS_UPTIME: Final = "1.3.6.1.2.1.1.3.0"
SYS_NAME: Final = "1.3.6.1.2.1.1.5.0"
REQUESTED_OIDS: Final = (SYS_DESCR, SYS_OBJECT_ID, SYS_UPTIME, SYS_NAME)
# sysDescr and sysName are DisplayStrings of at most 255 octets and sysObjectID has at most 128
# sub-identifiers (RFC 3418, RFC 2578 7.1.3): a whole answer fits in about 1.5 KiB. The bound
# leaves room for agents that exceed the MIB's sizes; a larger reply is no answer to this GET.
MAX_REPLY_BYTES: Final = 8192
DEFAULT_COMMUNITY: Final = "public"  # what SNMP tools (and snmp_exporter's default module) use
MIN_PASSWORD_CHARS: Final = 8  # RFC 3414 11.2; net-snmp refuses shorter pass phrases
MAX_USER_NAME_OCTETS: Final = 32  # RFC 3414 2.4 msgUserName SIZE(0..32)
# Of the time left, what the check keeps for itself after the last wait: the check, not the
# run's deadline, must end a silent wait, so that the timeout says what SNMP silence means.
_OWN_DEADLINE_MARGIN_S = 0.05
_SHOWN_CHARS = 64  # of sysDescr and sysName in peer info and the detail
# An encrypted GET left unanswered after discovery is called a wrong privacy key only when the
# wait was long enough to rule out a slow agent: this many discovery round trips, and at least
# this long.
_PRIV_SILENCE_ROUND_TRIPS = 10
_PRIV_SILENCE_MIN_S = 0.1

# RFC 3412 6.4 msgFlags and 6.6 the USM security model number.
_FLAG_AUTH, _FLAG_PRIV, _FLAG_REPORTABLE = 0x01, 0x02, 0x04
_USM_SECURITY_MODEL = 3
_SNMP_V2C, _SNMP_V3 = 1, 3
_MAX_INT32 = 2_147_483_647

# RFC 3416 3: error-status values.
ERROR_STATUS_NAMES: Final[Mapping[int, str]] = {
    1: "tooBig",
    2: "noSuchName",
    3: "badValue",
    4: "readOnly",
    5: "genErr",
    6: "noAccess",
    7: "wrongType",
    8: "wrongLength",
    9: "wrongEncoding",
    10: "wrongValue",
    11: "noCreation",
    12: "inconsistentValue",
    13: "resourceUnavailable",
    14: "commitFailed",
    15: "undoFailed",
    16: "authorizationError",
    17: "notWritable",
    18: "inconsistentName",
}
_AUTHORIZATION_ERROR = 16

# Report PDUs' counters (RFC 3414 5 usmStats, RFC 3412 5 snmpMPDStats, RFC 3413 4
# snmpUnavailableContexts/snmpUnknownContexts), the words an operator reads, and whether the
# report is about the credentials (auth_failed) or about the agent (service_error).
USM_UNKNOWN_ENGINE_IDS: Final = "1.3.6.1.6.3.15.1.1.4.0"
USM_NOT_IN_TIME_WINDOWS: Final = "1.3.6.1.6.3.15.1.1.2.0"
REPORTS: Final[Mapping[str, tuple[str, str, Result]]] = {
    "1.3.6.1.6.3.15.1.1.1.0": (
        "usmStatsUnsupportedSecLevels",
        "the user is not configured for this security level",
        Result.AUTH_FAILED,
    ),
    USM_NOT_IN_TIME_WINDOWS: (
        "usmStatsNotInTimeWindows",
        "the request is outside the agent's time window even after synchronising",
        Result.AUTH_FAILED,
    ),
    "1.3.6.1.6.3.15.1.1.3.0": (
        "usmStatsUnknownUserNames",
        "the agent has no such user",
        Result.AUTH_FAILED,
    ),
    USM_UNKNOWN_ENGINE_IDS: (
        "usmStatsUnknownEngineIDs",
        "the agent does not accept its own engine ID",
        Result.SERVICE_ERROR,
    ),
    "1.3.6.1.6.3.15.1.1.5.0": (
        "usmStatsWrongDigests",
        "wrong authentication password or protocol",
        Result.AUTH_FAILED,
    ),
    "1.3.6.1.6.3.15.1.1.6.0": (
        "usmStatsDecryptionErrors",
        "wrong privacy password or protocol",
        Result.AUTH_FAILED,
    ),
    "1.3.6.1.6.3.11.2.1.1.0": (
        "snmpUnknownSecurityModels",
        "the agent does not speak USM",
        Result.SERVICE_ERROR,
    ),
    "1.3.6.1.6.3.11.2.1.2.0": (
        "snmpInvalidMsgs",
        "the agent found the message invalid",
        Result.SERVICE_ERROR,
    ),
    "1.3.6.1.6.3.11.2.1.3.0": (
        "snmpUnknownPDUHandlers",
        "the agent has no handler for a GET",
        Result.SERVICE_ERROR,
    ),
    "1.3.6.1.6.3.12.1.4.0": (
        "snmpUnavailableContexts",
        "the context is unavailable",
        Result.SERVICE_ERROR,
    ),
    "1.3.6.1.6.3.12.1.5.0": (
        "snmpUnknownContexts",
        "the agent knows no such context",
        Result.SERVICE_ERROR,
    ),
}


@dataclass(frozen=True, slots=True)
class AuthProtocol:
    """One USM authentication protocol: HMAC over `hash_name`, truncated to `mac_bytes`."""

    name: str
    hash_name: str
    mac_bytes: int  # RFC 3414 6.3/7.3 (12 octets), RFC 7860 4.2.2 (16 to 48 octets)
    service_id: tuple[int, ...]  # its OID, which the privacy key derivation is keyed by


# Spelt as net-snmp spells them (snmpcmd -a).
AUTH_PROTOCOLS: Final[Mapping[str, AuthProtocol]] = {
    protocol.name: protocol
    for protocol in (
        AuthProtocol("MD5", "md5", 12, hmacmd5.HmacMd5.SERVICE_ID),
        AuthProtocol("SHA", "sha1", 12, hmacsha.HmacSha.SERVICE_ID),
        AuthProtocol("SHA-224", "sha224", 16, hmacsha2.HmacSha2.SHA224_SERVICE_ID),
        AuthProtocol("SHA-256", "sha256", 24, hmacsha2.HmacSha2.SHA256_SERVICE_ID),
        AuthProtocol("SHA-384", "sha384", 32, hmacsha2.HmacSha2.SAH384_SERVICE_ID),
        AuthProtocol("SHA-512", "sha512", 48, hmacsha2.HmacSha2.SHA512_SERVICE_ID),
    )
}
# Spelt as net-snmp spells them (snmpcmd -x; the -C variants are the "Cisco" key extension of
# draft-reeder-snmpv3-usm-3desede, the plain ones draft-blumenthal-aes-usm-04's). pysnmp's
# service objects hold no state but a salt counter, so one of each serves every check.
_PRIV_SERVICES: Final[Mapping[str, Any]] = {
    "DES": des.Des(),  # RFC 3414 8
    "3DES": des3.Des3(),  # draft-reeder-snmpv3-usm-3desede-00
    "AES": aes.Aes(),  # RFC 3826
    "AES-192": aes192.AesBlumenthal192(),
    "AES-256": aes256.AesBlumenthal256(),
    "AES-192-C": aes192.Aes192(),
    "AES-256-C": aes256.Aes256(),
}
PRIV_PROTOCOLS: Final = tuple(_PRIV_SERVICES)
_PROTOCOL_ALIASES: Final = {"AES-128": "AES"}


def _protocol_name(value: object, known: tuple[str, ...], what: str) -> object:
    """A protocol name as net-snmp spells it, in any case; unknown names list the known ones."""
    if value is None or not isinstance(value, str):
        return value
    name = value.strip().upper()
    name = _PROTOCOL_ALIASES.get(name, name)
    if name not in known:
        raise ValueError(f"unknown {what} {value!r}; use one of {', '.join(known)}")
    return name


class SnmpSettings(UdpSettings):
    """Options of the `snmp` check: v2c with a community, or v3 as a USM user."""

    community: Secret | None = Field(
        default=None,
        description=f"v2c community (default {DEFAULT_COMMUNITY!r}); not with `username`.",
    )
    username: str | None = Field(default=None, description="v3 (USM) user name: selects v3.")
    auth_protocol: str | None = Field(
        default=None, description=f"v3 authentication: {', '.join(AUTH_PROTOCOLS)}."
    )
    auth_password: Secret | None = Field(
        default=None, description="v3 authentication pass phrase (at least 8 characters)."
    )
    priv_protocol: str | None = Field(
        default=None, description=f"v3 privacy: {', '.join(PRIV_PROTOCOLS)} (AES is AES-128)."
    )
    priv_password: Secret | None = Field(
        default=None, description="v3 privacy pass phrase (at least 8 characters)."
    )

    @field_validator("auth_protocol", mode="before")
    @classmethod
    def _known_auth(cls, value: object) -> object:
        return _protocol_name(value, tuple(AUTH_PROTOCOLS), "auth_protocol")

    @field_validator("priv_protocol", mode="before")
    @classmethod
    def _known_priv(cls, value: object) -> object:
        return _protocol_name(value, PRIV_PROTOCOLS, "priv_protocol")

    @model_validator(mode="after")
    def _consistent(self) -> SnmpSettings:
        v3_keys = [
            name
            for name in ("auth_protocol", "auth_password", "priv_protocol", "priv_password")
            if getattr(self, name) is not None
        ]
        if self.username is None:
            if v3_keys:
                raise ValueError(f"{', '.join(v3_keys)} need username (SNMPv3)")
            return self
        if self.community is not None:
            raise ValueError("community is for v2c and username for v3: give one of them")
        if not self.username or len(self.username.encode()) > MAX_USER_NAME_OCTETS:
            raise ValueError(f"username must be 1 to {MAX_USER_NAME_OCTETS} octets (RFC 3414)")
        if (self.auth_protocol is None) != (self.auth_password is None):
            raise ValueError("auth_protocol and auth_password go together: give both or neither")
        if (self.priv_protocol is None) != (self.priv_password is None):
            raise ValueError("priv_protocol and priv_password go together: give both or neither")
        if self.priv_protocol is not None and self.auth_protocol is None:
            raise ValueError("privacy needs authentication: give auth_protocol and auth_password")
        for name in ("auth_password", "priv_password"):
            value = getattr(self, name)
            if isinstance(value, str) and len(value) < MIN_PASSWORD_CHARS:
                raise ValueError(f"{name} must be at least {MIN_PASSWORD_CHARS} characters")
        return self

    @property
    def level(self) -> str:
        """The v3 security level these settings ask for (RFC 3411 5 SnmpSecurityLevel)."""
        if self.priv_protocol is not None:
            return "authPriv"
        return "authNoPriv" if self.auth_protocol is not None else "noAuthNoPriv"


@dataclass(frozen=True, slots=True)
class SystemGroup:
    """What the agent said about itself; None where it answered an exception (noSuchObject)."""

    descr: str | None
    object_id: str | None
    uptime_ticks: int | None
    name: str | None
    missing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _User:
    """A v3 user with its pass phrases read for this run."""

    name: bytes
    auth: AuthProtocol | None
    auth_password: str | None
    priv: str | None
    priv_password: str | None

    @property
    def flags(self) -> int:
        flags = _FLAG_REPORTABLE
        if self.auth is not None:
            flags |= _FLAG_AUTH
        if self.priv is not None:
            flags |= _FLAG_PRIV
        return flags


@dataclass(frozen=True, slots=True)
class _Engine:
    """The authoritative engine's identity and clock, learnt by discovery (RFC 3414 4)."""

    engine_id: bytes
    boots: int
    time: int
    learnt_at: float  # time.monotonic() when `time` was read
    round_trip_s: float = 0.0  # how long discovery took to answer

    def now(self) -> int:
        """The agent's engine time now, by our clock since discovery (RFC 3414 2.3)."""
        return min(_MAX_INT32, self.time + int(time.monotonic() - self.learnt_at))


@dataclass(frozen=True, slots=True)
class _Answer:
    """A decoded reply: its PDU kind, error status and variable bindings."""

    kind: str  # "response", "report", or another PDU name
    error_status: int
    error_index: int
    varbinds: list[tuple[str, Any]]
    engine: _Engine | None = None
    authenticated: bool = False
    encrypted: bool = False


async def run(target: Target, settings: SnmpSettings, context: CheckContext) -> CheckResult:
    """GET the system group as v2c or v3, as the settings say."""
    target = Target(target.host, target.port or SNMP_PORT)
    if settings.username is None:
        community = (
            reveal(settings.community) if settings.community is not None else DEFAULT_COMMUNITY
        )
        group = await _get_v2c(context, target, settings, community)
        how = "SNMPv2c"
    else:
        user = _read_user(settings)
        group = await _get_v3(context, target, settings, user)
        how = f"SNMPv3 {settings.level} as {settings.username}"
    return _system_result(context, group, how)


def _read_user(settings: SnmpSettings) -> _User:
    """Read the pass phrases now; a short one read from a reference is the config's fault."""
    assert settings.username is not None
    passwords: dict[str, str | None] = {}
    for name in ("auth_password", "priv_password"):
        secret: str | SecretRef | None = getattr(settings, name)
        value = reveal(secret) if secret is not None else None
        if value is not None and len(value) < MIN_PASSWORD_CHARS:
            # Inline values are refused when the config is read; only a reference gets here,
            # and it is named, never its value.
            where = f" ({secret})" if isinstance(secret, SecretRef) else ""
            raise ExporterFault(
                f"{name}{where} is shorter than {MIN_PASSWORD_CHARS} characters (RFC 3414 11.2)"
            )
        passwords[name] = value
    return _User(
        name=settings.username.encode(),
        auth=AUTH_PROTOCOLS[settings.auth_protocol] if settings.auth_protocol else None,
        auth_password=passwords["auth_password"],
        priv=settings.priv_protocol,
        priv_password=passwords["priv_password"],
    )


# --- the exchange ---------------------------------------------------------------------------


async def _exchange(
    context: CheckContext,
    target: Target,
    settings: SnmpSettings,
    request: bytes,
    silence: str,
) -> DatagramReply:
    """One request and its reply; silence is a timeout in `silence`'s words.

    The wait ends a little before the run's deadline, so that it is this step, not the runner,
    that reports the silence and can say what it means for SNMP.
    """
    left = context.remaining()
    budget = max(0.0, left - min(_OWN_DEADLINE_MARGIN_S, left * 0.1))
    waited = time.perf_counter()
    try:
        async with asyncio.timeout(budget):
            return await exchange_datagram(
                context,
                target,
                request,
                max_reply_bytes=MAX_REPLY_BYTES,
                retransmissions=settings.retransmissions,
            )
    except TimeoutError as exc:  # our own deadline before the exchange's last wait ended
        context.timeout_detail = None
        raise CheckFailure(Result.TIMEOUT, _silence(silence, waited, settings)) from exc
    except CheckFailure as exc:
        if exc.result is not Result.TIMEOUT:
            raise
        raise CheckFailure(Result.TIMEOUT, _silence(silence, waited, settings)) from exc


def _silence(what: str, since: float, settings: SnmpSettings) -> str:
    sent = settings.retransmissions + 1
    requests = "1 request" if sent == 1 else f"{sent} requests"
    seconds = round(time.perf_counter() - since, 2)
    return f"no SNMP reply within {seconds:g}s ({requests} sent): {what}"


async def _get_v2c(
    context: CheckContext, target: Target, settings: SnmpSettings, community: str
) -> SystemGroup:
    request_id = _new_id()
    request = encode_v2c_get(community, request_id)
    context.debug("snmp v2c get", request_id=request_id, oids=len(REQUESTED_OIDS))
    with context.phase(Phase.HANDSHAKE):
        reply = await _exchange(
            context,
            target,
            settings,
            request,
            f"UDP {target.port} is filtered, the agent is down, or the community is wrong "
            "(SNMPv2c cannot tell these apart: an agent drops a request with an unknown "
            "community without a word)",
        )
    answer = decode_v2c(reply.data, request_id)
    return _system_group(answer)


async def _get_v3(
    context: CheckContext, target: Target, settings: SnmpSettings, user: _User
) -> SystemGroup:
    with context.phase(Phase.HANDSHAKE):
        engine = await _discover(context, target, settings)
    with context.phase(Phase.AUTH):
        answer = await _v3_get(context, target, settings, user, engine)
        if answer.kind == "report" and _report_oid(answer) == USM_NOT_IN_TIME_WINDOWS:
            if answer.engine is None or not answer.authenticated:
                _raise_report(answer, settings)
            context.debug("snmp v3 time window", boots=answer.engine.boots, time=answer.engine.time)
            answer = await _v3_get(context, target, settings, user, answer.engine)
    if answer.kind == "report":
        _raise_report(answer, settings)
    # RFC 3412 7.1.7: a Response goes back at the security level of its request.
    if user.auth is not None and not answer.authenticated:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            "the agent answered an authenticated request without authentication",
        )
    if user.priv is not None and not answer.encrypted:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, "the agent answered an encrypted request in clear text"
        )
    return _system_group(answer)


async def _discover(context: CheckContext, target: Target, settings: SnmpSettings) -> _Engine:
    """RFC 3414 4: learn the agent's engine ID, boots and time; no credentials are sent."""
    message_id, request_id = _new_id(), _new_id()
    request = encode_v3(
        message_id=message_id,
        flags=_FLAG_REPORTABLE,
        security=encode_usm_parameters(b"", 0, 0, b"", auth=b"", priv=b""),
        scoped_pdu=encode_scoped_pdu(b"", _get_pdu(request_id, ())),
    )
    context.debug("snmp v3 discovery", message_id=message_id)
    sent = time.perf_counter()
    reply = await _exchange(
        context,
        target,
        settings,
        request,
        f"UDP {target.port} is filtered, the agent is down, or it does not speak SNMPv3 "
        "(engine discovery sends no credentials, so a wrong user or password is not the cause)",
    )
    message = decode_v3(reply.data, message_id)
    parameters = message.security
    engine_id = bytes(parameters["msgAuthoritativeEngineId"])
    if not 5 <= len(engine_id) <= 32:  # RFC 3411 SnmpEngineID SIZE(5..32)
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"SNMPv3 discovery answered without a valid engine ID ({len(engine_id)} octets)",
        )
    engine = _Engine(
        engine_id,
        int(parameters["msgAuthoritativeEngineBoots"]),
        int(parameters["msgAuthoritativeEngineTime"]),
        time.monotonic(),
        time.perf_counter() - sent,
    )
    context.debug("snmp v3 engine", engine_id=engine_id.hex(), boots=engine.boots, time=engine.time)
    return engine


async def _v3_get(
    context: CheckContext, target: Target, settings: SnmpSettings, user: _User, engine: _Engine
) -> _Answer:
    message_id, request_id = _new_id(), _new_id()
    request = encode_v3_get(user, engine, message_id, request_id)
    context.debug("snmp v3 get", message_id=message_id, request_id=request_id, level=settings.level)
    answered = (
        f"the agent answered discovery in {engine.round_trip_s * 1000:.1f} ms "
        f"(engine {engine.engine_id.hex()}) but not the {settings.level} request"
    )
    if user.priv is None:
        reply = await _exchange(context, target, settings, request, answered)
        return decode_v3_answer(reply.data, message_id, request_id, user, engine)
    sent = time.perf_counter()
    try:
        reply = await _exchange(
            context,
            target,
            settings,
            request,
            f"{answered}: the priv_password or priv_protocol is most likely wrong (net-snmp "
            "drops a request it cannot decrypt instead of reporting decryptionError)",
        )
    except CheckFailure as exc:
        waited = time.perf_counter() - sent
        if exc.result is not Result.TIMEOUT:
            raise
        if waited < max(_PRIV_SILENCE_MIN_S, _PRIV_SILENCE_ROUND_TRIPS * engine.round_trip_s):
            # Too little time was left to call the silence a refusal rather than a slow agent.
            raise CheckFailure(
                Result.TIMEOUT, f"{_silence(answered, sent, settings)} (too little time left)"
            ) from exc
        raise CheckFailure(Result.AUTH_FAILED, exc.detail) from exc
    return decode_v3_answer(reply.data, message_id, request_id, user, engine)


def _report_oid(answer: _Answer) -> str:
    return answer.varbinds[0][0] if answer.varbinds else ""


def _raise_report(answer: _Answer, settings: SnmpSettings) -> NoReturn:
    oid = _report_oid(answer)
    known = REPORTS.get(oid)
    if known is None:
        raise CheckFailure(
            Result.SERVICE_ERROR, f"SNMPv3 report {oid or 'without a variable'} from the agent"
        )
    name, meaning, result = known
    who = f" (user {settings.username}, {settings.level})" if result is Result.AUTH_FAILED else ""
    raise CheckFailure(result, f"SNMPv3 report {name}: {meaning}{who}")


# --- results --------------------------------------------------------------------------------


def _system_group(answer: _Answer) -> SystemGroup:
    """The four values of a Response, or why the answer is not one."""
    if answer.kind != "response":
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"the peer sent an SNMP {answer.kind} PDU, not a response: not an SNMP agent",
        )
    if answer.error_status:
        name = ERROR_STATUS_NAMES.get(answer.error_status, "unknown error-status")
        result = (
            Result.AUTH_FAILED
            if answer.error_status == _AUTHORIZATION_ERROR
            else Result.SERVICE_ERROR
        )
        raise CheckFailure(
            result,
            f"the agent answered error-status {name} ({answer.error_status}) "
            f"at variable {answer.error_index}",
        )
    values = dict(answer.varbinds)
    if [oid for oid, _ in answer.varbinds] != list(REQUESTED_OIDS):
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"the response names other variables than requested ({len(answer.varbinds)} given)",
        )
    names = ("sysDescr", "sysObjectID", "sysUpTime", "sysName")
    missing = tuple(
        name for name, oid in zip(names, REQUESTED_OIDS, strict=True) if _is_exception(values[oid])
    )
    if len(missing) == len(REQUESTED_OIDS):
        raise CheckFailure(
            Result.SERVICE_ERROR,
            "the agent answered but shows none of the system group (noSuchObject): "
            "its view for this community or user excludes it",
        )
    return SystemGroup(
        descr=_text(values[SYS_DESCR]),
        object_id=_oid_text(values[SYS_OBJECT_ID]),
        uptime_ticks=_ticks(values[SYS_UPTIME]),
        name=_text(values[SYS_NAME]),
        missing=missing,
    )


def _is_exception(value: Any) -> bool:
    return isinstance(value, v2c.NoSuchObject | v2c.NoSuchInstance | v2c.EndOfMibView)


def _text(value: Any) -> str | None:
    if not isinstance(value, univ.OctetString) or _is_exception(value):
        return None
    return bytes(value).decode("utf-8", errors="replace")


def _oid_text(value: Any) -> str | None:
    return str(value) if isinstance(value, univ.ObjectIdentifier) else None


def _ticks(value: Any) -> int | None:
    return int(value) if isinstance(value, univ.Integer) else None


def _uptime(ticks: int) -> str:
    """TimeTicks (hundredths of a second, RFC 2578 7.1.8) as days and h:mm:ss."""
    seconds = ticks // 100
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{days}d {clock}" if days else clock


def _printable(text: str) -> str:
    """One printable line of at most _SHOWN_CHARS characters (a label value, a detail part)."""
    line = "".join(char if char.isprintable() else " " for char in text)
    line = " ".join(line.split())
    return line[:_SHOWN_CHARS]


def _system_result(context: CheckContext, group: SystemGroup, how: str) -> CheckResult:
    descr = _printable(group.descr or "")
    name = _printable(group.name or "")
    context.peer = PeerInfo(product=descr, version=name)
    parts = [f"{how}: {name or 'sysName not given'}"]
    if descr:
        parts.append(quote_peer(descr, _SHOWN_CHARS))
    if group.object_id:
        parts.append(f"sysObjectID {group.object_id}")
    if group.uptime_ticks is not None:
        parts.append(f"up {_uptime(group.uptime_ticks)}")
    if group.missing:
        parts.append(f"not shown: {', '.join(group.missing)}")
    return context.ok(", ".join(parts))


# --- wire format ----------------------------------------------------------------------------


def _new_id() -> int:
    """A request-id or msgID: random, so a stale or forged reply is unlikely to match."""
    return 1 + secrets.randbelow(_MAX_INT32 - 1)


def _get_pdu(request_id: int, oids: tuple[str, ...]) -> Any:
    """A GetRequest-PDU (RFC 3416 3) for `oids`, each bound to NULL."""
    pdu = v2c.GetRequestPDU()
    v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_request_id(pdu, request_id)
    v2c.apiPDU.set_varbinds(pdu, [(oid, v2c.null) for oid in oids])
    return pdu


def encode_v2c_get(community: str, request_id: int) -> bytes:
    """An SNMPv2c message (RFC 1901) carrying a GET of the system group."""
    message = v2c.Message()
    v2c.apiMessage.set_defaults(message)
    v2c.apiMessage.set_community(message, community.encode())
    v2c.apiMessage.set_pdu(message, _get_pdu(request_id, REQUESTED_OIDS))
    return bytes(encoder.encode(message))


def encode_scoped_pdu(context_engine_id: bytes, pdu: Any) -> Any:
    """A ScopedPDU (RFC 3412 6.8) for the default context."""
    scoped = ScopedPDU()
    scoped["contextEngineId"] = context_engine_id
    scoped["contextName"] = b""
    scoped["data"].setComponentByType(pdu.tagSet, pdu)
    return scoped


def encode_usm_parameters(
    engine_id: bytes, boots: int, engine_time: int, user: bytes, *, auth: bytes, priv: bytes
) -> bytes:
    """UsmSecurityParameters (RFC 3414 2.4), BER-encoded for msgSecurityParameters."""
    parameters = usm.service.UsmSecurityParameters()
    parameters["msgAuthoritativeEngineId"] = engine_id
    parameters["msgAuthoritativeEngineBoots"] = boots
    parameters["msgAuthoritativeEngineTime"] = engine_time
    parameters["msgUserName"] = user
    parameters["msgAuthenticationParameters"] = auth
    parameters["msgPrivacyParameters"] = priv
    return bytes(encoder.encode(parameters))


def encode_v3(
    *, message_id: int, flags: int, security: bytes, scoped_pdu: Any, encrypted: bytes | None = None
) -> bytes:
    """An SNMPv3Message (RFC 3412 6): header, USM parameters, plaintext or encrypted PDU."""
    header = HeaderData()
    header["msgID"] = message_id
    header["msgMaxSize"] = MAX_REPLY_BYTES
    header["msgFlags"] = bytes([flags])
    header["msgSecurityModel"] = _USM_SECURITY_MODEL
    message = SNMPv3Message()
    message["msgVersion"] = _SNMP_V3
    message["msgGlobalData"] = header
    message["msgSecurityParameters"] = security
    if encrypted is None:
        message["msgData"]["plaintext"] = scoped_pdu
    else:
        message["msgData"]["encryptedPDU"] = encrypted
    return bytes(encoder.encode(message))


def encode_v3_get(user: _User, engine: _Engine, message_id: int, request_id: int) -> bytes:
    """The authenticated (and encrypted) GET of the system group (RFC 3414 3.1)."""
    engine_time = engine.now()
    scoped = encode_scoped_pdu(engine.engine_id, _get_pdu(request_id, REQUESTED_OIDS))
    encrypted: bytes | None = None
    salt = b""
    if user.priv is not None:
        assert user.auth is not None
        assert user.priv_password is not None
        key = priv_key(user.priv, user.auth.name, user.priv_password, engine.engine_id)
        service = _PRIV_SERVICES[user.priv]
        ciphertext, salt_value = service.encrypt_data(
            univ.OctetString(key), (engine.boots, engine_time, None), encoder.encode(scoped)
        )
        encrypted, salt = bytes(ciphertext), bytes(salt_value)
    # The digest goes where a placeholder stands; a random one is found again unambiguously.
    placeholder = secrets.token_bytes(user.auth.mac_bytes) if user.auth is not None else b""
    security = encode_usm_parameters(
        engine.engine_id, engine.boots, engine_time, user.name, auth=placeholder, priv=salt
    )
    whole = encode_v3(
        message_id=message_id,
        flags=user.flags,
        security=security,
        scoped_pdu=scoped,
        encrypted=encrypted,
    )
    if user.auth is None:
        return whole
    assert user.auth_password is not None
    at = whole.index(placeholder)
    zeroed = whole[:at] + bytes(len(placeholder)) + whole[at + len(placeholder) :]
    mac = _mac(user.auth, auth_key(user.auth.name, user.auth_password, engine.engine_id), zeroed)
    return whole[:at] + mac + whole[at + len(placeholder) :]


def _mac(protocol: AuthProtocol, key: bytes, message: bytes) -> bytes:
    """HMAC-MD5-96, HMAC-SHA-96 (RFC 3414 6.3, 7.3) or HMAC-SHA-2 (RFC 7860 4.2)."""
    return hmac.new(key, message, protocol.hash_name).digest()[: protocol.mac_bytes]


@functools.lru_cache(maxsize=256)
def _master_key(hash_name: str, password: str) -> bytes:
    """RFC 3414 A.2: the hash of one MiB of the pass phrase repeated (cached: it costs ms)."""
    phrase = password.encode()
    megabyte = 1_048_576
    return hashlib.new(hash_name, (phrase * (megabyte // len(phrase) + 1))[:megabyte]).digest()


@functools.lru_cache(maxsize=4096)
def auth_key(protocol: str, password: str, engine_id: bytes) -> bytes:
    """The authentication key localized to `engine_id` (RFC 3414 2.6, A.2)."""
    hash_name = AUTH_PROTOCOLS[protocol].hash_name
    master = _master_key(hash_name, password)
    return hashlib.new(hash_name, master + engine_id + master).digest()


@functools.lru_cache(maxsize=4096)
def priv_key(protocol: str, auth_protocol: str, password: str, engine_id: bytes) -> bytes:
    """The privacy key localized to `engine_id`, extended as the privacy protocol says.

    The key is derived with the authentication protocol's hash (RFC 3414 2.6, RFC 3826 1.2);
    pysnmp's service extends it for AES-192/256 and 3DES by its draft's rule.
    """
    auth = AUTH_PROTOCOLS[auth_protocol]
    master = _master_key(auth.hash_name, password)
    localized = _PRIV_SERVICES[protocol].localize_key(
        auth.service_id, univ.OctetString(master), univ.OctetString(engine_id)
    )
    return bytes(localized)


_EXCERPT_BYTES = 16


def excerpt(data: bytes) -> str:
    """What a peer sent, for a detail: quoted text when it is text, else its first bytes in hex.

    SNMP is binary BER; text made of its bytes says nothing, while a text reply (a banner, an
    HTTP error) is best quoted.
    """
    head = data[: _EXCERPT_BYTES * 4]
    if head and all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        return quote_peer(data)
    shown = data[:_EXCERPT_BYTES].hex(" ")
    more = f" … ({len(data)} bytes)" if len(data) > _EXCERPT_BYTES else ""
    return f"{shown}{more}"


def _decode(data: bytes, spec: Any, what: str) -> Any:
    """BER-decode `data` as `spec`; anything else, or bytes left over, is no SNMP message."""
    try:
        value, rest = decoder.decode(data, asn1Spec=spec)
    except (PyAsn1Error, ValueError, TypeError, IndexError, KeyError, OverflowError) as exc:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, f"not {what} ({type(exc).__name__}): {excerpt(data)}"
        ) from exc
    if rest:
        extra = "1 byte" if len(rest) == 1 else f"{len(rest)} bytes"
        raise CheckFailure(Result.PROTOCOL_MISMATCH, f"not {what}: {extra} after the message")
    return value


def _message_version(data: bytes) -> int | None:
    """The version field of an SNMP message (RFC 1157, 1901, 3412), or None when there is none.

    Every SNMP message is a BER SEQUENCE whose first element is the version INTEGER; reading
    just that tells an SNMPv1 answer from garbage before the full decode says why it failed.
    """
    if len(data) < 2 or data[0] != 0x30:
        return None
    at = 2
    if data[1] & 0x80:  # long form: the next (data[1] & 0x7F) octets are the length
        at += data[1] & 0x7F
    if at + 2 > len(data) or data[at] != 0x02 or not 1 <= data[at + 1] <= 4:
        return None
    value = data[at + 2 : at + 2 + data[at + 1]]
    if len(value) != data[at + 1]:
        return None
    return int.from_bytes(value, "big", signed=True)


_VERSION_NAMES: Final = {0: "SNMPv1", 1: "SNMPv2c", 3: "SNMPv3"}


def _check_version(data: bytes, expected: int) -> None:
    version = _message_version(data)
    if version is None:
        raise CheckFailure(Result.PROTOCOL_MISMATCH, f"not an SNMP message: {excerpt(data)}")
    if version != expected:
        spoken = _VERSION_NAMES.get(version, f"version {version}")
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"the agent answered in {spoken}, not {_VERSION_NAMES[expected]}",
        )


def _answer_of(pdu_choice: Any, request_id: int) -> _Answer:
    """The PDU of a message as an _Answer, after checking it answers our request id.

    A Report is matched by its message's msgID alone (RFC 3412 7.2.12): an agent that could not
    read the request (a wrong digest, an encrypted PDU) reports with request-id 0.
    """
    kind = pdu_choice.getName()
    pdu = pdu_choice.getComponent()
    got = int(v2c.apiPDU.get_request_id(pdu))
    if got != request_id and kind != "report":
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"the reply answers another request (request-id {got}, ours {request_id})",
        )
    varbinds = [(str(oid), value) for oid, value in v2c.apiPDU.get_varbinds(pdu)]
    return _Answer(
        kind=kind,
        error_status=int(pdu["error-status"]),
        error_index=int(pdu["error-index"]),
        varbinds=varbinds,
    )


def decode_v2c(data: bytes, request_id: int) -> _Answer:
    """The answer of an SNMPv2c message to our request."""
    _check_version(data, _SNMP_V2C)
    message = _decode(data, v2c.Message(), "an SNMPv2c message")
    return _answer_of(message["data"], request_id)


@dataclass(frozen=True, slots=True)
class _V3Message:
    message: Any
    flags: int
    security: Any


def decode_v3(data: bytes, message_id: int) -> _V3Message:
    """An SNMPv3 message answering `message_id`, with its USM parameters decoded."""
    _check_version(data, _SNMP_V3)
    message = _decode(data, SNMPv3Message(), "an SNMPv3 message")
    header = message["msgGlobalData"]
    got = int(header["msgID"])
    if got != message_id:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"the reply answers another message (msgID {got}, ours {message_id})",
        )
    if int(header["msgSecurityModel"]) != _USM_SECURITY_MODEL:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"the reply uses security model {int(header['msgSecurityModel'])}, not USM",
        )
    flag_octets = bytes(header["msgFlags"])
    security = _decode(
        bytes(message["msgSecurityParameters"]),
        usm.service.UsmSecurityParameters(),
        "USM security parameters",
    )
    return _V3Message(message, flag_octets[0] if flag_octets else 0, security)


def decode_v3_answer(
    data: bytes, message_id: int, request_id: int, user: _User, engine: _Engine
) -> _Answer:
    """Verify, decrypt and decode the reply to a v3 GET (RFC 3414 3.2)."""
    reply = decode_v3(data, message_id)
    parameters = reply.security
    authenticated = False
    if reply.flags & _FLAG_AUTH:
        if user.auth is None or user.auth_password is None:
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH, "an authenticated reply to an unauthenticated request"
            )
        _verify(data, bytes(parameters["msgAuthenticationParameters"]), user, engine)
        authenticated = True
    msg_data = reply.message["msgData"]
    if msg_data.getName() == "encryptedPDU":
        if not reply.flags & _FLAG_PRIV or user.priv is None or user.priv_password is None:
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH, "an encrypted reply without the privacy flag"
            )
        assert user.auth is not None
        key = priv_key(user.priv, user.auth.name, user.priv_password, engine.engine_id)
        try:
            plaintext = _PRIV_SERVICES[user.priv].decrypt_data(
                univ.OctetString(key),
                (
                    int(parameters["msgAuthoritativeEngineBoots"]),
                    int(parameters["msgAuthoritativeEngineTime"]),
                    univ.OctetString(bytes(parameters["msgPrivacyParameters"])),
                ),
                univ.OctetString(bytes(msg_data["encryptedPDU"])),
            )
        except (pysnmp_error.PySnmpError, ValueError) as exc:
            raise CheckFailure(
                Result.PROTOCOL_MISMATCH, "the agent's encrypted reply cannot be decrypted"
            ) from exc
        scoped, _ = _decode_prefix(bytes(plaintext))
    else:
        scoped = msg_data["plaintext"]
    answer = _answer_of(scoped["data"], request_id) if _has_pdu(scoped) else None
    if answer is None:
        raise CheckFailure(Result.PROTOCOL_MISMATCH, "an SNMPv3 reply without a PDU")
    reply_engine = _Engine(
        bytes(parameters["msgAuthoritativeEngineId"]),
        int(parameters["msgAuthoritativeEngineBoots"]),
        int(parameters["msgAuthoritativeEngineTime"]),
        time.monotonic(),
    )
    return _Answer(
        kind=answer.kind,
        error_status=answer.error_status,
        error_index=answer.error_index,
        varbinds=answer.varbinds,
        engine=reply_engine,
        authenticated=authenticated,
        encrypted=msg_data.getName() == "encryptedPDU",
    )


def _has_pdu(scoped: Any) -> bool:
    return bool(scoped["data"].getName())


def _decode_prefix(plaintext: bytes) -> tuple[Any, bytes]:
    """A decrypted ScopedPDU; DES pads it to its block, so bytes may follow (RFC 3414 8.1.1.2)."""
    try:
        scoped, rest = decoder.decode(plaintext, asn1Spec=ScopedPDU())
    except (PyAsn1Error, ValueError, TypeError, IndexError, KeyError, OverflowError) as exc:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH, "the agent's decrypted reply is not a scoped PDU"
        ) from exc
    return scoped, bytes(rest)


def _verify(data: bytes, digest: bytes, user: _User, engine: _Engine) -> None:
    """RFC 3414 3.2 step 6: the reply's digest, computed over it with the digest zeroed."""
    assert user.auth is not None
    assert user.auth_password is not None
    if len(digest) != user.auth.mac_bytes or digest not in data:
        raise CheckFailure(
            Result.PROTOCOL_MISMATCH,
            f"the reply's digest is {len(digest)} octets, not {user.auth.mac_bytes}",
        )
    at = data.index(digest)
    zeroed = data[:at] + bytes(len(digest)) + data[at + len(digest) :]
    key = auth_key(user.auth.name, user.auth_password, engine.engine_id)
    if not hmac.compare_digest(_mac(user.auth, key, zeroed), digest):
        raise CheckFailure(
            Result.AUTH_FAILED,
            "the agent's reply fails authentication with this user's key "
            "(another agent answering with the same engine ID, or a forged reply)",
        )


def classify(error: BaseException, phase: Phase | None) -> tuple[Result, str] | None:
    """pyasn1's and pysnmp's errors that escape the codec above (a value out of its range)."""
    where = f" during {phase.value}" if phase is not None else ""
    if isinstance(error, PyAsn1Error):
        return Result.PROTOCOL_MISMATCH, f"SNMP encoding error{where}: {type(error).__name__}"
    if isinstance(error, pysnmp_error.PySnmpError):
        return Result.PROTOCOL_MISMATCH, f"SNMP error{where}: {type(error).__name__}"
    return None


SPEC = CheckSpec(
    "snmp",
    SnmpSettings,
    run,
    "SNMP GET of the system group (RFC 3416, 3418): v2c community or v3 USM (RFC 3414)",
    classify=classify,
    transport="udp",
)
