"""Networks a sweep covers, and the shard of their hosts one exporter takes.

A network is what the config writes: a CIDR (`10.20.0.0/16`, `fd00::/120`) or a host-list file
(`{file: hosts.txt}`, one host address or CIDR a line). Its hosts are produced lazily, in
address order, so a /16 costs a generator, not 65,534 objects.

A shard (`--shard I/N`) keeps the hosts whose stable hash modulo N is I: N exporters given the
same networks and shards 0/N … N-1/N cover every host exactly once, the way Prometheus'
`hashmod` relabelling splits `/probe` targets. The hash is of the address bytes only, so a host
keeps its shard whichever network or file names it.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Shard:
    """The part `index` of `count` of every sweep's hosts."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`I/N` with 0 ≤ I < N, as `--shard` and `scheduler.shard` spell it."""
        index_text, sep, count_text = text.strip().partition("/")
        numbers = (index_text, count_text)
        if not (sep and all(part.isascii() and part.isdigit() for part in numbers)):
            raise ValueError(f"shard {text!r} must be written I/N, such as 0/2")
        index, count = int(index_text), int(count_text)
        if not 1 <= count <= 1024 or not 0 <= index < count:
            raise ValueError(f"shard {text!r}: N must be 1 to 1024 and I from 0 to N-1")
        return cls(index, count)

    def takes(self, packed_address: bytes) -> bool:
        """True when the host with these address bytes belongs to this shard."""
        if self.count == 1:
            return True
        digest = hashlib.blake2b(packed_address, digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True, slots=True)
class Network:
    """A swept network: its label as written and the address blocks it holds.

    A file's entries are kept as written, repeats dropped: an address is one host, a CIDR its
    hosts as for a CIDR target (a host inside two entries of one file is probed twice).
    """

    label: str
    blocks: tuple[IPNetwork, ...]

    @property
    def host_count(self) -> int:
        """Hosts a sweep of the whole network probes, by arithmetic (before any shard)."""
        return sum(_block_hosts(block) for block in self.blocks)

    def hosts(self, shard: Shard | None = None) -> Iterator[str]:
        """The addresses to probe, in order; only this shard's when sharded."""
        for block in self.blocks:
            addresses: Iterator[IPAddress] = (
                iter(block) if block.num_addresses <= 2 else iter(block.hosts())
            )
            for address in addresses:
                if shard is None or shard.takes(address.packed):
                    yield str(address)


def _block_hosts(block: IPNetwork) -> int:
    """What `hosts()` yields: /31, /32, /127 and /128 are all hosts; IPv4 drops network and
    broadcast, IPv6 the subnet-router anycast address."""
    if block.num_addresses <= 2:
        return block.num_addresses
    return block.num_addresses - (2 if block.version == 4 else 1)


def parse_host_list(text: str, origin: str) -> tuple[IPNetwork, ...]:
    """The blocks of a host-list file: one address or CIDR a line, `#` starts a comment.

    Raises ValueError naming the file and line of the first entry that is not an address or
    a CIDR (host names are refused: a sweep's hosts are addresses, resolved by nobody).
    """
    blocks: list[IPNetwork] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            blocks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            shown = entry if len(entry) <= 60 else f"{entry[:60]}…"
            raise ValueError(
                f"{origin}:{number}: {shown!r} is not an IP address or a CIDR network"
            ) from exc
    return tuple(dict.fromkeys(blocks))
