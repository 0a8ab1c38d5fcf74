"""The shipped alert rules and Alertmanager config, checked by Prometheus's and Alertmanager's own
tools: promtool (check, unit tests of every alert), amtool (config, routes), and a real
Alertmanager for grouping and inhibition."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts import generate
from exporter import collector
from exporter.catalogue import FLOWS
from tests.peers.alertmanager import Alertmanager, run_alertmanager
from tests.peers.ports import free_tcp_port

ROOT = Path(__file__).resolve().parent.parent
RULE_TESTS = sorted((ROOT / "alerts" / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = ROOT / "config" / "alertmanager.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
SECTIONS = ("Meaning", "Impact", "Diagnosis", "Mitigation")
WAIT_S = 10.0


def run_tool(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run promtool or amtool; its output explains a failure."""
    return subprocess.run(
        list(argv), cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )


def shipped_rules() -> list[dict[str, Any]]:
    """Every rule of the committed rule file."""
    document = yaml.safe_load(generate.RULE_FILE.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def alert_names() -> set[str]:
    """The distinct alert names of the committed rule file."""
    return {rule["alert"] for rule in shipped_rules() if "alert" in rule}


def test_committed_rule_file_is_generated_from_the_settings() -> None:
    """The committed rule file is exactly what the generator writes with its defaults."""
    assert generate.RULE_FILE.read_text(encoding="utf-8") == generate.render(), (
        "alerts/certero-flow.rules.yml is stale: run `python -m alerts.generate`"
    )


def test_rules_read_only_series_the_collector_emits() -> None:
    """Every certero_flow_* name in a rule is a family of the collector (a histogram's
    `_bucket` series included); the recorded series the rules read are recorded by them."""
    families = {
        family.name: family.type
        for family in vars(collector).values()
        if isinstance(family, collector.Family)
    }
    recorded = {rule["record"] for rule in shipped_rules() if "record" in rule}
    for rule in shipped_rules():
        for name in re.findall(r"\b(certero_flow_[a-z_]+)\b(?![:(])", rule["expr"]):
            base = name.removesuffix("_bucket")
            assert base in families, name
            assert (name != base) == (families[base] == "histogram"), name
        for name in re.findall(r"\bcertero_flow:[a-z0-9_:]+", rule["expr"]):
            assert name in recorded, name


def test_exporter_job_is_the_shipped_scrape_job() -> None:
    """The rules' exporter job is the job config/prometheus-scrape.yml scrapes /metrics with."""
    scrape = yaml.safe_load((ROOT / "config" / "prometheus-scrape.yml").read_text("utf-8"))
    metrics_jobs = [
        job["job_name"]
        for job in scrape["scrape_configs"]
        if job.get("metrics_path", "/metrics") == "/metrics"
    ]
    assert metrics_jobs == [generate.Settings().exporter_job]


def test_promtool_check_rules() -> None:
    """promtool accepts the rule file (syntax, PromQL, templates, no duplicate rules)."""
    checked = run_tool("promtool", "check", "rules", str(generate.RULE_FILE))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=[path.name for path in RULE_TESTS])
