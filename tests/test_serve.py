"""`serve` end to end: a real exporter process checking real peers, read the way Prometheus does."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.peers.exporter import RunningExporter, run_exporter
from tests.peers.nginx import Nginx
from tests.peers.ports import free_tcp_port
from tests.peers.sshd import Sshd

POLL_DEADLINE_S = 20.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def write_config(path: Path, sshd: Sshd, nginx: Nginx, closed_port: int) -> None:
    """Several flows: SSH and HTTPS that work, and a closed port that does not."""
    path.write_text(
        f"""
source: endpoint_server
defaults: {{interval: 2s, timeout: 2s}}
targets:
  ibm_hmc: ["127.0.0.1:{sshd.port}"]
  application_server: ["localhost:{nginx.valid_port}"]
flows:
  https_app_relay:
    ca_file: {nginx.pki.ca_cert}
    path: /health
    body_regex: flow-ok
extra_flows:
  - {{id: proxy_reachable, check: tcp, target: "127.0.0.1:{closed_port}"}}
probe:
  allow: ["127.0.0.1"]  # bare check modules probe this host's loopback
""",
        encoding="utf-8",
    )


def samples(text: str) -> Samples:
    """Every sample of a scrape keyed by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    """The value of the one sample whose labels include `labels`."""
    matches = [v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls]
    assert len(matches) <= 1, f"{name} {labels} matched {len(matches)} samples"
    return matches[0] if matches else None


def poll_metrics(
    exporter: RunningExporter, ready: Callable[[Samples], bool]
) -> tuple[str, Samples]:
    """Scrape until `ready` holds (the first results arrive within the start-up spread)."""
    deadline = time.monotonic() + POLL_DEADLINE_S
    while True:
        status, text = exporter.get("/metrics")
        assert status == 200
        found = samples(text)
        if ready(found):
            return text, found
        assert time.monotonic() < deadline, f"metrics never became ready:\n{text[:3000]}"
        time.sleep(0.1)


@pytest.fixture
def config_path(tmp_path: Path, sshd: Sshd, nginx: Nginx) -> Path:
    path = tmp_path / "config.yaml"
    write_config(path, sshd, nginx, free_tcp_port())
    return path


@pytest.fixture
def exporter(config_path: Path, tmp_path: Path) -> Iterator[RunningExporter]:
    with run_exporter(config_path, tmp_path) as running:
        yield running


def all_three_checked(found: Samples) -> bool:
    flows = ("ssh_hmc", "https_app_relay", "proxy_reachable")
    return all(value(found, "certero_flow_up", flow=flow) is not None for flow in flows)


