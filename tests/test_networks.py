"""Networks, host lists, shards and how flows turn them into sweeps or pairs."""

from __future__ import annotations

import asyncio
import ipaddress
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from exporter.config import parse_config
from exporter.errors import ConfigError
from exporter.networks import Network, Shard, parse_host_list
from exporter.result import Result
from exporter.store import ResultStore
from exporter.sweep import run_sweep
from tests.peers.exporter import run_cli
from tests.peers.ports import free_tcp_port


def network(text: str) -> Network:
    """A network as a CIDR target writes it."""
    return Network(text, (ipaddress.ip_network(text),))


@pytest.mark.parametrize("count", [2, 3, 7])
@pytest.mark.parametrize("cidr", ["10.0.0.0/20", "fd00::/116"])
def test_shards_split_a_network_with_no_overlap_and_no_gap(cidr: str, count: int) -> None:
    """Every host lands in exactly one shard, and every shard takes a fair part."""
    whole = network(cidr)
    parts = [list(whole.hosts(Shard(index, count))) for index in range(count)]
    assert sorted(host for part in parts for host in part) == sorted(whole.hosts())
    assert sum(len(part) for part in parts) == whole.host_count
    fair = whole.host_count / count
    assert all(0.8 * fair < len(part) < 1.2 * fair for part in parts)


def test_a_host_keeps_its_shard_whatever_names_it() -> None:
    """The hash is of the address alone: in a /24 or a host list, 10.0.0.7 is in one shard."""
    shard = next(
        Shard(index, 4) for index in range(4) if Shard(index, 4).takes(bytes([10, 0, 0, 7]))
    )
    assert "10.0.0.7" in network("10.0.0.0/24").hosts(shard)
    assert list(Network("file:x", parse_host_list("10.0.0.7\n", "x")).hosts(shard)) == ["10.0.0.7"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2", "must be written I/N"),
        ("a/2", "must be written I/N"),
        ("2/2", "N must be 1 to 1024 and I from 0 to N-1"),
        ("0/0", "N must be 1 to 1024"),
        ("0/²", "must be written I/N"),
    ],
)
def test_bad_shards_are_refused(text: str, message: str) -> None:
    """`--shard` and `scheduler.shard` take I/N only."""
    with pytest.raises(ValueError, match=message):
        Shard.parse(text)


@pytest.mark.parametrize(
    ("cidr", "hosts"),
    [
        ("10.0.0.0/30", ["10.0.0.1", "10.0.0.2"]),
        ("10.0.0.4/31", ["10.0.0.4", "10.0.0.5"]),
        ("10.0.0.9/32", ["10.0.0.9"]),
        ("fd00::/126", ["fd00::1", "fd00::2", "fd00::3"]),
    ],
)
def test_hosts_of_a_network(cidr: str, hosts: list[str]) -> None:
    """Network and broadcast addresses are skipped where they exist; counted by arithmetic."""
    assert list(network(cidr).hosts()) == hosts
    assert network(cidr).host_count == len(hosts)


def test_host_list_file_is_a_network(tmp_path: Path) -> None:
    """`{file: PATH}`: addresses and CIDRs, comments and blank lines, repeats dropped."""
    hosts = tmp_path / "pcs.txt"
    hosts.write_text(
        "# branch office\n10.1.0.5\n\n10.1.0.5  # again\n10.1.2.0/30\nfd00::7\n", encoding="utf-8"
    )
    config = parse_config(f"targets:\n  endpoint_networks: [{{file: {hosts}}}]\n", "inline.yaml")
    sweeps = {sweep.flow_id: sweep for sweep in config.sweeps}
    sweep = sweeps["ssh_endpoints"]
    assert sweep.network.label == f"file:{hosts}"
    assert list(sweep.network.hosts()) == ["10.1.0.5", "10.1.2.1", "10.1.2.2", "fd00::7"]
    assert sweep.port == 22
    assert "icmp_endpoints" in sweeps
    assert sweeps["icmp_endpoints"].port is None


