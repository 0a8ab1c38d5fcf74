"""`tls`: a TLS handshake completes and the certificate verifies for the expected name."""

from __future__ import annotations

import time

from exporter.checks.base import CheckContext, CheckSpec, Target
from exporter.checks.net import TlsSettings, close_stream, open_stream, start_tls
from exporter.result import CheckResult, PeerInfo


async def run(target: Target, settings: TlsSettings, context: CheckContext) -> CheckResult:
    """Connect, handshake, report the negotiated version and the certificate expiry."""
    reader, writer = await open_stream(context, target)
    try:
        await start_tls(context, target, reader, writer, settings)
        version = writer.get_extra_info("ssl_object").version() or ""
        context.peer = PeerInfo(product="TLS", version=version)
    finally:
        await close_stream(writer)
    return context.ok(
        f"{version} handshake with {context.address}:{target.port}{expiry_note(context)}"
    )


def expiry_note(context: CheckContext) -> str:
    """A short ", certificate expires in N days" suffix for details."""
    if context.tls_cert_expiry_seconds is None:
        return ""
    days = (context.tls_cert_expiry_seconds - time.time()) / 86400
    return f", certificate expires in {days:.0f} days"


SPEC = CheckSpec("tls", TlsSettings, run, "TLS handshake with certificate verification")
