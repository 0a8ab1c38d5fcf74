"""Sweeps of a real /20 in a namespace: exact counts per result class, the "no host" split,
the series budget of a swept network, and shards that cover every host exactly once."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.collector import NETWORK_FAMILIES
from exporter.config import Config, parse_config
from exporter.result import Result
from exporter.sweep import run_sweep
from tests.peers.exporter import run_cli, run_exporter
from tests.peers.ports import free_tcp_port
from tests.peers.sweepnet import SweptNetwork, swept_network

SWEEP_INTERVAL_S = 30.0
POLL_DEADLINE_S = 40.0
# Series of one swept network: hosts per result class, then probed, absent, filtered, duration
# and completion time. The README's series budget says the same.
NETWORK_SERIES = len(Result) + len(NETWORK_FAMILIES) - 1


@pytest.fixture(scope="module")
def slash20(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SweptNetwork]:
    """The /20 with its known holes, shared by this module's tests (each reads its own counts)."""
    with swept_network(free_tcp_port(), tmp_path_factory.mktemp("sweep")) as network:
        yield network


def sweep_config(swept: SweptNetwork, scheduler: str = "concurrency: 512") -> str:
    """A flow of the user's own sweeping the /20 on the listener's port, 1 s per host."""
    return (
        f"scheduler: {{{scheduler}}}\n"
        "extra_flows:\n"
        f"  - {{id: sweep_tcp, check: tcp, port: {swept.port}, sweep: true,\n"
        f"     interval: {SWEEP_INTERVAL_S:g}s, timeout: 1s, targets: [{swept.network}]}}\n"
    )


def expected_counts(swept: SweptNetwork) -> dict[str, int]:
    """Every host's result is known in advance from the namespace's rules."""
    counts = dict.fromkeys((result.value for result in Result), 0)
    counts["ok"] = swept.expected_ok
    counts["refused"] = swept.refused.num_addresses
    counts["timeout"] = swept.absent.num_addresses + swept.filtered.num_addresses
    return counts


async def test_sweep_counts_every_class_and_tells_no_host_from_filtered(
    slash20: SweptNetwork,
) -> None:
    """4,094 hosts: each class counted exactly, absent hosts apart from filtered ports."""
    config: Config = parse_config(sweep_config(slash20), "sweep.yaml")
    (sweep,) = config.sweeps
    assert not config.jobs
    tally = await run_sweep(sweep, asyncio.Semaphore(512))
    assert tally.probed == slash20.hosts == 4094
    assert {result.value: count for result, count in tally.counts.items()} == expected_counts(
        slash20
    )
    assert tally.absent == slash20.absent.num_addresses
    assert tally.filtered == slash20.filtered.num_addresses
    assert tally.duration_seconds < SWEEP_INTERVAL_S
    worst = tally.worst
    assert len(worst) == 20
    assert all(host.present for host in worst)  # filtered and refused hosts before absent ones
    refused = [host.host for host in worst if host.result.result is Result.REFUSED]
    assert refused == sorted(refused, key=lambda text: tuple(map(int, text.split("."))))


def test_scheduled_sweep_publishes_aggregates_within_budget(
    slash20: SweptNetwork, tmp_path: Path
) -> None:
    """The exporter sweeps the /20 on its own, within its interval, in 15 series, and the
    landing page shows the network as one row."""
    path = tmp_path / "config.yaml"
    config = sweep_config(slash20, "concurrency: 512, startup_spread: 100ms")
    path.write_text(config, encoding="utf-8")
    with run_exporter(path, tmp_path) as exporter:
        deadline = time.monotonic() + POLL_DEADLINE_S
        while True:
            status, body = exporter.get("/metrics")
            assert status == 200
            if "certero_flow_network_sweep_last_completion_timestamp_seconds{" in body:
                break
            assert time.monotonic() < deadline, "no sweep completed"
            time.sleep(0.2)
        _, page = exporter.get("/")
    series = [line for line in body.splitlines() if line.startswith("certero_flow_network_")]
    assert len(series) == NETWORK_SERIES == 15
    labels = f'flow="sweep_tcp",source="endpoint_server",network="{slash20.network}",check="tcp"'
    values = {
        match.group(1): float(match.group(2))
        for match in re.finditer(r"^(certero_flow_network_\S+) (\S+)$", body, re.MULTILINE)
    }
    assert values[f'certero_flow_network_hosts{{{labels},result="ok"}}'] == slash20.expected_ok
    assert values[f"certero_flow_network_hosts_absent{{{labels}}}"] == 256
    assert values[f"certero_flow_network_hosts_filtered{{{labels}}}"] == 128
    assert values[f"certero_flow_network_sweep_duration_seconds{{{labels}}}"] < SWEEP_INTERVAL_S
    assert "certero_flow_up{" not in body  # no per-host series without per_host
    assert page.count(f"<td>{slash20.network}</td>") == 1
    assert "1 swept networks, 0 not checked yet" in page


def test_two_shards_cover_every_host_exactly_once(slash20: SweptNetwork, tmp_path: Path) -> None:
    """`check --shard 0/2` and `--shard 1/2`: counts add up to the whole /20, and every host
    that accepts was dialled by exactly one of them."""
    path = tmp_path / "config.yaml"
    path.write_text(sweep_config(slash20), encoding="utf-8")
    before = slash20.connections()
    documents = []
    for shard in ("0/2", "1/2"):
        run = run_cli(
            "check",
            "--config",
            str(path),
            "--format",
            "json",
            "--shard",
            shard,
            "--details",
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        documents.append(json.loads(run.stdout))
    networks = [document["networks"][0] for document in documents]
    assert [network["shard"] for network in networks] == ["0/2", "1/2"]
    assert all(0 < network["hosts_probed"] < 4094 for network in networks)
    assert sum(network["hosts_probed"] for network in networks) == 4094
    for result, count in expected_counts(slash20).items():
        assert sum(network["hosts"][result] for network in networks) == count, result
    assert sum(network["hosts_absent"] for network in networks) == 256
    dialled = slash20.connections() - before
    accepting = {
        str(address)
        for address in slash20.network.hosts()
        if not any(
            address in block for block in (slash20.absent, slash20.filtered, slash20.refused)
        )
    }
    assert set(dialled) == accepting
    assert set(dialled.values()) == {1}
    assert all(len(network["worst_hosts"]) == 20 for network in networks)