def test_host_list_mistake_names_both_files_lines(tmp_path: Path) -> None:
    """A host name in the list: the config's line and the list's own line, in one problem."""
    hosts = tmp_path / "pcs.txt"
    hosts.write_text("10.1.0.5\npc42.corp.example\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        parse_config(f"targets:\n  endpoint_networks:\n    - {{file: {hosts}}}\n", "c.yaml")
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.field) == (
        "c.yaml",
        3,
        "targets.endpoint_networks[0]",
    )
    assert (
        f"{hosts}:2: 'pc42.corp.example' is not an IP address or a CIDR network" in problem.message
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [("# only a comment\n", "names no host"), (b"\xff\xfe", "is not UTF-8 text")],
)
def test_empty_or_binary_host_list_is_refused(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    """A host list that names nothing is a mistake, not an empty sweep."""
    hosts = tmp_path / "pcs.txt"
    if isinstance(content, bytes):
        hosts.write_bytes(content)
    else:
        hosts.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        parse_config(f"targets:\n  endpoint_networks: [{{file: {hosts}}}]\n", "c.yaml")


def test_missing_host_list_is_refused(tmp_path: Path) -> None:
    """The file's absence is named with its path."""
    with pytest.raises(ConfigError, match=f"host list {tmp_path}/none.txt"):
        parse_config(f"targets:\n  endpoint_networks: [{{file: {tmp_path}/none.txt}}]\n", "c.yaml")


def test_sweep_false_expands_pairs_and_shaping_without_sweep_warns() -> None:
    """`sweep: false` gives pairs as for any other role; sweep settings on a flow that sweeps
    nothing are said to have no effect rather than silently ignored."""
    config = parse_config(
        "targets:\n"
        "  endpoint_networks: [192.0.2.0/30]\n"
        "  ibm_hmc: [hmc.corp.example]\n"
        "flows:\n"
        "  ssh_endpoints: {sweep: false}\n"
        "  ssh_hmc: {per_host: true}\n",
        "inline.yaml",
    )
    pairs = sorted(str(job.target) for job in config.jobs if job.flow_id == "ssh_endpoints")
    assert pairs == ["192.0.2.1:22", "192.0.2.2:22"]
    assert "ssh_endpoints" not in {sweep.flow_id for sweep in config.sweeps}
    assert "flow ssh_hmc: per_host has no effect: the flow does not sweep its networks" in (
        config.warnings
    )


def test_a_shard_labels_only_sharded_aggregates() -> None:
    """The `shard` label appears when sharded and not otherwise."""
    text = "targets:\n  endpoint_networks: [192.0.2.0/30]\n"
    plain = parse_config(text, "a.yaml")
    sharded = parse_config(text, "b.yaml", shard=Shard(1, 3))
    store = ResultStore("endpoint_server")
    assert ("shard", "1/3") in store.network_labels(sharded.sweeps[0])
    assert "shard" not in dict(store.network_labels(plain.sweeps[0]))
    in_file = parse_config("scheduler: {shard: 0/2}\n" + text, "c.yaml")
    assert str(in_file.sweeps[0].shard) == "0/2"


async def test_per_host_series_are_capped_in_address_order() -> None:
    """`per_host: true` gives the first `max_per_host_series` hosts their pair series."""
    port = free_tcp_port()
    config = parse_config(
        "extra_flows:\n"
        f"  - {{id: lo_sweep, check: tcp, port: {port}, sweep: true, per_host: true,\n"
        "     max_per_host_series: 3, presence: none, targets: [127.0.0.0/29]}\n",
        "inline.yaml",
    )
    (sweep,) = config.sweeps
    tally = await run_sweep(sweep, asyncio.Semaphore(8))
    assert tally.counts[Result.REFUSED] == tally.probed == 6
    assert tally.absent == 0  # a reset comes from the host itself
    store = ResultStore("endpoint_server")
    store.record_sweep(sweep, tally)
    text = store.render().decode()
    up = sorted(line for line in text.splitlines() if line.startswith("certero_flow_up{"))
    assert [line.split('target="')[1].split('"')[0] for line in up] == [
        f"127.0.0.{index}:{port}" for index in (1, 2, 3)
    ]
    assert "certero_flow_check_duration_seconds_bucket{" not in text
    assert 'certero_flow_network_hosts{flow="lo_sweep",source="endpoint_server",' in text


@pytest.mark.parametrize("output", ["junit", "table"])
def test_check_reports_a_swept_network_as_one_row(tmp_path: Path, output: str) -> None:
    """`check`: a network where no host passed fails as one test case / one row; `--details`
    lists its worst hosts."""
    port = free_tcp_port()
    path = tmp_path / "config.yaml"
    path.write_text(
        "extra_flows:\n"
        f"  - {{id: lo_sweep, check: tcp, port: {port}, sweep: true, presence: none,\n"
        "     targets: [127.0.0.0/29]}\n",
        encoding="utf-8",
    )
    run = run_cli(
        "check", "--config", str(path), "--no-progress", "--format", output, "--details", timeout=60
    )
    assert run.returncode == 1, run.stderr
    if output == "junit":
        suite = ET.fromstring(run.stdout).find("testsuite")
        assert suite is not None
        assert (suite.get("tests"), suite.get("failures")) == ("1", "1")
        failure = suite.find("testcase/failure")
        assert failure is not None
        assert failure.get("type") == "network"
        assert failure.get("message") == "6 hosts: 6 refused; 0 no host, 0 filtered"
    else:
        assert "127.0.0.0/29" in run.stdout
        assert "127.0.0.6: refused" in run.stdout
        assert (
            "0/1 flows ok (1 swept networks, each ok when a host passed), 1 failing" in run.stdout
        )
