"""A throwaway network namespace wired to the root namespace by a veth pair.

It lets tests put real packet filters (iptables, nf_tables backend) in front of a real listener,
so timeouts, ICMP rejects and ping failures come from the kernel, not from mocks.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import secrets
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

from tests.peers.ports import wait_for_tcp, wait_for_udp_echo
from tests.peers.procs import stop_process

IP = "/usr/sbin/ip"
# Debian's iptables defaults to nf_tables; name the backend explicitly so alternatives don't matter
IPTABLES = shutil.which("iptables-nft") or "iptables"
SUBNET_ATTEMPTS = 50
LISTENER_TIMEOUT_S = 10.0

# accept and keep every connection open, so the peer sees an established, silent server
_LISTENER_CODE = (
    "import socket,sys\n"
    "s=socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind((sys.argv[1],int(sys.argv[2])))\n"
    "s.listen(128)\n"
    "held=[]\n"
    "while True:\n"
    "    held.append(s.accept()[0])\n"
)
# answer every datagram with itself; say "ready" once bound
_UDP_ECHO_CODE = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
    "s.bind((sys.argv[1],int(sys.argv[2])))\n"
    "print('ready',flush=True)\n"
    "while True:\n"
    "    data,peer=s.recvfrom(65535)\n"
    "    s.sendto(data,peer)\n"
)
_ROUTE_TYPES = frozenset(
    {
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "anycast",
        "unreachable",
        "blackhole",
        "prohibit",
        "throw",
        "nat",
    }
)

_Stream = int | IO[bytes] | None


def _run(argv: Sequence[str]) -> str:
    """Run a setup command; on failure raise with its stderr so the cause is visible."""
    result = subprocess.run(list(argv), check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed with code {result.returncode}: {result.stderr.strip()}"
        )
    return result.stdout


def _existing_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination routed in the root namespace (all tables), default route excluded."""
    networks: list[ipaddress.IPv4Network] = []
    for line in _run([IP, "-4", "route", "show", "table", "all"]).splitlines():
        tokens = line.split()
        if tokens and tokens[0] in _ROUTE_TYPES:
            tokens = tokens[1:]
        if not tokens or tokens[0] == "default":
            continue
        with contextlib.suppress(ValueError):
            networks.append(ipaddress.IPv4Network(tokens[0], strict=False))
    return networks


def pick_free_network(second_octet: int, prefix: int) -> ipaddress.IPv4Network:
    """A random 10.<second_octet>.x.y/<prefix> that overlaps no route of the root namespace,
    so a test never hijacks real traffic."""
    existing = _existing_networks()
    rng = random.SystemRandom()
    space = ipaddress.IPv4Network(f"10.{second_octet}.0.0/16")
    count = 1 << (prefix - space.prefixlen)
    for _ in range(SUBNET_ATTEMPTS):
        offset = rng.randrange(count) << (32 - prefix)
        candidate = ipaddress.IPv4Network((int(space.network_address) + offset, prefix))
        if not any(candidate.overlaps(net) for net in existing):
            return candidate
    raise RuntimeError(f"no free /{prefix} in {space} after {SUBNET_ATTEMPTS} random tries")


