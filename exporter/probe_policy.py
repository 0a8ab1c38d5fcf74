"""What `/probe` may reach: allow-list patterns and the one decision that applies them.

`/probe` runs a check against a target named in the request, so without a rule any client of
the exporter could make it connect anywhere the exporter can reach, and a flow's settings (its
headers, path and credentials) would go wherever the client points. The rule:

* a flow module (a catalogue flow or an `extra_flows` id) may probe that flow's own configured
  targets, exactly as the scheduler checks them (a target inside one of its networks counts),
  and targets matching `probe.modules.<flow>.allow`; the global `probe.allow` never applies to
  a flow, because a flow carries settings meant for its own targets only;
* a bare check module (`tcp`, `https`, ...) runs with default settings and may probe targets
  matching `probe.allow` or `probe.modules.<check>.allow`.

Both lists are empty by default. Names are matched as written in the request, never by what
they resolve to: an allowed name that resolves somewhere unexpected is the DNS owner's choice,
and an address is only allowed by an address or CIDR pattern. This module knows no protocol.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config imports this module for its pattern type
    from exporter.checks import Target
    from exporter.config import FlowTemplate, ProbeSettings

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAME = re.compile(r"[A-Za-z0-9*._-]+")
_PORTS = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


@dataclass(frozen=True, slots=True)
class AllowPattern:
    """One allow-list entry: an address or network, or a host name pattern; maybe ports."""

    text: str
    network: IpNetwork | None = None
    name: re.Pattern[str] | None = None
    ports: tuple[int, int] | None = None

    def matches(self, target: Target) -> bool:
        """Whether `target` (host as written, port) falls under this pattern."""
        if self.ports is not None and (
            target.port is None or not self.ports[0] <= target.port <= self.ports[1]
        ):
            return False
        address = _address(target.host)
        if self.network is not None:
            return address is not None and address in self.network
        assert self.name is not None
        return address is None and self.name.fullmatch(target.host) is not None

    def __str__(self) -> str:
        return self.text


def parse_allow_pattern(text: str) -> AllowPattern:
    """`10.0.0.0/8`, `192.0.2.7`, `*.corp.example`, each optionally with `:443` or `:8000-8999`.

    IPv6 takes brackets when a port follows (`[fd00::/8]:443`). `*` in a name matches any run
    of characters, dots included, case-insensitively.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty pattern")
    host, ports = text, None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [IPv6 address or network] or [...]:port")
        ports = _port_range(rest[1:], text) if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        ports = _port_range(port_text, text)
    network = _network(host)
    if network is not None:
        return AllowPattern(text, network=network, ports=ports)
    if text.startswith("[") or ":" in host or "/" in host:
        raise ValueError(f"{text!r} is not a valid address or CIDR network")
    if not _NAME.fullmatch(host):
        raise ValueError(f"{text!r} is not a valid host name pattern")
    if re.fullmatch(r"[0-9.*]*[0-9][0-9.*]*", host):
        raise ValueError(
            f"{text!r}: name patterns never match addresses; "
            "give a CIDR network such as 10.0.0.0/24 instead"
        )
    regex = ".*".join(re.escape(part) for part in host.split("*"))
    return AllowPattern(text, name=re.compile(regex, re.IGNORECASE), ports=ports)


def _network(host: str) -> IpNetwork | None:
    try:
        return ipaddress.ip_network(host, strict=False)
    except ValueError:
        return None


def _port_range(text: str, whole: str) -> tuple[int, int]:
    match = _PORTS.fullmatch(text)
    if match is None:
        raise ValueError(f"{whole!r}: expected :port or :low-high after the host")
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) else low
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"{whole!r}: ports must be from 1 to 65535, low before high")
    return (low, high)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def refusal(
    settings: ProbeSettings, module: str, template: FlowTemplate | None, target: Target
) -> str | None:
    """Why `/probe` must not run `module` against `target`, or None when it may.

    `template` is the flow's resolved template when `module` is a flow, None for a bare check.
    """
    allowed = settings.modules.get(module)
    module_patterns = allowed.allow if allowed is not None else []
    if template is not None:
        if is_configured_target(template, target) or _any_match(module_patterns, target):
            return None
        return (
            f"target {target} is not a configured target of flow {module} and matches no "
            f"probe.modules.{module}.allow pattern"
        )
    if _any_match(settings.allow, target) or _any_match(module_patterns, target):
        return None
    return (
        f"target {target} matches no probe.allow or probe.modules.{module}.allow pattern "
        f"(a bare check module probes only targets allowed there)"
    )


def _any_match(patterns: Iterable[AllowPattern], target: Target) -> bool:
    return any(pattern.matches(target) for pattern in patterns)


def is_configured_target(template: FlowTemplate, target: Target) -> bool:
    """Whether the scheduler checks `target` for this flow: same host and port, or a host of
    one of its networks (tested by membership, never by listing the network)."""
    address = _address(target.host)
    for endpoint in template.endpoints:
        if template.port_for(endpoint.port) != target.port:
            continue
        network = endpoint.hosts_of
        if network is None:
            written = _address(endpoint.host)
            if written is not None and written == address:
                return True
            if written is None and endpoint.host.lower() == target.host.lower():
                return True
        elif address is not None and any(_is_host_of(address, block) for block in network.blocks):
            return True
    return False


def _is_host_of(address: ipaddress.IPv4Address | ipaddress.IPv6Address, network: IpNetwork) -> bool:
    """Membership in `network.hosts()` (which the scheduler expands) without listing it."""
    if address not in network:
        return False
    if network.version == 4 and network.prefixlen < 31:
        return address not in (network.network_address, network.broadcast_address)
    if network.version == 6 and network.prefixlen < 127:
        return address != network.network_address
    return True
