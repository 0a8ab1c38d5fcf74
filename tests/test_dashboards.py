"""The Grafana dashboards: the committed JSON is what the generator makes, it imports as is, and
every panel query runs in a real Prometheus scraping a real exporter and returns data.

Grafana cannot run here, so the test does what Grafana does with a query: substitutes the
variables (`$source`, `$flow`, `$target` as "All", i.e. `.*`; `$__rate_interval` and `$__range`
as durations) and sends it to Prometheus's query API, as an instant or a range query as the
panel asks. The exporter checks an HTTPS flow that passes (nginx, with its certificate), three
directory flows that fail (a closed port) and sweeps 127.0.0.0/29.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dashboards import generate
from exporter.result import Result
from tests.peers.exporter import run_exporter
from tests.peers.nginx import Nginx
from tests.peers.ports import free_tcp_port
from tests.peers.prometheus import Prometheus, run_prometheus

DASHBOARD_DIR = Path(generate.__file__).resolve().parent
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's "All" for the flow variables, and durations for its interval variables (the test
# Prometheus scrapes every second, so 30 s holds many samples).
SUBSTITUTIONS = {
    "source": ".*",
    "flow": ".*",
    "target": ".*",
    "__rate_interval": "30s",
    "__interval": "5s",
    "__range": "5m",
}
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
LABEL_VALUES = re.compile(r"label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)", re.DOTALL)
# A histogram's or counter's samples carry a suffix its family name does not.
SAMPLE_SUFFIX = re.compile(r"_(bucket|sum|count|total)$")
RANGE_S = 60
READY_DEADLINE_S = 45.0
CHECK_INTERVAL = "2s"
# Enough samples for rate(), changes() and the histograms, and a repeated sweep.
READY_WHEN = (
    "min(count_over_time(certero_flow_up[1m])) >= 4",
    "min(count_over_time(certero_flow_network_hosts_probed[1m])) >= 4",
    "min(count_over_time(certero_flow_info[1m])) >= 4",
)


def committed() -> dict[str, str]:
    """The dashboards' JSON files in the repository, by name."""
    return {path.name: path.read_text(encoding="utf-8") for path in DASHBOARD_DIR.glob("*.json")}