@dataclass
class IsolatedHost:
    """A namespace reachable from the root namespace at `address`; rules apply to its INPUT."""

    name: str
    root_address: str
    address: str
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def run(self, argv: Sequence[str]) -> str:
        """Run a command inside the namespace to completion and return its stdout."""
        return _run([IP, "netns", "exec", self.name, *argv])

    def iptables(self, *args: str) -> None:
        """Apply one iptables command (e.g. "-A", "INPUT", ...) inside the namespace only."""
        self.run([IPTABLES, *args])

    def popen(
        self,
        argv: Sequence[str],
        *,
        stdout: _Stream = subprocess.DEVNULL,
        stderr: _Stream = subprocess.DEVNULL,
        new_session: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Start a process inside the namespace; it is stopped when the namespace is torn down.

        `new_session=False` is for daemons that call setsid() themselves (smbd, nmbd): that
        fails in a process that already leads a session, and they refuse to start.
        """
        # `ip netns exec` execs the command, so the PID is the process itself
        proc = subprocess.Popen(
            [IP, "netns", "exec", self.name, *argv],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=new_session,
        )
        self._procs.append(proc)
        return proc

    def popen_ready(self, argv: Sequence[str], what: str) -> subprocess.Popen[bytes]:
        """`popen` a server that prints "ready" once it listens, and wait for that line."""
        proc = self.popen(argv, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        with proc.stdout:
            readable, _, _ = select.select([proc.stdout], [], [], LISTENER_TIMEOUT_S)
            if not readable or proc.stdout.readline() != b"ready\n":
                raise RuntimeError(f"{what} did not start")
        return proc

    def tcp_listener(self, port: int) -> subprocess.Popen[bytes]:
        """Start an accept-and-hold TCP listener on address:port and wait until it accepts.

        Call it before adding rules that block `port`: readiness is probed from the root namespace.
        """
        proc = self.popen([sys.executable, "-c", _LISTENER_CODE, self.address, str(port)])
        wait_for_tcp(self.address, port, LISTENER_TIMEOUT_S, proc=proc)
        return proc

    def udp_echo(self, port: int) -> subprocess.Popen[bytes]:
        """Start a UDP echo server on address:port and wait until it answers.

        The server says when it is bound before the first probe is sent: a probe that found the
        port closed would spend the namespace's ICMP error budget (a burst of 6, then one a
        second per destination), and a test's own REJECT would then go unanswered. Call it
        before adding rules that block `port`: one echo is checked from the root namespace.
        """
        proc = self.popen_ready(
            [sys.executable, "-c", _UDP_ECHO_CODE, self.address, str(port)],
            f"the UDP echo server on {self.address}:{port}",
        )
        wait_for_udp_echo(self.address, port, LISTENER_TIMEOUT_S, proc=proc)
        return proc

    def drop_all_udp_to(self, port: int) -> None:
        """Silently drop UDP to `port`, so requests get no reply."""
        self.iptables("-A", "INPUT", "-p", "udp", "--dport", str(port), "-j", "DROP")

    def reject_udp(self, port: int, reject_with: str) -> None:
        """Answer UDP to `port` with the ICMP error `reject_with` (e.g. icmp-admin-prohibited)."""
        self.iptables(
            "-A",
            "INPUT",
            "-p",
            "udp",
            "--dport",
            str(port),
            "-j",
            "REJECT",
            "--reject-with",
            reject_with,
        )

    @contextlib.contextmanager
    def dropping(self, protocol: str, port: int) -> Iterator[None]:
        """Silently drop `protocol` ("tcp"/"udp") to `port` while the block runs, then stop.

        For a namespace that outlives the test (a session's daemons): the rule goes first in
        INPUT and is deleted on exit, whatever the test did, so later tests see the port open.
        """
        rule = ["INPUT", "-p", protocol, "--dport", str(port), "-j", "DROP"]
        self.iptables("-I", *rule)
        try:
            yield
        finally:
            self.iptables("-D", *rule)

    def drop_all_tcp_to(self, port: int) -> None:
        """Silently drop TCP to `port`, so connects time out."""
        self.iptables("-A", "INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP")

    def reject_admin_prohibited(self, port: int) -> None:
        """Answer TCP to `port` with ICMP admin-prohibited, so connects fail with EHOSTUNREACH."""
        self.iptables(
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            str(port),
            "-j",
            "REJECT",
            "--reject-with",
            "icmp-admin-prohibited",
        )

    def drop_icmp_echo(self) -> None:
        """Drop ICMP echo requests, so ping gets no reply."""
        self.iptables("-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request", "-j", "DROP")

    def stop_processes(self) -> None:
        """Stop every process started in the namespace (SIGTERM, then SIGKILL)."""
        while self._procs:
            stop_process(self._procs.pop())


def _link_exists(name: str) -> bool:
    """Whether a link of that name exists in the root namespace."""
    return (
        subprocess.run(
            [IP, "link", "show", "dev", name], capture_output=True, check=False
        ).returncode
        == 0
    )


@contextlib.contextmanager
def isolated_host(rules: Sequence[Sequence[str]] = ()) -> Iterator[IsolatedHost]:
    """Create namespace + veth pair + /30, apply `rules` (iptables argv tails), clean up on exit."""
    suffix = secrets.token_hex(4)
    name = f"cfe{suffix}"  # 11 chars; the veth names below stay within IFNAMSIZ (15)
    root_link = f"cfe{suffix}r"
    ns_link = f"cfe{suffix}n"
    subnet = pick_free_network(254, 30)
    root_ip, ns_ip = (str(host) for host in subnet.hosts())
    host = IsolatedHost(name=name, root_address=root_ip, address=ns_ip)
    created = False
    try:
        _run([IP, "netns", "add", name])
        created = True
        _run([IP, "link", "add", root_link, "type", "veth", "peer", "name", ns_link, "netns", name])
        _run([IP, "addr", "add", f"{root_ip}/{subnet.prefixlen}", "dev", root_link])
        _run([IP, "link", "set", root_link, "up"])
        _run([IP, "-n", name, "addr", "add", f"{ns_ip}/{subnet.prefixlen}", "dev", ns_link])
        _run([IP, "-n", name, "link", "set", "lo", "up"])
        _run([IP, "-n", name, "link", "set", ns_link, "up"])
        for rule in rules:
            host.iptables(*rule)
        yield host
    finally:
        host.stop_processes()
        if created:
            subprocess.run([IP, "netns", "del", name], capture_output=True, check=False)
        if _link_exists(root_link):
            subprocess.run([IP, "link", "del", root_link], capture_output=True, check=False)
