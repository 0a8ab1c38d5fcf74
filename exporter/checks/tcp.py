"""`tcp`: the flow's port accepts a TCP connection.

Only for flows whose service has no protocol check of its own (custom flows such as a proxy
port); every catalogued service has a protocol-aware check that also proves *who* answered.
"""

from __future__ import annotations

from exporter.checks.base import CheckContext, CheckSettings, CheckSpec, Target
from exporter.checks.net import connect_tcp
from exporter.result import CheckResult


class TcpSettings(CheckSettings):
    """A TCP connect needs nothing beyond the target."""


async def run(target: Target, settings: TcpSettings, context: CheckContext) -> CheckResult:
    """Connect, then close at once."""
    sock = await connect_tcp(context, target)
    sock.close()
    return context.ok(f"TCP connection to {context.address}:{target.port} accepted")


SPEC = CheckSpec("tcp", TcpSettings, run, "TCP connect to the port")
