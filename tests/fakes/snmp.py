"""SNMP agents written from the RFCs, to say what a real agent will not say on demand.

- `v2c_agent` answers an SNMPv2c GET (RFC 1901 message, RFC 3416 Response-PDU) with the values
  it is given, echoing the request-id and the community; `tamper` rewrites or multiplies the
  encoded answer, so a test can send a truncated, duplicated, oversized or mislabelled reply.
- `v3_reporter` answers SNMPv3 engine discovery (RFC 3414 4: a usmStatsUnknownEngineIDs report
  carrying its engine ID, boots and time) and every later request with one Report-PDU of the
  counter it is given (usmStatsDecryptionErrors, usmStatsNotInTimeWindows ...), unauthenticated
  and with request-id 0, as an agent that could not read the request sends it (RFC 3412 7.1.3).
  Without a counter it answers a plaintext GET with an unauthenticated Response instead: an
  agent breaking RFC 3412 7.1.7 (a Response at its request's security level).

net-snmp's `snmpget` proves both in tests/checks/test_snmp.py (it prints the fake's sysDescr,
and the report's meaning in its own words).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto.api import v2c
from pysnmp.proto.mpmod.rfc3412 import SNMPv3Message

from exporter.checks.snmp import (
    REQUESTED_OIDS,
    USM_UNKNOWN_ENGINE_IDS,
    encode_scoped_pdu,
    encode_usm_parameters,
    encode_v3,
)
from tests.peers.udp import Answer

FAKE_DESCR = "Fake SNMP agent written from RFC 3416"
FAKE_NAME = "fake-agent.example.test"
FAKE_OBJECT_ID = "1.3.6.1.4.1.8072.3.2.10"
FAKE_ENGINE_ID = bytes.fromhex("80001f8880c0ffee0000000001")
FAKE_BOOTS = 7
FAKE_TIME = 4242
Tamper = Callable[[bytes], Sequence[bytes]]


def default_values() -> list[Any]:
    """sysDescr, sysObjectID, sysUpTime and sysName as a healthy agent gives them."""
    return [
        v2c.OctetString(FAKE_DESCR),
        v2c.ObjectIdentifier(FAKE_OBJECT_ID),
        v2c.TimeTicks(123456),
        v2c.OctetString(FAKE_NAME),
    ]


def v2c_response(
    request: bytes,
    values: Sequence[Any] | None = None,
    *,
    request_id_shift: int = 0,
    error_status: int = 0,
    error_index: int = 0,
) -> bytes:
    """The encoded Response to a v2c GET: its request-id (shifted if asked) and community."""
    message, _ = decoder.decode(request, asn1Spec=v2c.Message())
    request_pdu = v2c.apiMessage.get_pdu(message)
    response = v2c.ResponsePDU()
    v2c.apiPDU.set_defaults(response)
    v2c.apiPDU.set_request_id(
        response, int(v2c.apiPDU.get_request_id(request_pdu)) + request_id_shift
    )
    v2c.apiPDU.set_error_status(response, error_status)
    v2c.apiPDU.set_error_index(response, error_index)
    given = default_values() if values is None else list(values)
    v2c.apiPDU.set_varbinds(response, list(zip(REQUESTED_OIDS, given, strict=True)))
    answer = v2c.Message()
    v2c.apiMessage.set_defaults(answer)
    v2c.apiMessage.set_community(answer, v2c.apiMessage.get_community(message))
    v2c.apiMessage.set_pdu(answer, response)
    return bytes(encoder.encode(answer))


def v2c_agent(
    values: Sequence[Any] | None = None,
    *,
    request_id_shift: int = 0,
    error_status: int = 0,
    error_index: int = 0,
) -> Answer:
    """An answer function for `udp_peer`: a v2c agent that gives `values` to every GET."""

    def answer(request: bytes) -> bytes:
        return v2c_response(
            request,
            values,
            request_id_shift=request_id_shift,
            error_status=error_status,
            error_index=error_index,
        )

    return answer


def _report(message_id: int, user: bytes, request_id: int, counter_oid: str) -> bytes:
    report = v2c.ReportPDU()
    v2c.apiPDU.set_defaults(report)
    v2c.apiPDU.set_request_id(report, request_id)
    v2c.apiPDU.set_varbinds(report, [(counter_oid, v2c.Counter32(1))])
    return _unauthenticated(message_id, user, report)


def _unauthenticated(message_id: int, user: bytes, report: Any) -> bytes:
    return encode_v3(
        message_id=message_id,
        flags=0,
        security=encode_usm_parameters(
            FAKE_ENGINE_ID, FAKE_BOOTS, FAKE_TIME, user, auth=b"", priv=b""
        ),
        scoped_pdu=encode_scoped_pdu(FAKE_ENGINE_ID, report),
    )


def v3_reporter(counter_oid: str | None) -> Answer:
    """An answer function for `udp_peer`: discovery answered, every request then reported
    (or, without a counter, answered in clear)."""
    from pysnmp.proto.secmod import rfc3414  # noqa: PLC0415 - the check module loaded it first

    def answer(request: bytes) -> bytes:
        message, _ = decoder.decode(request, asn1Spec=SNMPv3Message())
        message_id = int(message["msgGlobalData"]["msgID"])
        security, _ = decoder.decode(
            bytes(message["msgSecurityParameters"]),
            asn1Spec=rfc3414.service.UsmSecurityParameters(),
        )
        user = bytes(security["msgUserName"])
        if not bytes(security["msgAuthoritativeEngineId"]):
            pdu = message["msgData"]["plaintext"]["data"].getComponent()
            request_id = int(v2c.apiPDU.get_request_id(pdu))
            return _report(message_id, user, request_id, USM_UNKNOWN_ENGINE_IDS)
        if counter_oid is not None:
            return _report(message_id, user, 0, counter_oid)
        pdu = message["msgData"]["plaintext"]["data"].getComponent()
        response = v2c.ResponsePDU()
        v2c.apiPDU.set_defaults(response)
        v2c.apiPDU.set_request_id(response, int(v2c.apiPDU.get_request_id(pdu)))
        v2c.apiPDU.set_varbinds(response, list(zip(REQUESTED_OIDS, default_values(), strict=True)))
        return _unauthenticated(message_id, user, response)

    return answer
