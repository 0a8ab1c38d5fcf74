"""impacket, a third independent client, sees the fake SQL Server through its Browser.

impacket's `MSSQL.getInstances` sends the SSRP broadcast request to UDP 1434 of the host and
parses the instance list itself, so the fake Browser's answer is proven against a parser that
is not ours. (impacket encrypts the login with TLS inside TDS, which the fake does not offer;
FreeTDS `tsql` and pymssql prove the login, see test_mssql_peer.py.)
"""

from __future__ import annotations

import asyncio
import random

from impacket import tds

from tests.fakes.tds import SERVER_NAME, browser, tds_server

BROWSER_TIMEOUT_S = 2


def _loopback_address() -> str:
    """A random 127.x address: UDP 1434 is fixed, so parallel runs must not share an address."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


async def test_impacket_lists_the_instance_and_its_port() -> None:
    """impacket's SSRP client reads the server name, the instance and its TCP port."""
    address = _loopback_address()
    async with (
        tds_server("monitor", "right", host=address) as fake,
        browser({"SQLEXPRESS": fake.port}, host=address, port=1434),
    ):
        client = tds.MSSQL(address)
        instances = await asyncio.to_thread(client.getInstances, BROWSER_TIMEOUT_S)
    assert [(entry["ServerName"], entry["InstanceName"], entry["tcp"]) for entry in instances] == [
        (SERVER_NAME, "SQLEXPRESS", str(fake.port))
    ]
