"""`db2` check against a real Apache Derby network server, a Db2-like fake, nginx and bad peers."""

from __future__ import annotations

import asyncio
import struct

import pytest

from exporter.catalogue import FLOWS_BY_ID
from exporter.checks import CHECKS, Target
from exporter.checks.db2 import (
    MAX_REPLY_DSS,
    Db2Settings,
    accsec_request,
    decode_text,
    excsat_request,
    parse_ddm,
    release_version,
    validate_dss_header,
)
from exporter.config import parse_config
from exporter.errors import CheckFailure
from exporter.result import CheckResult, Phase, Result
from exporter.runner import run_check
from tests.checks import drda_fake
from tests.checks.fakes import HOST, closes_at_once, fake_server, sends_then_waits, silent
from tests.peers.derby import Derby, run_ij
from tests.peers.nginx import Nginx
from tests.peers.ports import free_tcp_port

SHORT_TIMEOUT_S = 1.0
FAKE_DATABASE = "BIGFIX"


async def _db2(
    port: int, settings: Db2Settings | None = None, timeout_seconds: float = 5.0
) -> CheckResult:
    outcome = await run_check(
        CHECKS["db2"], Target(HOST, port), settings or Db2Settings(), timeout_seconds
    )
    return outcome.result


def _dss(body: bytes, fmt: int = 0x02, length: int | None = None) -> bytes:
    """A reply DSS around `body`, with a length field that may lie."""
    size = 6 + len(body) if length is None else length
    return struct.pack(">HBBH", size, 0xD0, fmt, 1) + body


def test_catalogue_flows_run_the_db2_check() -> None:
    """db2_ilmt and db2_bigfix run the DRDA check on port 50000, no fallback and no warning."""
    config = parse_config(
        "source: endpoint_server\n"
        "targets: {ilmt_db2: [127.0.0.1], bigfix_db2: [127.0.0.1]}\n"
        "flows: {db2_ilmt: {database: TEMADB}, db2_bigfix: {}}\n",
        "inline.yaml",
    )
    jobs = {job.flow_id: job for job in config.jobs if job.flow_id.startswith("db2_")}
    assert {flow_id: job.check for flow_id, job in jobs.items()} == {
        "db2_ilmt": "db2",
        "db2_bigfix": "db2",
    }
    assert jobs["db2_ilmt"].settings == Db2Settings(database="TEMADB")
    for flow_id in ("db2_ilmt", "db2_bigfix"):
        assert FLOWS_BY_ID[flow_id].check == "db2"
        assert FLOWS_BY_ID[flow_id].port == 50000
    assert not [warning for warning in config.warnings if "db2" in warning]


def test_database_setting_is_validated() -> None:
    """A database name with blanks or quotes is rejected when the config is loaded."""
    with pytest.raises(ValueError, match="database"):
        Db2Settings(database="bad name'")


async def test_ok_against_derby(derby: Derby) -> None:
    """Derby answers EXCSAT: server class, release level and server name become peer info."""
    result = await _db2(derby.port)
    assert result.result is Result.OK, result.detail
    assert result.peer is not None
    assert result.peer.product == "Apache Derby"
    assert result.peer.version.startswith("10.")
    assert result.detail.startswith("DRDA Apache Derby CSS10")
    assert "server name NetworkServerControl" in result.detail
    assert {Phase.CONNECT, Phase.HANDSHAKE} <= set(result.phases)


async def test_derby_database_is_not_claimed(derby: Derby) -> None:
    """Derby accepts any name at ACCSEC, so the detail says the database is not verified."""
    for database in (derby.database, "nosuchdb"):
        result = await _db2(derby.port, Db2Settings(database=database))
        assert result.result is Result.OK, result.detail
        assert f"database {database} not verified" in result.detail


async def test_db2_like_server_known_database() -> None:
    """A Db2 server that accepts ACCSEC for the database proves it knows the database."""
    async with fake_server(drda_fake.db2_like(FAKE_DATABASE)) as port:
        result = await _db2(port, Db2Settings(database=FAKE_DATABASE))
    assert result.result is Result.OK, result.detail
    assert result.peer is not None
    assert (result.peer.product, result.peer.version) == ("QDB2/LINUXX8664", "11.5.5")
    assert result.detail == (
        "DRDA QDB2/LINUXX8664 SQL11055, server name db2inst1, external name db2sysc 0, "
        f"database {FAKE_DATABASE} known (ACCSEC accepted)"
    )


