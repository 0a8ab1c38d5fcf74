"""Overlapping targets: each (flow, target) pair is built, checked and counted once."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.config import parse_config
from exporter.errors import ConfigError
from tests.peers.exporter import run_cli, run_exporter

POLL_DEADLINE_S = 20.0


@pytest.fixture
def listener() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel completes them from the backlog)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


def overlapping_config(port: int) -> str:
    """One flow whose six written targets give three distinct pairs on `port`."""
    return (
        "defaults: {interval: 1h, timeout: 5s}\n"
        "scheduler: {startup_spread: 1ms}\n"
        "extra_flows:\n"
        f'  - {{id: overlap, check: tcp, port: {port}, targets: [127.0.0.1, "127.0.0.1:{port}", '
        "127.0.0.0/31, 127.0.0.0/30]}\n"
    )


def test_overlapping_targets_resolve_to_unique_job_keys() -> None:
    """A host with and without the flow's port, and overlapping networks, give each pair once."""
    config = parse_config(
        """
targets:
  ibm_hmc: [127.0.0.1, "127.0.0.1:22", 127.0.0.0/30, 127.0.0.2/31]
  endpoint_networks: [127.0.0.1]
flows:
  https_app_relay: {targets: [127.0.0.5]}
extra_flows:
  - {id: twice, check: tcp, port: 3128, targets: ["127.0.0.9:3128", 127.0.0.9]}
""",
        "inline.yaml",
    )
    keys = [job.key for job in config.jobs]
    assert len(keys) == len(set(keys)) == len(config.by_key)
    hmc = [str(job.target) for job in config.jobs if job.flow_id == "ssh_hmc"]
    assert hmc == ["127.0.0.1:22", "127.0.0.2:22", "127.0.0.3:22"]
    assert [str(job.target) for job in config.jobs if job.flow_id == "twice"] == ["127.0.0.9:3128"]
    # The same host in another flow is another pair, and a flow's own targets replace its role.
    assert ("ssh_endpoints", "127.0.0.1:22") in config.by_key
    assert [key for key in keys if key[0] == "https_app_relay"] == [
        ("https_app_relay", "127.0.0.5:443")
    ]
    dropped = [warning for warning in config.warnings if "duplicate" in warning]
    assert dropped == [
        "flow ssh_hmc: 3 duplicate (flow, target) pairs dropped, such as 127.0.0.1:22 (a target "
        "written twice, with and without the flow's port, or inside two networks); each pair is "
        "checked once",
        "flow twice: 1 duplicate (flow, target) pairs dropped, such as 127.0.0.9:3128 (a target "
        "written twice, with and without the flow's port, or inside two networks); each pair is "
        "checked once",
    ]


def test_max_pairs_counts_as_written_an_upper_bound_of_the_jobs() -> None:
    """scheduler.max_pairs counts duplicates before they are dropped, so it bounds the jobs."""
    text = 'scheduler: {{max_pairs: {}}}\ntargets: {{ibm_hmc: [127.0.0.1, "127.0.0.1:22"]}}\n'
    config = parse_config(text.format(2), "inline.yaml")
    assert [job.key for job in config.jobs] == [("ssh_hmc", "127.0.0.1:22")]
    with pytest.raises(ConfigError) as excinfo:
        parse_config(text.format(1), "inline.yaml")
    assert str(excinfo.value) == (
        "inline.yaml:1: flows.ssh_hmc: the config resolves to 2 (flow, target) pairs, more than "
        "scheduler.max_pairs (1); this flow crosses the limit (pairs are counted as written, "
        "before duplicate pairs are dropped)"
    )


def test_check_json_lists_a_duplicated_pair_once(tmp_path: Path, listener: int) -> None:
    """`check --format json` runs and reports each distinct pair once."""
    path = tmp_path / "config.yaml"
    path.write_text(overlapping_config(listener), encoding="utf-8")
    run = run_cli("check", "--config", str(path), "--format", "json", timeout=120)
    document = json.loads(run.stdout)
    targets = sorted(entry["target"] for entry in document["flows"])
    assert targets == [f"127.0.0.{i}:{listener}" for i in range(3)]
    assert document["summary"]["total"] == 3
    ok = [entry for entry in document["flows"] if entry["target"] == f"127.0.0.1:{listener}"]
    assert [entry["result"] for entry in ok] == ["ok"]


def test_landing_page_pending_count_reaches_zero(tmp_path: Path, listener: int) -> None:
    """With duplicates in the config, every pair gets a result: nothing stays "not checked"."""
    path = tmp_path / "config.yaml"
    path.write_text(overlapping_config(listener), encoding="utf-8")
    with run_exporter(path, tmp_path) as exporter:
        deadline = time.monotonic() + POLL_DEADLINE_S
        while True:
            status, page = exporter.get("/")
            assert status == 200
            counts = re.search(
                r"(\d+) \(flow, target\) pairs and\s+\d+ swept networks, (\d+) not checked yet",
                page,
            )
            assert counts is not None, page
            if counts.group(2) == "0":
                break
            assert time.monotonic() < deadline, f"still {counts.group(2)} not checked yet"
            time.sleep(0.05)
        log = exporter.log()
    assert counts.group(1) == "3"
    assert log.count("flow overlap: 3 duplicate (flow, target) pairs dropped") == 1, log
