"""A whole /20 of live addresses inside a namespace, with known holes, for sweep tests.

The namespace routes the /20 to its loopback (`ip route add local`), so every address of it is
the namespace's own and answers; the root namespace routes the /20 to the namespace over the
veth pair. One TCP listener on 0.0.0.0 inside accepts on every address and writes down the
address each connection was made to, so a test can prove which hosts were reached and how often.
Filter rules then carve out hosts whose answers are known in advance:

- `absent`: every packet dropped — no host there (neither TCP nor ICMP echo answered);
- `filtered`: the listener's port dropped, ICMP echo answered — host up, port filtered;
- `refused`: the listener's port answered with a TCP reset.

Every other host of the /20 accepts the connection.
"""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.peers import netns
from tests.peers.netns import IP, IsolatedHost

# Accept on every address of the namespace; one line per connection: the address dialled.
_RECORDING_LISTENER = (
    "import socket,sys\n"
    "s=socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind(('0.0.0.0',int(sys.argv[1])))\n"
    "s.listen(4096)\n"
    "out=open(sys.argv[2],'a',buffering=1)\n"
    "print('ready',flush=True)\n"
    "while True:\n"
    "    c,_=s.accept()\n"
    "    out.write(c.getsockname()[0]+'\\n')\n"
    "    c.close()\n"
)


@dataclass(frozen=True)
class SweptNetwork:
    """The /20, its carved-out blocks, the listener's port and its record of connections."""

    network: ipaddress.IPv4Network
    port: int
    absent: ipaddress.IPv4Network
    filtered: ipaddress.IPv4Network
    refused: ipaddress.IPv4Network
    record: Path

    @property
    def hosts(self) -> int:
        """Hosts a sweep of the /20 probes (network and broadcast addresses excluded)."""
        return self.network.num_addresses - 2

    @property
    def expected_ok(self) -> int:
        """Hosts whose connection is accepted."""
        holes = self.absent.num_addresses + self.filtered.num_addresses
        return self.hosts - holes - self.refused.num_addresses

    def connections(self) -> Counter[str]:
        """How many connections the listener accepted, by the address dialled."""
        return Counter(self.record.read_text(encoding="ascii").split())


@contextlib.contextmanager
def swept_network(port: int, workdir: Path) -> Iterator[SweptNetwork]:
    """The namespace with its /20, listener and rules; everything removed on exit."""
    network = netns.pick_free_network(253, 20)
    blocks = list(network.subnets(new_prefix=24))
    swept = SweptNetwork(
        network=network,
        port=port,
        absent=blocks[1],
        filtered=next(blocks[2].subnets(new_prefix=25)),
        refused=next(blocks[3].subnets(new_prefix=26)),
        record=workdir / "connections.txt",
    )
    swept.record.touch()
    with netns.isolated_host() as host:
        netns._run([IP, "route", "add", str(network), "via", host.address])
        try:
            host.run([IP, "route", "add", "local", str(network), "dev", "lo"])
            _start_listener(host, swept)
            _apply_rules(host, swept)
            yield swept
        finally:
            subprocess.run([IP, "route", "del", str(network)], capture_output=True, check=False)


def _start_listener(host: IsolatedHost, swept: SweptNetwork) -> None:
    host.popen_ready(
        [sys.executable, "-c", _RECORDING_LISTENER, str(swept.port), str(swept.record)],
        f"the recording listener on port {swept.port}",
    )


def _apply_rules(host: IsolatedHost, swept: SweptNetwork) -> None:
    port = str(swept.port)
    host.iptables("-A", "INPUT", "-d", str(swept.absent), "-j", "DROP")
    tcp = ("-p", "tcp", "--dport", port)
    host.iptables("-A", "INPUT", "-d", str(swept.filtered), *tcp, "-j", "DROP")
    host.iptables(
        "-A", "INPUT", "-d", str(swept.refused), *tcp, "-j", "REJECT", "--reject-with", "tcp-reset"
    )