async def test_db2_like_server_unknown_database_is_service_error() -> None:
    """RDBNFNRM in answer to ACCSEC is service_error naming the database."""
    async with fake_server(drda_fake.db2_like(FAKE_DATABASE)) as port:
        result = await _db2(port, Db2Settings(database="TEMADB"))
    assert result.result is Result.SERVICE_ERROR
    assert "database TEMADB not found" in result.detail
    assert "RDBNFNRM" in result.detail


async def test_db2_like_fake_proven_by_derby_client() -> None:
    """Derby's network client (ij) reads the fake's RDBNFNRM as "database not found"."""
    async with fake_server(drda_fake.db2_like(FAKE_DATABASE)) as port:
        url = f"jdbc:derby://{HOST}:{port}/TEMADB;user=app;password=app"
        output = await asyncio.to_thread(run_ij, f"connect '{url}';\nexit;\n")
    assert "ERROR 08004" in output
    assert "database TEMADB was not found" in output


async def test_closed_port_is_refused() -> None:
    """Nothing listening on the port is refused."""
    result = await _db2(free_tcp_port())
    assert result.result is Result.REFUSED


async def test_http_server_is_protocol_mismatch(nginx: Nginx) -> None:
    """nginx answers EXCSAT with an HTTP 400, which is no DSS: protocol_mismatch."""
    result = await _db2(nginx.http_port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "not a DRDA server: it sent 'HTTP/1'" in result.detail


async def test_silent_listener_is_timeout() -> None:
    """A listener that never answers EXCSAT times out during the handshake."""
    async with fake_server(silent) as port:
        result = await _db2(port, timeout_seconds=SHORT_TIMEOUT_S)
    assert result.result is Result.TIMEOUT
    assert "handshake" in result.detail


async def test_closed_at_once_is_service_error() -> None:
    """A peer that closes without a byte is a service_error, not a mismatch."""
    async with fake_server(closes_at_once) as port:
        result = await _db2(port)
    assert result.result is Result.SERVICE_ERROR
    assert "closed" in result.detail


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (b"220 mail.example ESMTP\r\n", "it sent '220 ma'"),
        (b"\x00\x20\xd1\x02\x00\x01" + bytes(26), "it sent"),
        (_dss(b"\x00\x04\x14\x43", fmt=0x01), "DSS format byte 0x01"),
        (_dss(b"\x00\x04\x14\x43", fmt=0x82), "DSS format byte 0x82"),
        (_dss(b"", length=0xFFFF), "DSS length field 0xFFFF"),
        (_dss(b"", length=7), "DSS length field 0x0007"),
        (_dss(b"\x00\x05\x14\x43\x00"), "truncated DDM parameter"),
        (_dss(b"\x00\x09\x14\x43\xff\xff\x11\x47\x00"), "DDM parameter 0x1147 with length 65535"),
        (_dss(b"\x00\x08\x14\x43\x00\x02\x11\x47"), "DDM parameter 0x1147 with length 2"),
        (_dss(b"\x00\x10\x14\x43\x00\x04\x11\x47"), "DDM object of 16 bytes in a 8-byte DSS"),
        (_dss(b"\x00\x04\x24\x08"), "reply code point 0x2408 instead of EXCSATRD"),
        (_dss(b"\x00\x04\x14\x43", fmt=0x42) * (MAX_REPLY_DSS + 1), "chained DSSs"),
    ],
)
async def test_garbage_is_protocol_mismatch(reply: bytes, words: str) -> None:
    """Other protocols, bad DSS headers and lying lengths are protocol_mismatch, bounded reads."""
    async with fake_server(sends_then_waits(reply)) as port:
        result = await _db2(port, timeout_seconds=SHORT_TIMEOUT_S)
    assert result.result is Result.PROTOCOL_MISMATCH, result.detail
    assert words in result.detail


