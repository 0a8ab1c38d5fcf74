"""Scale-out, proven with a real Prometheus on loopback.

* `/probe` sharded across two exporter replicas by `hashmod` relabelling: the scrape jobs are
  the shipped ones (`config/prometheus-scrape.yml`, and the scrape configs the Prometheus
  Operator derives from `config/prometheus-operator-*.yaml`) with only their addresses
  replaced; each replica's access log and a listener behind every target show that every
  target was probed, and by exactly one replica — the one Prometheus' hash assigns.
* One exporter per vantage point: two exporters that share one target inventory but stand on
  different `source`s run only the flows that start from where they stand.

Targets are 127.0.0.N addresses of one listener bound to 0.0.0.0, so the listener learns from
each connection's local address which target was connected to.
"""

from __future__ import annotations

import copy
import hashlib
import re
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.operator_resources import RELABEL_ACTIONS, problems, scrape_config
from tests.peers.exporter import RunningExporter, run_cli, run_exporter
from tests.peers.prometheus import Prometheus, run_prometheus
from tests.peers.recording_listener import run_recording_listener

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
SCRAPE_EXAMPLE = CONFIG_DIR / "prometheus-scrape.yml"
PROBE_RESOURCES = CONFIG_DIR / "prometheus-operator-probe.yaml"
SCRAPECONFIG_RESOURCES = CONFIG_DIR / "prometheus-operator-scrapeconfig.yaml"
REPLICAS = 2
TARGETS_PER_REPLICA = 10
POLL_DEADLINE_S = 60.0
POLL_INTERVAL_S = 0.2

# The replicas run one config: /probe with the `tcp` module may reach any loopback address.
REPLICA_CONFIG = """\
source: endpoint_server
probe:
  modules:
    tcp: {allow: ["127.0.0.0/8"]}
"""


def prometheus_hashmod(value: str, modulus: int) -> int:
    """Prometheus' `hashmod` relabel action (model/relabel/relabel.go): the MD5 of the joined
    source label values, its last 8 bytes read big-endian, modulo `modulus`."""
    digest = hashlib.md5(value.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[8:], "big") % modulus


def balanced_targets(port: int) -> dict[int, list[str]]:
    """`TARGETS_PER_REPLICA` loopback targets for each residue of the hash, in address order.

    Chosen with Prometheus' hash so both replicas get work whatever port the kernel gave the
    listener; Prometheus computes the split itself, and the test compares.
    """
    shards: dict[int, list[str]] = {residue: [] for residue in range(REPLICAS)}
    for last_octet in range(2, 255):
        target = f"127.0.0.{last_octet}:{port}"
        shard = shards[prometheus_hashmod(target, REPLICAS)]
        if len(shard) < TARGETS_PER_REPLICA:
            shard.append(target)
        if all(len(chosen) == TARGETS_PER_REPLICA for chosen in shards.values()):
            return shards
    raise AssertionError(f"127.0.0.2-254 hold too few targets for each residue: {shards}")


def kept_residue(job: dict[str, Any]) -> int:
    """The residue a probe job keeps: the regex of the `keep` rule on its `hashmod` label."""
    rules = job["relabel_configs"]
    (hashmod,) = [rule for rule in rules if rule.get("action") == "hashmod"]
    assert hashmod["modulus"] == REPLICAS, hashmod
    (keep,) = [
        rule
        for rule in rules
        if rule.get("action") == "keep" and rule.get("source_labels") == [hashmod["target_label"]]
    ]
    return int(keep["regex"])


def aimed(job: dict[str, Any], targets: list[str], address: str) -> dict[str, Any]:
    """`job` with its static targets replaced and its `__address__` rule pointing at `address`;
    its timing is left to run_prometheus (every second). Its relabelling is untouched."""
    job = copy.deepcopy(job)
    job["static_configs"] = [{"targets": targets}]
    (rule,) = [r for r in job.get("relabel_configs", []) if r.get("target_label") == "__address__"]
    rule["replacement"] = address
    for timing in ("scrape_interval", "scrape_timeout"):
        job.pop(timing, None)
    return job


def example_jobs() -> list[dict[str, Any]]:
    """The scrape jobs of config/prometheus-scrape.yml."""
    jobs: list[dict[str, Any]] = yaml.safe_load(SCRAPE_EXAMPLE.read_text())["scrape_configs"]
    return jobs