def test_metrics_show_results_of_every_flow(
    exporter: RunningExporter, sshd: Sshd, nginx: Nginx
) -> None:
    """/metrics carries up, result, durations, phases, peer info and TLS expiry per pair."""
    _, found = poll_metrics(exporter, all_three_checked)
    ssh = {
        "flow": "ssh_hmc",
        "source": "endpoint_server",
        "target": f"127.0.0.1:{sshd.port}",
        "check": "ssh",
    }
    assert value(found, "certero_flow_up", **ssh) == 1
    assert value(found, "certero_flow_result", **ssh, result="ok") == 1
    assert value(found, "certero_flow_result", **ssh, result="refused") == 0
    assert value(found, "certero_flow_peer_info", **ssh, product="OpenSSH") == 1
    assert (value(found, "certero_flow_duration_seconds", **ssh) or 0) > 0
    assert value(found, "certero_flow_phase_duration_seconds", **ssh, phase="connect") is not None
    assert value(found, "certero_flow_phase_duration_seconds", **ssh, phase="handshake") is not None
    # the flow's latency histogram, across its targets; no per-pair histogram by default
    flow = {"flow": "ssh_hmc", "source": "endpoint_server", "check": "ssh"}
    assert (value(found, "certero_flow_latency_seconds_count", **flow) or 0) >= 1
    assert value(found, "certero_flow_check_duration_seconds_count", **ssh) is None
    info = value(
        found, "certero_flow_info", flow="ssh_hmc", source="endpoint_server", severity="warning"
    )
    assert info == 1
    assert value(found, "certero_flow_interval_seconds", flow="ssh_hmc") is not None
    assert (
        value(found, "certero_flow_last_check_timestamp_seconds", **ssh) or 0
    ) > time.time() - 60

    https = {"flow": "https_app_relay", "target": f"localhost:{nginx.valid_port}", "check": "https"}
    assert value(found, "certero_flow_up", **https) == 1
    expiry = value(found, "certero_flow_tls_cert_expiry_timestamp_seconds", **https)
    assert expiry == nginx.pki.valid.not_after.timestamp()
    assert value(found, "certero_flow_peer_info", **https, product="nginx") == 1
    assert value(found, "certero_flow_phase_duration_seconds", **https, phase="tls") is not None

    closed = {"flow": "proxy_reachable", "check": "tcp"}
    assert value(found, "certero_flow_up", **closed) == 0
    assert value(found, "certero_flow_result", **closed, result="refused") == 1
    results = [
        v
        for (n, ls), v in found.items()
        if n == "certero_flow_result" and ("flow", "proxy_reachable") in ls
    ]
    assert sorted(results) == [0.0] * 9 + [1.0]

    assert value(found, "certero_flow_catalogue_info", flow="mssql_bigfix", to="bigfix_sql") == 1
    assert value(found, "certero_flow_exporter_scheduled_pairs") == 3
    assert value(found, "certero_flow_exporter_config_last_reload_successful") == 1
    assert (value(found, "certero_flow_exporter_checks_total", check="ssh", result="ok") or 0) >= 1