async def test_short_dss_is_protocol_mismatch() -> None:
    """A DSS shorter than its length field, then the end of the stream, is protocol_mismatch."""

    async def sends_then_closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(len(excsat_request()))  # unread bytes would make the close a reset
        writer.write(_dss(b"\x00\x04\x14\x43", length=32000))
        await writer.drain()
        writer.close()

    async with fake_server(sends_then_closes) as port:
        result = await _db2(port)
    assert result.result is Result.PROTOCOL_MISMATCH
    assert "announced a 32000-byte DSS and sent 10" in result.detail


async def test_refused_excsat_is_service_error() -> None:
    """A DRDA server answering EXCSAT with SYNTAXRM is DRDA that refused us: service_error."""
    syntaxrm = b"\x00\x0a\x12\x4c\x00\x06\x11\x49\x00\x08"
    async with fake_server(sends_then_waits(_dss(syntaxrm))) as port:
        result = await _db2(port)
    assert result.result is Result.SERVICE_ERROR
    assert "SYNTAXRM" in result.detail


def test_dss_parser_bounds_hostile_lengths() -> None:
    """The header check rejects any length that would make the reader wait for or hold more."""
    for length in (0, 6, 9, 0x8000, 0xFFFF):
        with pytest.raises(CheckFailure, match="length field"):
            validate_dss_header(struct.pack(">HBBH", length, 0xD0, 0x02, 1))
    assert validate_dss_header(struct.pack(">HBBH", 0x7FFF, 0xD0, 0x52, 1)) == (0x7FFF, 0x52)
    many = b"\x00\x04\x11\x47" * 8000  # 8000 empty parameters: parsed in one bounded pass
    ddm = parse_ddm(struct.pack(">HH", 4 + len(many), 0x1443) + many)
    assert len(ddm.parameters) == 8000


def test_requests_match_the_specification() -> None:
    """EXCSAT and ACCSEC are single, unchained request DSSs with the code points DRDA names."""
    excsat = excsat_request()
    assert excsat[2:4] == b"\xd0\x01"
    assert int.from_bytes(excsat[:2], "big") == len(excsat)
    assert excsat[8:10] == b"\x10\x41"
    accsec = accsec_request("TEMADB")
    assert accsec[8:10] == b"\x10\x6d"
    assert accsec.endswith(b"\x21\x10" + "TEMADB".ljust(18).encode("cp500"))


def test_strings_and_release_levels() -> None:
    """EBCDIC or ASCII strings decode; Db2 levels become versions, Derby's keep theirs."""
    assert decode_text("Apache Derby".encode("cp500")) == "Apache Derby"
    assert decode_text(b"QDB2/NT64") == "QDB2/NT64"
    assert decode_text(b"\x00\x01") == "??"
    assert release_version("SQL11055") == "11.5.5"
    assert release_version("DSN12015") == "12.1.5"
    assert release_version("CSS10140/10.14.2.0 - (1828579)") == "10.14.2.0"
    assert release_version("IFX12100") == "IFX12100"


@pytest.mark.parametrize(
    ("accsec_reply", "result", "words"),
    [
        (b"\x00\x04\x22\x1a", Result.SERVICE_ERROR, "refused access to database TEMADB: RDBAFLRM"),
        (b"\x00\x04\x24\x08", Result.PROTOCOL_MISMATCH, "0x2408 instead of ACCSECRD"),
    ],
)
async def test_other_accsec_answers(accsec_reply: bytes, result: Result, words: str) -> None:
    """Another refusal of ACCSEC is service_error by name; a non-DRDA answer is a mismatch."""
    excsatrd = b"\x00\x14\x14\x43\x00\x10\x11\x47" + "QDB2/NT64   ".encode("cp500")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(excsat_request()))
        writer.write(_dss(excsatrd))
        await reader.readexactly(len(accsec_request("TEMADB")))
        writer.write(_dss(accsec_reply))
        await reader.read(1)

    async with fake_server(handler) as port:
        outcome = await _db2(port, Db2Settings(database="TEMADB"))
    assert outcome.result is result, outcome.detail
    assert words in outcome.detail
    assert outcome.peer is not None
    assert outcome.peer.product == "QDB2/NT64"