def dashboards() -> list[dict[str, Any]]:
    """The committed dashboards, parsed."""
    return [json.loads(text) for _, text in sorted(committed().items())]


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data, also those inside collapsed rows."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def substitute(expr: str, chosen: Mapping[str, str] | None = None) -> str:
    """The query as Grafana sends it with the `chosen` values and every other variable on
    "All"; unknown variables fail."""
    values = {**SUBSTITUTIONS, **(chosen or {})}

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown variable ${name} in {expr}"
        return values[name]

    return VARIABLE.sub(value, expr)


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel, where it comes from and how Grafana runs it."""

    uid: str
    panel: str
    ref_id: str
    expr: str
    instant: bool

    @property
    def where(self) -> str:
        return f"{self.uid} / {self.panel!r} / {self.ref_id}"


def panel_queries() -> list[PanelQuery]:
    """Every target of every panel of every committed dashboard."""
    return [
        PanelQuery(
            dashboard["uid"],
            panel["title"],
            target["refId"],
            target["expr"],
            bool(target.get("instant")),
        )
        for dashboard in dashboards()
        for panel in panels(dashboard)
        for target in panel["targets"]
    ]


def ask(prometheus: Prometheus, path: str, **params: str) -> tuple[list[Any] | None, str]:
    """Run a query; (result, "") or (None, Prometheus's error) when it does not parse or run."""
    url = f"{prometheus.base_url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            document = json.load(reply)
    except urllib.error.HTTPError as error:
        document = json.loads(error.read() or b"{}")
    if document.get("status") != "success":
        return None, f"{document.get('errorType')}: {document.get('error')}"
    result: list[Any] = document["data"]["result"]
    return result, ""


def run(prometheus: Prometheus, expr: str, *, instant: bool) -> tuple[list[Any] | None, str]:
    """An instant query now, or a range query over the last minute at 1 s steps."""
    if instant:
        return ask(prometheus, "query", query=expr)
    end = time.time()
    return ask(
        prometheus, "query_range", query=expr, start=str(end - RANGE_S), end=str(end), step="1"
    )


def write_config(path: Path, nginx: Nginx, closed_port: int) -> None:
    """An HTTPS flow that passes, directory flows that fail, a swept loopback network."""
    path.write_text(
        f"""
source: endpoint_server
defaults: {{interval: {CHECK_INTERVAL}, timeout: 2s}}
scheduler: {{startup_spread: 100ms}}
targets:
  application_server: ["localhost:{nginx.valid_port}"]
  domain_controllers: ["127.0.0.1:{closed_port}"]
flows:
  https_app_relay: {{ca_file: {nginx.pki.ca_cert}, path: /health}}
extra_flows:
  - {{id: loopback_sweep, check: tcp, port: {nginx.http_port}, sweep: true, presence: none,
     interval: {CHECK_INTERVAL}, timeout: 1s, targets: [127.0.0.0/29]}}
""",
        encoding="utf-8",
    )


@dataclass(frozen=True)
class Live:
    """The running Prometheus, and the metric families the exporter it scrapes declares
    (without the suffix `_total` that some TYPE lines carry)."""

    prometheus: Prometheus
    families: frozenset[str]


@pytest.fixture(scope="module")
def live(nginx: Nginx, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Prometheus scraping the exporter every second, once it holds several scrapes of data."""
    directory = tmp_path_factory.mktemp("dashboards")
    config = directory / "config.yaml"
    write_config(config, nginx, free_tcp_port())
    with run_exporter(config, directory) as exporter:
        address = exporter.base_url.removeprefix("http://")
        scrape = [{"job_name": "certero-flows", "static_configs": [{"targets": [address]}]}]
        with run_prometheus(directory / "prometheus", scrape) as server:
            deadline = time.monotonic() + READY_DEADLINE_S
            waiting = list(READY_WHEN)
            while waiting:
                result, error = run(server, waiting[0], instant=True)
                assert not error, error
                if result:
                    waiting.pop(0)
                    continue
                assert time.monotonic() < deadline, (
                    f"never true: {waiting[0]}\n{server.targets()}\n{exporter.log()[-3000:]}"
                )
                time.sleep(0.25)
            status, text = exporter.get("/metrics")
            assert status == 200
            declared = re.findall(r"^# TYPE (\w+) ", text, re.MULTILINE)
            yield Live(server, frozenset(SAMPLE_SUFFIX.sub("", name) for name in declared))


def test_committed_dashboards_are_what_the_generator_makes(tmp_path: Path) -> None:
    """Regenerating into a fresh directory gives exactly the committed files, byte for byte."""
    generate.write(tmp_path)
    fresh = {path.name: path.read_text(encoding="utf-8") for path in tmp_path.glob("*.json")}
    stale = sorted(
        name
        for name in fresh.keys() | committed().keys()
        if fresh.get(name) != committed().get(name)
    )
    assert not stale, f"run `python -m dashboards.generate`: {stale} differ from the generator"
    assert len(fresh) == 4


def test_dashboards_import_as_they_are() -> None:
    """Stable unique uids, no instance id, the datasource and flow variables, every panel and
    query on the `datasource` variable, panels inside the 24-column grid with unique ids."""
    uids = set()
    for dashboard in dashboards():
        assert dashboard.get("id") is None
        assert dashboard["uid"] not in uids
        uids.add(dashboard["uid"])
        variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
        assert list(variables) == ["datasource", "source", "flow", "target"]
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for name in ("source", "flow", "target"):
            assert variables[name]["type"] == "query"
            assert variables[name]["datasource"] == DATASOURCE
            assert variables[name]["includeAll"]
            assert variables[name]["allValue"] == ".*"
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in panels(dashboard):
            assert panel["datasource"] == DATASOURCE, panel["title"]
            assert panel["targets"], panel["title"]
            assert all(target["datasource"] == DATASOURCE for target in panel["targets"])
            grid = panel["gridPos"]
            assert grid["x"] >= 0, panel["title"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
    assert len(uids) == 4


def test_marks_of_queries_that_may_be_empty_name_real_queries() -> None:
    """Every query the generator allows to be empty exists in the committed JSON."""
    existing = {(query.uid, query.panel, query.ref_id) for query in panel_queries()}
    marked = {
        (board.uid, title, ref_id)
        for board in generate.boards()
        for title, ref_id in board.may_be_empty
    }
    assert marked
    assert marked <= existing, marked - existing


def test_every_panel_query_runs_and_returns_data(live: Live) -> None:
    """Each panel query parses and, unless marked as allowed to be empty, returns data."""
    prometheus = live.prometheus
    allowed_empty = {
        (board.uid, title, ref_id): why
        for board in generate.boards()
        for (title, ref_id), why in board.may_be_empty.items()
    }
    queries = panel_queries()
    assert len(queries) > 30
    failures = []
    for query in queries:
        result, error = run(prometheus, substitute(query.expr), instant=query.instant)
        if error:
            failures.append(f"{query.where}: {error}\n{query.expr}")
        elif not result and (query.uid, query.panel, query.ref_id) not in allowed_empty:
            failures.append(f"{query.where}: no data\n{query.expr}")
    assert not failures, "\n\n".join(failures)


def test_every_metric_a_dashboard_names_is_one_the_exporter_declares(live: Live) -> None:
    """Queries allowed to be empty, too, name only families the exporter's /metrics declares."""
    named = {
        SAMPLE_SUFFIX.sub("", name)
        for query in panel_queries()
        for name in re.findall(r"\bcertero_flow_\w+", query.expr)
    }
    assert named
    assert named <= live.families, sorted(named - live.families)


def test_flow_detail_of_one_chosen_flow_and_target_has_data(live: Live, nginx: Nginx) -> None:
    """With the HTTPS flow and its target chosen (Grafana then sends the values themselves),
    every Flow detail query still returns data: the variables select, not just match all."""
    chosen = {
        "source": "endpoint_server",
        "flow": "https_app_relay",
        "target": f"localhost:{nginx.valid_port}",
    }
    queries = [q for q in panel_queries() if q.uid == generate.FLOW_DETAIL_UID]
    assert len(queries) > 8
    for query in queries:
        result, error = run(live.prometheus, substitute(query.expr, chosen), instant=query.instant)
        assert not error, f"{query.where}: {error}"
        assert result, f"{query.where}: no data for {chosen}"
        flows = {series["metric"].get("flow", "https_app_relay") for series in result}
        assert flows == {"https_app_relay"}, f"{query.where}: {flows}"


def test_every_variable_query_finds_values(live: Live) -> None:
    """`label_values(selector, label)` of each variable finds at least one value."""
    prometheus = live.prometheus
    checked = 0
    for dashboard in dashboards():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = LABEL_VALUES.fullmatch(variable["query"])
            assert match, variable["query"]
            expr = f"group by ({match['label']}) ({substitute(match['selector'])})"
            result, error = run(prometheus, expr, instant=True)
            assert not error, f"{dashboard['uid']} ${variable['name']}: {error}"
            assert result, f"{dashboard['uid']} ${variable['name']}: no values from {expr}"
            checked += 1
    assert checked == 12


def test_the_failing_flows_table_names_the_class_and_what_to_do(live: Live) -> None:
    """Flows failing now: the closed directory port is `refused`, with the remediation for
    `refused`, the rule tcp/389 and the port table's reason; the passing HTTPS flow is absent."""
    (query,) = [q for q in panel_queries() if q.panel == "Flows failing now"]
    result, error = run(live.prometheus, substitute(query.expr), instant=True)
    assert not error, error
    assert result
    rows = {row["metric"]["flow"]: row["metric"] for row in result}
    assert set(rows) == {"ldap_dc", "ldaps_dc", "ldaps_gc"}
    ldap = rows["ldap_dc"]
    assert ldap["result"] == "refused"
    assert ldap["remediation"] == generate.REMEDIATION[Result.REFUSED]
    assert ldap["rule"] == "tcp/389"
    assert (ldap["from"], ldap["to"]) == ("endpoint_server", "domain_controllers")
    assert "Active Directory" in ldap["reason"]


def test_the_matrix_shows_the_worst_class_per_source_and_role(live: Live) -> None:
    """The port-table matrix: application_server ok (rank 0), domain_controllers refused."""
    (query,) = [q for q in panel_queries() if q.panel.startswith("Worst result by source")]
    result, error = run(live.prometheus, substitute(query.expr), instant=True)
    assert not error, error
    assert result
    cells = {(row["metric"]["source"], row["metric"]["to"]): row["value"][1] for row in result}
    assert cells == {
        ("endpoint_server", "application_server"): str(generate.RESULT_RANK[Result.OK]),
        ("endpoint_server", "domain_controllers"): str(generate.RESULT_RANK[Result.REFUSED]),
    }