def test_metrics_pass_promtool(exporter: RunningExporter) -> None:
    """The whole scrape passes `promtool check metrics` (Prometheus's own linter)."""
    text, _ = poll_metrics(exporter, all_three_checked)
    assert (
        "# HELP certero_flow_up 1 if the flow is open and answered by the right service. Cached"
        in text
    )
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_gzip_scrape_is_the_same_text(exporter: RunningExporter) -> None:
    """With Accept-Encoding: gzip (as Prometheus sends) the body is gzip of the same families."""
    text, _ = poll_metrics(exporter, all_three_checked)
    request = urllib.request.Request(
        exporter.base_url + "/metrics", headers={"Accept-Encoding": "gzip"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        unzipped = gzip.decompress(response.read()).decode()
    names = {family.name for family in text_string_to_metric_families(unzipped)}
    assert names == {family.name for family in text_string_to_metric_families(text)}
    assert "certero_flow_up" in names


def test_probe_answers_in_blackbox_shape(
    exporter: RunningExporter, sshd: Sshd, nginx: Nginx
) -> None:
    """/probe gives probe_success 1 for a good target and 0 for a closed port."""
    status, text = exporter.get(f"/probe?module=ssh_hmc&target=127.0.0.1:{sshd.port}")
    assert status == 200
    assert "Cached" not in text  # a probe's values are fresh, unlike /metrics
    found = samples(text)
    assert value(found, "probe_success") == 1
    assert (value(found, "probe_duration_seconds") or 0) > 0
    assert value(found, "certero_flow_up", flow="ssh_hmc", check="ssh") == 1

    status, text = exporter.get(f"/probe?module=tcp&target=127.0.0.1:{free_tcp_port()}")
    assert status == 200
    found = samples(text)
    assert value(found, "probe_success") == 0
    assert value(found, "certero_flow_result", result="refused") == 1

    status, text = exporter.get(
        f"/probe?module=https_app_relay&target=localhost:{nginx.valid_port}"
    )
    found = samples(text)
    assert value(found, "probe_success") == 1
    assert value(found, "probe_ssl_earliest_cert_expiry") == nginx.pki.valid.not_after.timestamp()


def test_probe_debug_and_bad_requests(exporter: RunningExporter, sshd: Sshd) -> None:
    """debug=true returns the check's log, ending with the remediation when the probe failed;
    missing or unknown parameters are a 400."""
    status, text = exporter.get(f"/probe?module=ssh&target=127.0.0.1:{sshd.port}&debug=true")
    assert status == 200
    assert "Logs for the probe:" in text
    assert "connected" in text
    assert "probe_success 1" in text
    assert "remediation:" not in text
    closed = free_tcp_port()
    status, text = exporter.get(f"/probe?module=tcp&target=127.0.0.1:{closed}&debug=true")
    assert status == 200
    assert (
        f"\nremediation: tcp: the Endpoint Server cannot reach the service at 127.0.0.1 "
        f"(TCP {closed}): the connection is refused"
    ) in text
    assert f"must allow TCP {closed} from the Endpoint Server to the destination" in text
    assert exporter.get("/probe?module=ssh")[0] == 400
    assert exporter.get("/probe?module=nope&target=127.0.0.1:22")[0] == 400
    assert exporter.get("/probe?module=tcp&target=127.0.0.1")[0] == 400


def test_probe_deadline_follows_the_scrape_timeout_header(exporter: RunningExporter) -> None:
    """X-Prometheus-Scrape-Timeout-Seconds bounds the probe (minus an offset)."""
    status, text = exporter.get(
        f"/probe?module=tcp&target=127.0.0.1:{free_tcp_port()}",
        headers={"X-Prometheus-Scrape-Timeout-Seconds": "bogus"},
    )
    assert status == 400
    assert "Scrape-Timeout" in text


def test_landing_page_shows_the_flow_matrix(exporter: RunningExporter) -> None:
    """The landing page lists each pair with result, latency and the last error."""
    poll_metrics(exporter, all_three_checked)
    status, page = exporter.get("/")
    assert status == 200
    assert "ssh_hmc" in page
    assert "endpoint_server → ibm_hmc" in page
    assert "connection refused" in page
    assert exporter.get("/-/healthy") == (200, "Healthy\n")


def test_bad_reload_keeps_the_running_config(exporter: RunningExporter, config_path: Path) -> None:
    """POST /-/reload with a broken file answers 500 with the located error and keeps serving."""
    poll_metrics(exporter, all_three_checked)
    good = config_path.read_text(encoding="utf-8")
    config_path.write_text(good.replace("defaults:", "defaultz:"), encoding="utf-8")
    status, body = exporter.post("/-/reload")
    assert status == 500
    assert f"{config_path}:3: defaultz: unknown field" in body
    _, found = poll_metrics(exporter, all_three_checked)
    assert value(found, "certero_flow_exporter_config_last_reload_successful") == 0
    assert value(found, "certero_flow_up", flow="ssh_hmc") == 1


def test_reload_applies_a_good_config(exporter: RunningExporter, config_path: Path) -> None:
    """A valid new config is applied by POST /-/reload: removed flows disappear."""
    poll_metrics(exporter, all_three_checked)
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(text.split("extra_flows:")[0], encoding="utf-8")
    assert exporter.post("/-/reload") == (200, "Reloaded\n")
    _, found = poll_metrics(
        exporter, lambda f: value(f, "certero_flow_up", flow="proxy_reachable") is None
    )
    assert value(found, "certero_flow_exporter_scheduled_pairs") == 2
    assert value(found, "certero_flow_exporter_config_last_reload_successful") == 1


def test_sighup_reloads(exporter: RunningExporter, config_path: Path) -> None:
    """SIGHUP reloads the config file like POST /-/reload."""
    poll_metrics(exporter, all_three_checked)
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(text.split("extra_flows:")[0], encoding="utf-8")
    os.kill(exporter.process.pid, signal.SIGHUP)
    _, found = poll_metrics(
        exporter, lambda f: value(f, "certero_flow_exporter_scheduled_pairs") == 2
    )
    assert value(found, "certero_flow_up", flow="proxy_reachable") is None


def test_default_config_serves_real_results(tmp_path: Path) -> None:
    """With no config the exporter checks this host's loopback and reports real results."""
    with run_exporter(None, tmp_path) as running:
        _, found = poll_metrics(
            running, lambda f: value(f, "certero_flow_up", flow="icmp_endpoints") is not None
        )
        assert value(found, "certero_flow_up", flow="icmp_endpoints", target="127.0.0.1") == 1
        assert (value(found, "certero_flow_exporter_scheduled_pairs") or 0) >= 18
