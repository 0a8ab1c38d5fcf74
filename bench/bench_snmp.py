"""CPU per `snmp` check against a real net-snmp agent on loopback, v2c and v3.

A sweep of endpoint networks runs thousands of SNMP checks per interval, so what one costs the
exporter's process matters more than its latency. For each mode, `--checks` checks run with
at most `--concurrency` at once against one snmpd (the test peer of tests/peers/snmpd.py), and
the process CPU time (`time.process_time`, user + system) is divided by the number of checks.
The first v3 check of a pass phrase pays password-to-key (RFC 3414 A.2, one MiB hashed) and is
reported on its own; the keys are cached after it.

`--pysnmp` adds the same GET through pysnmp's own high-level API (`get_cmd`) with one
SnmpEngine shared by every check, for comparison with the exchange the check does itself.

    .venv/bin/python bench/bench_snmp.py [--checks 2000] [--concurrency 64] [--pysnmp]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from exporter.checks import CHECKS, Target
from exporter.checks.snmp import REQUESTED_OIDS, SnmpSettings
from exporter.runner import run_check
from tests.peers.snmpd import COMMUNITY, SHA256_AES, SHA_AUTH_ONLY, Snmpd, V3User, run_snmpd

CHECK_TIMEOUT_S = 5.0


def _settings(user: V3User | None) -> SnmpSettings:
    if user is None:
        return SnmpSettings(community=COMMUNITY)
    fields = {
        "username": user.name,
        "auth_protocol": user.auth_protocol,
        "auth_password": user.auth_password,
        "priv_protocol": user.priv_protocol,
        "priv_password": user.priv_password,
    }
    return SnmpSettings.model_validate({k: v for k, v in fields.items() if v is not None})


async def _measure(
    name: str, checks: int, concurrency: int, one: Callable[[], Awaitable[str]]
) -> None:
    """Run `one` `checks` times, `concurrency` at once, and print CPU and wall per check."""
    gate = asyncio.Semaphore(concurrency)
    results: Counter[str] = Counter()

    async def bounded() -> None:
        async with gate:
            results[await one()] += 1

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(bounded() for _ in range(checks)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        f"{name:34} {checks:6d} checks  cpu {cpu / checks * 1000:6.3f} ms/check  "
        f"wall {wall:6.2f} s  ({checks / wall:7.0f}/s)  {dict(results)}"
    )


async def _exporter_modes(agent: Snmpd, checks: int, concurrency: int) -> None:
    target = Target("127.0.0.1", agent.port)
    for name, user in (
        ("v2c", None),
        ("v3 authNoPriv SHA", SHA_AUTH_ONLY),
        ("v3 authPriv SHA-256/AES", SHA256_AES),
    ):
        settings = _settings(user)

        async def one(settings: SnmpSettings = settings) -> str:
            outcome = await run_check(CHECKS["snmp"], target, settings, CHECK_TIMEOUT_S)
            return outcome.result.result.value

        if user is not None:
            cpu = time.process_time()
            await one()
            first = (time.process_time() - cpu) * 1000
            print(f"{name + ' (first, keys derived)':34} cpu {first:.1f} ms")
        await _measure(name, checks, concurrency, one)


async def _pysnmp_mode(agent: Snmpd, checks: int, concurrency: int) -> None:
    from pysnmp.hlapi.v3arch.asyncio import (  # noqa: PLC0415 - only for the comparison
        CommunityData,
        ContextData,
        ObjectIdentity,
        ObjectType,
        SnmpEngine,
        UdpTransportTarget,
        get_cmd,
    )

    engine = SnmpEngine()
    try:

        async def one() -> str:
            transport = await UdpTransportTarget.create(
                ("127.0.0.1", agent.port), timeout=CHECK_TIMEOUT_S, retries=0
            )
            indication, status, _, _ = await get_cmd(
                engine,
                CommunityData(COMMUNITY, mpModel=1),
                transport,
                ContextData(),
                *[ObjectType(ObjectIdentity(oid)) for oid in REQUESTED_OIDS],
                lookupMib=False,
            )
            return "ok" if not indication and not status else str(indication or status)

        await _measure("pysnmp get_cmd v2c (shared engine)", checks, concurrency, one)
    finally:
        engine.close_dispatcher()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pysnmp", action="store_true", help="compare with pysnmp's get_cmd")
    args = parser.parse_args()
    with run_snmpd() as agent:
        asyncio.run(_exporter_modes(agent, args.checks, args.concurrency))
        if args.pysnmp:
            asyncio.run(_pysnmp_mode(agent, args.checks, args.concurrency))


if __name__ == "__main__":
    main()