def test_promtool_rule_unit_tests(test_file: Path) -> None:
    """promtool's unit tests pass: each alert fires after its window, resolves, stays silent."""
    tested = run_tool("promtool", "test", "rules", test_file.name, cwd=test_file.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    """Each alert has a promtool case where it fires and one where it must stay silent."""
    firing: set[str] = set()
    silent: set[str] = set()
    for test_file in RULE_TESTS:
        for case in yaml.safe_load(test_file.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert alert_names() - firing == set()
    assert alert_names() - silent == set()


def test_every_alert_is_complete() -> None:
    """Each alert has the CerteroFlow prefix, a severity, a summary, a description naming the
    flow's from -> to, and a runbook_url into its section of docs/runbooks.md."""
    runbook = RUNBOOKS.read_text(encoding="utf-8")
    headings = set(re.findall(r"^## (\S+)$", runbook, flags=re.MULTILINE))
    for rule in shipped_rules():
        if "alert" not in rule:
            continue
        name = rule["alert"]
        assert re.fullmatch(r"CerteroFlow[A-Z][A-Za-z]+", name)
        annotations = rule["annotations"]
        assert "{{" not in annotations["summary"], name
        assert annotations["runbook_url"] == f"docs/runbooks.md#{name.lower()}"
        assert name in headings
        if not name.startswith("CerteroFlowExporter"):
            assert "severity" in rule["expr"] or "severity" in rule.get("labels", {}), name
            assert "$labels.from }} → {{ $labels.to" in annotations["description"], name
        else:
            assert rule["labels"]["severity"] == "critical"


def test_runbook_sections_and_firewall_rules() -> None:
    """Each runbook has Meaning, Impact, Diagnosis, Mitigation; every catalogue flow has its
    firewall rule in the table."""
    runbook = RUNBOOKS.read_text(encoding="utf-8")
    for name in alert_names():
        section = runbook.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert [line[4:] for line in section.splitlines() if line.startswith("### ")] == list(
            SECTIONS
        ), name
    for flow in FLOWS:
        port = "" if flow.port_text == "-" else f" {flow.port_text}"
        row = (
            f"| `{flow.id}` | {flow.source.value} | {flow.destination.value} | "
            f"{flow.transport.value}{port} | allow {flow.transport.value}{port}"
        )
        assert row in runbook, flow.id


def test_settings_override_every_threshold(tmp_path: Path) -> None:
    """`--set` changes a threshold in the written rules, which promtool still accepts; an
    unknown setting is refused."""
    output = tmp_path / "rules.yml"
    assert (
        generate.main(
            ["--set", "flow_down_for=2s", "--set", "flap_changes=6", "--output", str(output)]
        )
        == 0
    )
    rules = {rule.get("alert"): rule for group in yaml.safe_load(output.read_text())["groups"]
             for rule in group["rules"]}  # fmt: skip
    assert rules["CerteroFlowDown"]["for"] == "2s"
    assert ">= 6" in rules["CerteroFlowFlapping"]["expr"]
    checked = run_tool("promtool", "check", "rules", str(output))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with pytest.raises(ValueError, match="unknown setting"):
        generate.parse_overrides(["flow_down_fro=1m"])


def test_amtool_check_config() -> None:
    """amtool accepts the example Alertmanager config."""
    checked = run_tool("amtool", "check-config", str(ALERTMANAGER_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr


ROUTES = [
    ({"alertname": "CerteroFlowDown", "severity": "critical", "flow": "mssql_app_db",
      "source": "application_server"}, "certero-pager"),
    ({"alertname": "CerteroFlowDown", "severity": "warning", "flow": "https_customer_centre",
      "source": "application_server"}, "certero-tickets"),
    ({"alertname": "CerteroFlowDown", "severity": "info", "flow": "proxy_reachable",
      "source": "endpoint_server"}, "certero-none"),
    ({"alertname": "CerteroFlowTLSCertificateExpiring", "severity": "critical"}, "certero-pager"),
    ({"alertname": "CerteroFlowLatencyAboveBaseline", "severity": "warning"}, "certero-tickets"),
    ({"alertname": "CerteroFlowExporterDown", "severity": "critical"}, "certero-pager"),
    ({"alertname": "CerteroFlowDown"}, "certero-tickets"),
    ({"alertname": "NodeDown", "severity": "critical"}, "default"),
]  # fmt: skip


@pytest.mark.parametrize(("labels", "receiver"), ROUTES)
def test_amtool_routes(labels: dict[str, str], receiver: str) -> None:
    """Flow alerts go by severity: critical pages, warning opens a ticket, info is dropped;
    other alerts stay on the default route."""
    tested = run_tool(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={receiver}",
        *(f"{name}={value}" for name, value in labels.items()),
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def local_alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The shipped config with every receiver's URL pointed at `webhook_url` on loopback."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = webhook_url
    return config


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    """A real Alertmanager with the shipped config; notifications go to a closed local port."""
    # Nothing listens there: a notification attempt fails on loopback, never leaves the host.
    config = local_alertmanager_config(f"http://127.0.0.1:{free_tcp_port()}/hook")
    with run_alertmanager(tmp_path_factory.mktemp("alertmanager"), config) as server:
        yield server


def flow_alert(alertname: str, **labels: str) -> dict[str, Any]:
    """An alert as Prometheus posts it, from exporter es1 unless labels say otherwise."""
    return {
        "labels": {
            "alertname": alertname,
            "job": "certero-flow",
            "instance": "es1:10163",
            **labels,
        },
        "annotations": {"summary": alertname},
    }


def wait_for(condition: Any, what: str) -> Any:
    """Poll `condition()` until it returns something true, within WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT_S} s: {what}")
        time.sleep(0.1)


def test_exporter_down_inhibits_its_flows(alertmanager: Alertmanager) -> None:
    """With CerteroFlowExporterDown firing for es1, es1's flow alerts are suppressed by it;
    another exporter's flow alert and the ExporterDown alert itself stay active."""
    alertmanager.post_alerts(
        [
            flow_alert("CerteroFlowExporterDown", severity="critical"),
            flow_alert("CerteroFlowDown", severity="critical", flow="ldap_dc",
                       source="endpoint_server", target="dc1:389"),
            flow_alert("CerteroFlowDown", severity="critical", flow="ldap_dc",
                       source="endpoint_server", target="dc1:389", instance="es2:10163"),
        ]
    )  # fmt: skip

    def states() -> dict[tuple[str, str], dict[str, Any]] | None:
        found = {
            (alert["labels"]["alertname"], alert["labels"]["instance"]): alert["status"]
            for alert in alertmanager.alerts()
            if alert["labels"].get("flow", "ldap_dc") == "ldap_dc"
        }
        inhibited = found.get(("CerteroFlowDown", "es1:10163"), {}).get("inhibitedBy")
        return found if len(found) == 3 and inhibited else None

    found = wait_for(states, "es1's flow alert inhibited")
    assert found[("CerteroFlowDown", "es1:10163")]["state"] == "suppressed"
    assert found[("CerteroFlowDown", "es2:10163")]["state"] == "active"
    assert found[("CerteroFlowExporterDown", "es1:10163")]["state"] == "active"


def test_critical_expiry_inhibits_its_warning(alertmanager: Alertmanager) -> None:
    """A certificate's critical expiry alert suppresses the warning of the same certificate,
    not the warning of another target's."""
    # es4: the ExporterDown alert of the test above (es1) must not be what suppresses these
    common = {"flow": "ldaps_dc", "source": "endpoint_server", "instance": "es4:10163"}
    alertmanager.post_alerts(
        [
            flow_alert("CerteroFlowTLSCertificateExpiring", severity="critical",
                       target="dc1:636", **common),
            flow_alert("CerteroFlowTLSCertificateExpiring", severity="warning",
                       target="dc1:636", **common),
            flow_alert("CerteroFlowTLSCertificateExpiring", severity="warning",
                       target="dc2:636", **common),
        ]
    )  # fmt: skip

    def states() -> dict[tuple[str, str], str] | None:
        found = {
            (alert["labels"]["target"], alert["labels"]["severity"]): alert["status"]["state"]
            for alert in alertmanager.alerts()
            if alert["labels"]["alertname"] == "CerteroFlowTLSCertificateExpiring"
        }
        return found if found.get(("dc1:636", "warning")) == "suppressed" else None

    found = wait_for(states, "dc1's warning suppressed")
    assert found == {
        ("dc1:636", "critical"): "active",
        ("dc1:636", "warning"): "suppressed",
        ("dc2:636", "warning"): "active",
    }


def test_flow_alerts_are_grouped_by_source_and_flow(alertmanager: Alertmanager) -> None:
    """Two failing targets of one flow make one group; another flow is another group."""
    alertmanager.post_alerts(
        [
            flow_alert("CerteroFlowDown", severity="warning", flow="smb_endpoints",
                       source="endpoint_server", target=f"pc{number}:445", instance="es3:10163")
            for number in (1, 2)
        ]
        + [
            flow_alert("CerteroFlowDown", severity="warning", flow="ssh_endpoints",
                       source="endpoint_server", target="pc1:22", instance="es3:10163")
        ]
    )  # fmt: skip

    def groups() -> dict[tuple[str, str], int] | None:
        with_receiver = alertmanager.groups()
        found = {
            (group["labels"].get("source", ""), group["labels"].get("flow", "")): len(
                group["alerts"]
            )
            for group in with_receiver
            if group["receiver"]["name"] == "certero-tickets"
        }
        wanted = {("endpoint_server", "smb_endpoints"), ("endpoint_server", "ssh_endpoints")}
        return found if wanted <= found.keys() else None

    found = wait_for(groups, "the two groups")
    assert found[("endpoint_server", "smb_endpoints")] == 2
    assert found[("endpoint_server", "ssh_endpoints")] == 1
    labels_of_groups = {
        tuple(sorted(group["labels"]))
        for group in alertmanager.groups()
        if group["receiver"]["name"] == "certero-tickets"
    }
    assert labels_of_groups == {("flow", "source")}