def resource_jobs(path: Path) -> list[dict[str, Any]]:
    """The scrape jobs the operator derives from the resources in `path`."""
    return [scrape_config(resource) for resource in yaml.safe_load_all(path.read_text())]


def probe_resource_jobs() -> list[dict[str, Any]]:
    """The scrape jobs of config/prometheus-operator-probe.yaml."""
    return resource_jobs(PROBE_RESOURCES)


def scrapeconfig_resource_jobs() -> list[dict[str, Any]]:
    """The scrape jobs of config/prometheus-operator-scrapeconfig.yaml."""
    return resource_jobs(SCRAPECONFIG_RESOURCES)


JOB_SOURCES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "prometheus-scrape.yml": example_jobs,
    "prometheus-operator-probe.yaml": probe_resource_jobs,
    "prometheus-operator-scrapeconfig.yaml": scrapeconfig_resource_jobs,
}


def probe_jobs(jobs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The /probe jobs of a config by the residue each keeps: exactly one per replica."""
    by_residue = {kept_residue(job): job for job in jobs if job.get("metrics_path") == "/probe"}
    assert sorted(by_residue) == list(range(REPLICAS)), by_residue
    return by_residue


def probed_targets(exporter: RunningExporter) -> set[str]:
    """Targets of the /probe requests the exporter answered 200, from its access log."""
    targets: set[str] = set()
    for line in exporter.log().splitlines():
        match = re.search(r'request="GET (/probe\?\S+) HTTP/1\.1" status=200 ', line)
        if match is not None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(match.group(1)).query)
            targets.update(query.get("target", []))
    return targets


def by_label(series: list[dict[str, Any]], *names: str) -> dict[tuple[str, ...], str]:
    """An instant query's values keyed by the values of the labels `names`."""
    return {tuple(s["metric"][name] for name in names): s["value"][1] for s in series}


def test_probe_sharded_by_hashmod_reaches_every_target_from_exactly_one_replica(
    tmp_path: Path,
) -> None:
    """The shipped /probe shard jobs (plain, Probe and ScrapeConfig forms), aimed at two
    replicas, probe each of 20 targets from one replica only: the replica of the target's hash
    residue; together they cover them all.

    All six jobs run in one Prometheus (each start costs about 5 s before the first scrape);
    a static label `shipped_in` names the file each job comes from, so their series differ.
    """
    config = _write(tmp_path / "replica.yaml", REPLICA_CONFIG)
    with (
        run_recording_listener() as listener,
        run_exporter(config, tmp_path, ["--log.access"]) as replica_0,
        run_exporter(config, tmp_path, ["--log.access"]) as replica_1,
    ):
        replicas = (replica_0, replica_1)
        shards = balanced_targets(listener.port)
        every = sorted(target for shard in shards.values() for target in shard)
        jobs: list[tuple[str, int, dict[str, Any]]] = []
        for shipped_in, jobs_of in JOB_SOURCES.items():
            for residue, job in probe_jobs(jobs_of()).items():
                address = replicas[residue].base_url.removeprefix("http://")
                aimed_job = aimed(job, every, address)
                aimed_job["static_configs"][0]["labels"] = {"shipped_in": shipped_in}
                jobs.append((shipped_in, residue, aimed_job))
        expected = {(shipped_in, target): "1" for shipped_in in JOB_SOURCES for target in every}
        with run_prometheus(tmp_path / "prometheus", [job for _, _, job in jobs]) as prometheus:
            deadline = time.monotonic() + POLL_DEADLINE_S
            while True:
                success = prometheus.api("query", query="probe_success")["result"]
                if by_label(success, "shipped_in", "instance") == expected:
                    break
                assert time.monotonic() < deadline, (success, prometheus.targets())
                time.sleep(POLL_INTERVAL_S)
            active = prometheus.targets()
            up = prometheus.api("query", query="count by (shipped_in, instance) (up == 1)")
            sources = prometheus.api("query", query="count by (source) (certero_flow_up)")
        # Replicas' side: each answered probes of its own residue's targets and of no other.
        for residue, replica in enumerate(replicas):
            assert probed_targets(replica) == set(shards[residue]), residue

    # Targets' side: every target address was connected to.
    hosts = {target.rsplit(":", 1)[0] for target in every}
    assert hosts <= set(listener.reached()), listener.reached()
    # Prometheus' side: each job's active targets are its residue, scraped from its replica...
    for shipped_in, residue, job in jobs:
        pool = [target for target in active if target["scrapePool"] == job["job_name"]]
        assert {target["labels"]["instance"] for target in pool} == set(shards[residue]), job
        assert all(t["scrapeUrl"].startswith(replicas[residue].base_url) for t in pool), pool
        assert all(t["labels"]["shipped_in"] == shipped_in for t in pool), pool
    # ...in each form, every one of the 20 instances is up in exactly one job.
    assert by_label(up["result"], "shipped_in", "instance") == expected
    # The probes' own series carry the replicas' vantage point.
    assert by_label(sources["result"], "source") == {("endpoint_server",): str(len(expected))}


def test_the_two_probe_jobs_split_the_same_targets_by_hash() -> None:
    """In every shipped form the shard jobs list the same targets, keep residues 0 and 1 of one
    modulus and send them to two different replicas."""
    for source, jobs in JOB_SOURCES.items():
        by_residue = probe_jobs(jobs())
        targets = [job["static_configs"][0]["targets"] for job in by_residue.values()]
        assert all(listed == targets[0] for listed in targets), source
        replicas = {
            rule["replacement"]
            for job in by_residue.values()
            for rule in job["relabel_configs"]
            if rule.get("target_label") == "__address__" and "replacement" in rule
        }
        assert len(replicas) == REPLICAS, (source, replicas)


def test_shipped_scrape_config_passes_promtool(tmp_path: Path) -> None:
    """`promtool check config` accepts config/prometheus-scrape.yml as shipped."""
    checked = subprocess.run(
        ["promtool", "check", "config", str(SCRAPE_EXAMPLE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


@pytest.mark.parametrize("path", [PROBE_RESOURCES, SCRAPECONFIG_RESOURCES], ids=lambda p: p.name)
def test_operator_resources_use_only_their_crd_fields(path: Path) -> None:
    """Every Probe and ScrapeConfig shipped uses only fields of its CRD, with valid values."""
    resources = list(yaml.safe_load_all(path.read_text()))
    assert resources
    for resource in resources:
        assert problems(resource) == [], resource["metadata"]["name"]


def test_crd_field_check_reports_what_kubernetes_would_refuse() -> None:
    """The field check is not vacuous: a typo, a bad enum, a bad duration and a missing
    prober URL are each reported with their path."""
    (probe, _) = yaml.safe_load_all(PROBE_RESOURCES.read_text())
    spec = probe["spec"]
    spec["intervall"] = spec.pop("interval")
    spec["scrapeTimeout"] = "10 seconds"
    del spec["prober"]["url"]
    spec["targets"]["staticConfig"]["relabelingConfigs"][0]["action"] = "hash_mod"
    assert problems(probe) == [
        ".spec.scrapeTimeout: '10 seconds' does not match "
        r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
        ".spec.prober.url: required field missing",
        ".spec.targets.staticConfig.relabelingConfigs[0].action: 'hash_mod' is not one of "
        + ", ".join(RELABEL_ACTIONS),
        ".spec.intervall: not a field of the CRD (or not one listed here)",
    ]


@pytest.mark.parametrize("path", [PROBE_RESOURCES, SCRAPECONFIG_RESOURCES], ids=lambda p: p.name)
def test_operator_resources_derive_a_config_promtool_accepts(path: Path, tmp_path: Path) -> None:
    """The scrape config the operator writes for the resources passes `promtool check config`."""
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": resource_jobs(path)}))
    checked = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# One target inventory shared by every vantage point; each role at its own loopback address.
ROLE_HOSTS = {
    "domain_controllers": "127.0.0.2",  # ldap_dc, ldaps_dc, ldaps_gc: from endpoint_server
    "application_server": "127.0.0.3",  # https_app_relay (endpoint_server), https_web_ui (client)
    "database_server": "127.0.0.4",  # mssql_app_db, mssql_browser_app_db (application_server), mssql_reporting (client)
    "customer_centre": "127.0.0.5",  # https_customer_centre: from application_server
    "endpoint_server": "127.0.0.6",  # https_agent_upload: from client only
}
FLOWS_FROM = {
    "endpoint_server": {"ldap_dc", "ldaps_dc", "ldaps_gc", "https_app_relay"},
    "application_server": {"mssql_app_db", "mssql_browser_app_db", "https_customer_centre"},
}
CHECKS_FROM = {
    "endpoint_server": {"ldap", "ldaps", "https"},
    "application_server": {"mssql", "mssql_browser", "https"},
}


def vantage_config(source: str, port: int) -> str:
    """An exporter config standing on `source`: the shared inventory, checked every second."""
    targets = "".join(f'  {role}: ["{host}:{port}"]\n' for role, host in ROLE_HOSTS.items())
    return (
        f"source: {source}\n"
        "defaults: {interval: 1s, timeout: 1s}\n"
        "scheduler: {startup_spread: 100ms, jitter: 0}\n"
        f"targets:\n{targets}"
    )


def series_labels(prometheus: Prometheus, query: str) -> list[dict[str, str]]:
    """The label sets of an instant query's result."""
    return [series["metric"] for series in prometheus.api("query", query=query)["result"]]


def test_one_exporter_per_vantage_point_runs_only_its_own_flows(tmp_path: Path) -> None:
    """Two exporters with one inventory, on endpoint_server and application_server, scraped by
    the shipped /metrics job: each series carries its exporter's `source`, each exporter runs
    exactly the flows that start from its vantage point, and client flows run nowhere."""
    with run_recording_listener() as listener:
        exporters: dict[str, RunningExporter] = {}
        with (
            run_exporter(
                _write(tmp_path / "es.yaml", vantage_config("endpoint_server", listener.port)),
                tmp_path,
            ) as exporters["endpoint_server"],
            run_exporter(
                _write(tmp_path / "as.yaml", vantage_config("application_server", listener.port)),
                tmp_path,
            ) as exporters["application_server"],
        ):
            instance_of = {
                source: exporter.base_url.removeprefix("http://")
                for source, exporter in exporters.items()
            }
            (metrics_job,) = [job for job in example_jobs() if job["job_name"] == "certero-flow"]
            metrics_job = {
                **metrics_job,
                "static_configs": [{"targets": list(instance_of.values())}],
            }
            with run_prometheus(tmp_path / "prometheus", [metrics_job]) as prometheus:
                expected = {
                    (instance_of[source], source, flow)
                    for source, flows in FLOWS_FROM.items()
                    for flow in flows
                }
                deadline = time.monotonic() + POLL_DEADLINE_S
                while True:
                    stored = {
                        (labels["instance"], labels["source"], labels["flow"])
                        for labels in series_labels(
                            prometheus, "group by (instance, source, flow) (certero_flow_up)"
                        )
                    }
                    if stored == expected:
                        break
                    assert stored <= expected, stored - expected
                    assert time.monotonic() < deadline, (stored, prometheus.targets())
                    time.sleep(POLL_INTERVAL_S)
                ran = {
                    (labels["instance"], labels["check"])
                    for labels in series_labels(
                        prometheus,
                        "group by (instance, check) (certero_flow_exporter_checks_total)",
                    )
                }
            for source, exporter in exporters.items():
                # Each exporter's own counters: only the checks of its own flows ever ran.
                assert {check for instance, check in ran if instance == instance_of[source]} == (
                    CHECKS_FROM[source]
                )
                other = next(iter(FLOWS_FROM.keys() - {source}))
                refused = exporter.get(
                    f"/probe?module={min(FLOWS_FROM[other])}&target={ROLE_HOSTS['database_server']}:{listener.port}"
                )
                assert refused[0] == 400
                assert f"is measured from {other}; this exporter stands on {source}" in refused[1]
        # The targets' side: every role reached from its vantage point; the endpoint_server
        # role, the destination of client flows only, never.
        reached = set(listener.reached())
        assert reached == {ROLE_HOSTS[role] for role in ROLE_HOSTS} - {
            ROLE_HOSTS["endpoint_server"]
        }


def test_application_server_example_config_is_valid_and_runs_its_three_flows() -> None:
    """config/application-server.yaml, the second vantage point's example, validates cleanly:
    source application_server, its three flows' pairs, no warning."""
    run = run_cli("validate", str(CONFIG_DIR / "application-server.yaml"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("valid, source application_server, 3 (flow, target) pairs")
    assert run.stderr == ""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
