"""The exporter's Grafana dashboards, generated as code with grafana-foundation-sdk.

Run `python -m dashboards.generate` after changing this module: it rewrites `dashboards/*.json`,
the files operators import. `tests/test_dashboards.py` fails when the committed JSON differs from
what this module generates, and runs every panel query against a real Prometheus scraping a real
exporter: each must parse and return data, except the queries built with `empty_when`, which say
when nothing is the normal answer.

Every dashboard reads the metric contract of the exporter: the pair series
(`certero_flow_result`, `certero_flow_up`, ... labelled flow, source, target, check), the flow data
`certero_flow_info` (joined on flow and source), the swept-network aggregates
`certero_flow_network_*` and the exporter's own `certero_flow_exporter_*`. Each dashboard has a
data source variable `datasource` (type prometheus) and the variables `source`, `flow` and
`target`, so one import serves every Prometheus and every vantage point.
"""

from __future__ import annotations

import argparse
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import heatmap, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import prometheus as prometheus_builders
from grafana_foundation_sdk.cog import builder as cog_builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

from exporter.result import Result

OUTPUT_DIR = Path(__file__).resolve().parent
TAG = "certero-flows"
DATASOURCE = dashboard_models.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Label matchers of the dashboard variables. Multi-value selections and "All" (`.*`) are
# regular expressions, so every matcher is `=~`.
FLOW_SELECTOR = 'source=~"$source", flow=~"$flow"'
PAIR_SELECTOR = f'{FLOW_SELECTOR}, target=~"$target"'
# Flow data joined onto pair series (the metric contract's join).
FLOW_LABELS = "severity, optional, reason, protocol, port, from, to"
INFO = f"certero_flow_info{{{FLOW_SELECTOR}}}"
# The flow data to join on: `group by` folds the identical series of exporters that serve the
# same source (replicas with `--shard`), which would otherwise make the join many-to-many.
FLOW_DATA = f"group by (flow, source, {FLOW_LABELS}) ({INFO})"
# The exporter's own series carry no `source`: keep those of exporters that serve the source.
OF_SELECTED_EXPORTERS = 'and on (job, instance) certero_flow_info{source=~"$source"}'

SECONDS_PER_DAY = 86_400
CERT_CRITICAL_DAYS = 3
CERT_WARNING_DAYS = 14

# How far along its path a flow failed, worst first: a flow that fails earlier has more of its
# path broken (a name that does not resolve; nothing reaches the port; TLS; the wrong service;
# the login; the service itself), and `exporter_error` says nothing about the flow. The matrix
# and the result timeline show the worst class of the pairs in a cell by this rank.
RESULT_RANK: Mapping[Result, int] = {
    Result.OK: 0,
    Result.EXPORTER_ERROR: 1,
    Result.SERVICE_ERROR: 2,
    Result.AUTH_FAILED: 3,
    Result.PROTOCOL_MISMATCH: 4,
    Result.TLS_ERROR: 5,
    Result.TIMEOUT: 6,
    Result.REFUSED: 7,
    Result.UNREACHABLE: 8,
    Result.DNS_ERROR: 9,
}
RESULT_COLOUR: Mapping[Result, str] = {
    Result.OK: "green",
    Result.EXPORTER_ERROR: "purple",
    Result.SERVICE_ERROR: "yellow",
    Result.AUTH_FAILED: "orange",
    Result.PROTOCOL_MISMATCH: "orange",
    Result.TLS_ERROR: "orange",
    Result.TIMEOUT: "red",
    Result.REFUSED: "red",
    Result.UNREACHABLE: "dark-red",
    Result.DNS_ERROR: "dark-red",
}
# What to do about a failing flow, per class, from the class alone: a check's detail text is
# not a label (it is unbounded), so the hint names the fix the class points at and the
# table beside it gives the rule (protocol/port), from → to and the port table's reason.
REMEDIATION: Mapping[Result, str] = {
    Result.DNS_ERROR: "The destination name does not resolve at the source: fix DNS there or "
    "configure the address.",
    Result.TIMEOUT: "Nothing answers: a firewall between source and destination drops the rule; "
    "open it for this flow.",
    Result.REFUSED: "The destination rejects the rule: start the service on that port, or "
    "remove the host firewall rule that rejects it.",
    Result.UNREACHABLE: "No route for the rule: a router or firewall answers unreachable; fix "
    "the route or the firewall rule.",
    Result.TLS_ERROR: "TLS fails: give the service a certificate the source trusts, in date and "
    "for the name the flow uses.",
    Result.PROTOCOL_MISMATCH: "Another service answers on the port: point the flow at the right "
    "service or port.",
    Result.AUTH_FAILED: "The service refuses the flow's account: fix the account, its password or "
    "its rights.",
    Result.SERVICE_ERROR: "The port is open but the service reports an error: fix the service.",
    Result.EXPORTER_ERROR: "The exporter could not run the check (see its log): the flow's state "
    "is unknown.",
}
if set(RESULT_RANK) != set(Result) or set(RESULT_COLOUR) != set(Result):
    raise RuntimeError("every result class needs a rank and a colour")
if set(REMEDIATION) != set(Result) - {Result.OK}:
    raise RuntimeError("every failing result class needs a remediation")


@dataclass(frozen=True)
class Query:
    """One panel query; `empty_when` (if set) says when returning nothing is normal."""

    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False
    heatmap: bool = False
    empty_when: str = ""

    def target(self, ref_id: str) -> prometheus_builders.Dataquery:
        """The Grafana target of this query."""
        built = (
            prometheus_builders.Dataquery()
            .ref_id(ref_id)
            .expr(self.expr)
            .datasource(DATASOURCE)
            .editor_mode(prometheus_models.QueryEditorMode.CODE)
        )
        if self.legend:
            built = built.legend_format(self.legend)
        built = built.instant() if self.instant else built.range()
        if self.table:
            built = built.format(prometheus_models.PromQueryFormat.TABLE)
        elif self.heatmap:
            built = built.format(prometheus_models.PromQueryFormat.HEATMAP)
        return built


# The panel kinds the dashboards use; each builder offers title, targets, size and so on.
PanelBuilder = TypeVar(
    "PanelBuilder", heatmap.Panel, stat.Panel, statetimeline.Panel, table.Panel, timeseries.Panel
)


@dataclass
class Board:
    """One dashboard being built, and which of its queries may return nothing."""

    uid: str
    title: str
    description: str
    builder: dashboard_builders.Dashboard = field(init=False)
    may_be_empty: dict[tuple[str, str], str] = field(default_factory=dict)
    _next_id: int = 1
    _titles: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.builder = (
            dashboard_builders.Dashboard(self.title)
            .uid(self.uid)
            .description(self.description)
            .tags([TAG])
            .editable()
            .time("now-6h", "now")
            .refresh("1m")
            .timezone("browser")
            .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
            .link(
                dashboard_builders.DashboardLink("Flow dashboards")
                .type(dashboard_models.DashboardLinkType.DASHBOARDS)
                .tags([TAG])
                .as_dropdown(True)
                .include_vars(True)
                .keep_time(True)
            )
        )
        for variable in variables():
            self.builder = self.builder.with_variable(variable)

    def row(self, title: str) -> None:
        """Start a row of panels."""
        self.builder = self.builder.with_row(dashboard_builders.Row(title).id(self._take_id()))

    def add(
        self,
        panel: PanelBuilder,
        title: str,
        description: str,
        queries: Sequence[Query],
        *,
        width: int = 12,
        height: int = 8,
    ) -> None:
        """Add a panel with its queries (refIds A, B, ...) on the dashboard's data source."""
        if title in self._titles:
            raise ValueError(f"{self.uid}: two panels titled {title!r}")
        self._titles.add(title)
        panel = (
            panel.id(self._take_id())
            .title(title)
            .description(description)
            .datasource(DATASOURCE)
            .span(width)
            .height(height)
        )
        for ref_id, query in zip(string.ascii_uppercase, queries, strict=False):
            panel = panel.with_target(query.target(ref_id))
            if query.empty_when:
                self.may_be_empty[(title, ref_id)] = query.empty_when
        self.builder = self.builder.with_panel(panel)

    def render(self) -> str:
        """The import-ready JSON text."""
        return JSONEncoder(sort_keys=True, indent=2).encode(self.builder.build()) + "\n"

    def _take_id(self) -> int:
        taken = self._next_id
        self._next_id += 1
        return taken


def variables() -> list[cog_builder.Builder[dashboard_models.VariableModel]]:
    """The data source, then source → flow → target, each narrowing the next."""
    everything = dashboard_models.VariableOption(text="All", value="$__all")

    def label_variable(name: str, label: str, query: str) -> dashboard_builders.QueryVariable:
        return (
            dashboard_builders.QueryVariable(name)
            .label(label)
            .query(query)
            .datasource(DATASOURCE)
            .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(everything)
        )

    return [
        dashboard_builders.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        label_variable("source", "Source", "label_values(certero_flow_info, source)"),
        label_variable("flow", "Flow", 'label_values(certero_flow_info{source=~"$source"}, flow)'),
        label_variable(
            "target", "Target", f"label_values(certero_flow_up{{{FLOW_SELECTOR}}}, target)"
        ),
    ]


def result_rank(grouping: str) -> str:
    """The rank of the worst result class (`RESULT_RANK`) of the pairs, per `grouping`.

    Exactly one `certero_flow_result` series of a pair is 1; each class's series is scaled to its
    rank and the classes are joined with `or` (their `result` labels differ, so none is lost).
    """
    terms = "\n  or ".join(
        f'(certero_flow_result{{result="{cls.value}", {PAIR_SELECTOR}}} == 1) * {rank}'
        for cls, rank in sorted(RESULT_RANK.items(), key=lambda item: item[1])
    )
    return f"max by ({grouping}) (\n  {terms}\n)"


def result_mappings() -> list[dashboard_models.ValueMapping]:
    """Rank → class name in the class's colour (see `result_rank`)."""
    return [
        dashboard_models.ValueMap(
            options={
                str(RESULT_RANK[cls]): dashboard_models.ValueMappingResult(
                    text=cls.value, color=RESULT_COLOUR[cls], index=RESULT_RANK[cls]
                )
                for cls in Result
            }
        )
    ]


FAILING_COLUMNS = (
    "severity",
    "flow",
    "source",
    "target",
    "result",
    "from",
    "to",
    "rule",
    "remediation",
    "reason",
    "optional",
)


def failing_with_remediation() -> str:
    """Failing pairs with the flow's data, `rule` (protocol/port) and a remediation per class."""
    joined = (
        f'(certero_flow_result{{result!="ok", {PAIR_SELECTOR}}} == 1)\n'
        f"  * on (flow, source) group_left ({FLOW_LABELS}) {FLOW_DATA}"
    )
    expr = f'label_join(\n  {joined},\n  "rule", "/", "protocol", "port"\n)'
    for cls, text in REMEDIATION.items():
        expr = f'label_replace(\n{expr},\n"remediation", "{text}", "result", "{cls.value}")'
    return expr


def threshold_steps(*steps: tuple[float | None, str]) -> dashboard_builders.ThresholdsConfig:
    """Absolute thresholds from (value, colour) steps; the first value is None (the base)."""
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
        .steps([dashboard_models.Threshold(value=value, color=colour) for value, colour in steps])
    )


def series_panel(unit: str, *, stacked: bool = False, bars: bool = False) -> timeseries.Panel:
    """A time series panel in `unit`, optionally stacked or drawn as bars."""
    panel = timeseries.Panel().unit(unit)
    if stacked:
        panel = panel.stacking(
            common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL)
        ).fill_opacity(40)
    if bars:
        panel = panel.draw_style(common_models.GraphDrawStyle.BARS).fill_opacity(70)
    return panel


def table_panel(
    *,
    hide: Sequence[str] = ("Time",),
    order: Sequence[str] = (),
    rename: Mapping[str, str] | None = None,
) -> table.Panel:
    """A table of instant results without the columns in `hide`, `order` first, renamed."""
    return table.Panel().with_transformation(
        dashboard_models.DataTransformerConfig(
            id_val="organize",
            options={
                "excludeByName": dict.fromkeys(hide, True),
                "indexByName": {name: index for index, name in enumerate(order)},
                "renameByName": dict(rename or {}),
            },
        )
    )


FLOW_DETAIL_UID = "certero-flows-detail"


def linked_to_flow_detail(panel: table.Panel) -> table.Panel:
    """Make each row's `flow` cell open the Flow detail of that flow and source."""
    url = (
        f"/d/{FLOW_DETAIL_UID}?${{datasource:queryparam}}&var-source=${{__data.fields.source}}"
        "&var-flow=${__data.fields.flow}&${__url_time_range}"
    )
    return panel.override_by_name(
        "flow",
        [
            dashboard_models.DynamicConfigValue(
                id_val="links", value=[{"title": "Flow detail", "url": url}]
            )
        ],
    )


def expiry_cells() -> table.Panel:
    """Seconds to a certificate's expiry, red within 3 days, orange within 14."""
    return (
        table_panel(hide=("Time", "job", "instance", "check"), rename={"Value": "expires in"})
        .unit("dtdurations")
        .thresholds(
            threshold_steps(
                (None, "red"),
                (CERT_CRITICAL_DAYS * SECONDS_PER_DAY, "orange"),
                (CERT_WARNING_DAYS * SECONDS_PER_DAY, "green"),
            )
        )
        .cell_options(common_models.TableColoredBackgroundCellOptions())
    )


def overview() -> Board:
    """The port table as a live matrix, what fails now and how to fix it, expiring certificates."""
    board = Board(
        "certero-flows-overview",
        "Certero flows / Overview",
        "Every flow of the port table from every vantage point: the worst result per source and "
        "destination role, the flows failing now with what to do, and the certificates that "
        "expire first.",
    )
    board.add(
        stat.Panel().thresholds(threshold_steps((None, "green"), (1, "red"))),
        "Pairs failing",
        "(flow, target) pairs whose last check failed.",
        [Query(f"count(certero_flow_up{{{PAIR_SELECTOR}}} == 0) or vector(0)", instant=True)],
        width=6,
        height=4,
    )
    board.add(
        stat.Panel().thresholds(threshold_steps((None, "green"), (1, "red"))),
        "Critical flows failing",
        "Failing pairs of flows whose severity is critical (the platform cannot run without them).",
        [
            Query(
                f"count((certero_flow_up{{{PAIR_SELECTOR}}} == 0)"
                " * on (flow, source) group_left () group by (flow, source) "
                f'(certero_flow_info{{{FLOW_SELECTOR}, severity="critical"}})) or vector(0)',
                instant=True,
            )
        ],
        width=6,
        height=4,
    )
    board.add(
        stat.Panel().thresholds(threshold_steps((None, "green"), (1, "orange"))),
        "Stale pairs",
        "Pairs not checked for three of their intervals: the exporter is behind or stopped.",
        [
            Query(
                f"count((time() - certero_flow_last_check_timestamp_seconds{{{PAIR_SELECTOR}}})"
                f" > on (flow, source) group_left ()"
                f" (3 * certero_flow_interval_seconds{{{FLOW_SELECTOR}}})) or vector(0)",
                instant=True,
            )
        ],
        width=6,
        height=4,
    )
    board.add(
        stat.Panel(),
        "Pairs checked",
        "(flow, target) pairs with a result, and swept networks.",
        [
            Query(f"count(certero_flow_up{{{PAIR_SELECTOR}}})", legend="pairs", instant=True),
            Query(
                f"count(certero_flow_network_hosts_probed{{{FLOW_SELECTOR}}})",
                legend="swept networks",
                instant=True,
            ),
        ],
        width=6,
        height=4,
    )
    board.row("Port table, live")
    board.add(
        table_panel()
        .with_transformation(
            dashboard_models.DataTransformerConfig(
                id_val="groupingToMatrix",
                options={"rowField": "source", "columnField": "to", "valueField": "Value"},
            )
        )
        .mappings(result_mappings())
        .cell_options(common_models.TableColoredBackgroundCellOptions()),
        "Worst result by source and destination role",
        "One row per vantage point, one column per destination role of the port table; each "
        "cell is the worst result class of the pairs there (a name that does not resolve is "
        "worst, then nothing reaching the port, TLS, the wrong service, the login, the service).",
        [
            Query(
                f"max by (source, to) (\n{result_rank('flow, source, target')}\n"
                f"  * on (flow, source) group_left (to) group by (flow, source, to) ({INFO}))",
                instant=True,
                table=True,
            )
        ],
        width=24,
        height=7,
    )
    board.add(
        linked_to_flow_detail(
            table_panel(
                hide=("Time", "Value", "__name__", "job", "instance", "check", "protocol", "port"),
                order=FAILING_COLUMNS,
            )
        )
        .cell_height(common_models.TableCellHeight.SM)
        .sort_by([common_builders.TableSortByFieldState().display_name("severity")]),
        "Flows failing now",
        "Each failing pair with its class, the flow's severity, the firewall rule "
        "(protocol/port) from → to, what to do about the class, and the port table's reason. "
        "A flow's name opens its Flow detail.",
        [Query(failing_with_remediation(), instant=True, table=True)],
        width=24,
        height=9,
    )
    board.add(
        linked_to_flow_detail(expiry_cells()),
        "Certificates expiring soonest",
        "The ten TLS pairs whose leaf or chain certificate expires first (a chain's "
        "intermediate may expire before its leaf).",
        [
            Query(
                "bottomk(10, min by (flow, source, target) ({__name__=~"
                '"certero_flow_tls_cert_expiry_timestamp_seconds'
                '|certero_flow_tls_chain_expiry_timestamp_seconds", '
                f"{PAIR_SELECTOR}}}) - time())",
                instant=True,
                table=True,
            )
        ],
        width=24,
        height=8,
    )
    return board


def flow_detail() -> Board:
    """One flow's results over time, where its time goes, its peer and certificates, changes."""
    board = Board(
        FLOW_DETAIL_UID,
        "Certero flows / Flow detail",
        "One flow (pick it above) over time: result class per target, latency by phase, the "
        "flow's latency distribution, what the peer said it is, certificate expiry and recent "
        "changes.",
    )
    board.row("Result")
    board.add(
        statetimeline.Panel()
        .mappings(result_mappings())
        .show_value(common_models.VisibilityMode.NEVER)
        .merge_values(True),
        "Result over time",
        "The result class of each pair at every check (colours as in the overview).",
        [Query(result_rank("flow, source, target"), legend="{{flow}} {{target}}")],
        width=24,
        height=9,
    )
    board.add(
        table_panel(hide=("Time", "Value", "__name__", "job", "instance")),
        "The flow",
        "The port table's row behind the flow: from → to, protocol and port, check, severity, "
        "whether it is optional, and the reason.",
        [Query(INFO, instant=True, table=True)],
    )
    board.add(
        table_panel(rename={"Value": "changes"}),
        "Result changes in the time range",
        "How often each pair changed result class in the dashboard's time range.",
        [
            Query(
                f"sum by (flow, source, target) (changes(certero_flow_result{{{PAIR_SELECTOR}}}"
                "[$__range])) / 2",
                instant=True,
                table=True,
            )
        ],
    )
    board.row("Latency")
    board.add(
        series_panel("s", stacked=True, bars=True),
        "Latency by phase",
        "Time spent in each phase of the last check (resolve, connect, proxy, tls, handshake, "
        "auth; a check reports the phases it has).",
        [
            Query(
                f"certero_flow_phase_duration_seconds{{{PAIR_SELECTOR}}}",
                legend="{{target}} {{phase}}",
            )
        ],
    )
    board.add(
        series_panel("s"),
        "Check duration and kernel RTT",
        "The last check's duration and the kernel's RTT estimate of its TCP connection, which "
        "no exporter queueing inflates.",
        [
            Query(f"certero_flow_duration_seconds{{{PAIR_SELECTOR}}}", legend="{{target}} check"),
            Query(
                f"certero_flow_tcp_rtt_seconds{{{PAIR_SELECTOR}}}",
                legend="{{target}} RTT",
            ),
        ],
    )
    board.add(
        heatmap.Panel()
        .calculate(False)
        .color(heatmap.HeatmapColorOptions().mode(heatmap_models.HeatmapColorMode.SCHEME))
        .y_axis(heatmap.YAxisConfig().unit("s")),
        "Latency distribution of the flow",
        "Check durations of all targets of the flow, from the per-flow histogram.",
        [
            Query(
                "sum by (le) (increase(certero_flow_latency_seconds_bucket"
                f"{{{FLOW_SELECTOR}}}[$__rate_interval]))",
                legend="{{le}}",
                heatmap=True,
            )
        ],
    )
    board.add(
        series_panel("s"),
        "Latency quantiles of the flow",
        "Median and 95th percentile of the flow's check durations, across its targets.",
        [
            Query(
                f"histogram_quantile({quantile}, sum by (flow, le) (rate("
                f"certero_flow_latency_seconds_bucket{{{FLOW_SELECTOR}}}[$__rate_interval])))",
                legend=f"{{{{flow}}}} p{round(quantile * 100)}",
            )
            for quantile in (0.5, 0.95)
        ],
    )
    board.row("Peer")
    board.add(
        table_panel(hide=("Time", "Value")),
        "Peer info",
        "What each peer said it is (SSH software, HTTP Server header, TLS version, ...).",
        [
            Query(
                "max by (flow, source, target, product, version) "
                f"(certero_flow_peer_info{{{PAIR_SELECTOR}}})",
                instant=True,
                table=True,
            )
        ],
    )
    board.add(
        expiry_cells(),
        "Certificate expiry",
        "Time left on each pair's leaf certificate and on the earliest certificate of the chain "
        "it presented, reported even when verification failed.",
        [
            Query(
                f"label_replace(certero_flow_tls_cert_expiry_timestamp_seconds{{{PAIR_SELECTOR}}}"
                ' - time(), "certificate", "leaf", "", "")\nor label_replace('
                f"certero_flow_tls_chain_expiry_timestamp_seconds{{{PAIR_SELECTOR}}} - time(),"
                ' "certificate", "chain", "", "")',
                instant=True,
                table=True,
            )
        ],
    )
    board.add(
        series_panel("x").thresholds(threshold_steps((None, "green"), (3, "red"))),
        "Last check age in intervals",
        "Time since each pair's last check, in intervals of its flow; above 3 the pair is stale.",
        [
            Query(
                f"(time() - certero_flow_last_check_timestamp_seconds{{{PAIR_SELECTOR}}})"
                f" / on (flow, source) group_left () certero_flow_interval_seconds"
                f"{{{FLOW_SELECTOR}}}",
                legend="{{flow}} {{target}}",
            )
        ],
        width=24,
    )
    return board


def endpoint_networks() -> Board:
    """Swept networks: hosts per class, coverage, how long a sweep takes."""
    network = "flow, source, network"
    board = Board(
        "certero-flows-networks",
        "Certero flows / Endpoint networks",
        "Networks swept by the Endpoint Server's flows: hosts per result class, which hosts are "
        "absent or filtered, and how long each sweep takes against its interval.",
    )
    board.add(
        series_panel("short", stacked=True),
        "Hosts per result class",
        "Hosts of each network per result class in the last completed sweep (classes with no "
        "host are left out).",
        [
            Query(
                f"sum by ({network}, result) (certero_flow_network_hosts{{{FLOW_SELECTOR}}}) > 0",
                legend="{{flow}} {{network}} {{result}}",
            )
        ],
        width=24,
        height=9,
    )
    board.add(
        table_panel()
        .with_transformation(dashboard_models.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            dashboard_models.DataTransformerConfig(
                id_val="organize",
                options={
                    "renameByName": {
                        "Value #A": "probed",
                        "Value #B": "absent (no host)",
                        "Value #C": "filtered (host up, no answer)",
                        "Value #D": "ok",
                    }
                },
            )
        ),
        "Coverage of the last sweep",
        "Per network: hosts probed; hosts that answered nothing at all (no host there); hosts "
        "that are up but whose check got no answer (port filtered); hosts whose check passed.",
        [
            Query(
                f"sum by ({network}) (certero_flow_network_{name}{{{FLOW_SELECTOR}{extra}}})",
                instant=True,
                table=True,
            )
            for name, extra in (
                ("hosts_probed", ""),
                ("hosts_absent", ""),
                ("hosts_filtered", ""),
                ("hosts", ', result="ok"'),
            )
        ],
        width=24,
    )
    board.add(
        series_panel("percentunit").min(0).max(1),
        "Share of present hosts whose check passed",
        "Hosts whose check passed over hosts that answered anything (probed minus absent).",
        [
            Query(
                f'sum by ({network}) (certero_flow_network_hosts{{{FLOW_SELECTOR}, result="ok"}})'
                f"\n/ clamp_min(sum by ({network}) (certero_flow_network_hosts_probed"
                f"{{{FLOW_SELECTOR}}}) - sum by ({network}) (certero_flow_network_hosts_absent"
                f"{{{FLOW_SELECTOR}}}), 1)",
                legend="{{flow}} {{network}}",
            )
        ],
    )
    board.add(
        series_panel("s"),
        "Sweep duration against the interval",
        "Wall time of each network's last completed sweep, and the flow's interval: a sweep "
        "longer than the interval skips the next start.",
        [
            Query(
                f"max by ({network}) "
                f"(certero_flow_network_sweep_duration_seconds{{{FLOW_SELECTOR}}})",
                legend="{{flow}} {{network}}",
            ),
            Query(
                f"certero_flow_interval_seconds{{{FLOW_SELECTOR}}} and on (flow, source) "
                f"certero_flow_network_hosts_probed{{{FLOW_SELECTOR}}}",
                legend="{{flow}} interval",
            ),
        ],
    )
    board.add(
        series_panel("s"),
        "Time since the last completed sweep",
        "Age of each network's last completed sweep.",
        [
            Query(
                f"time() - max by ({network}) "
                "(certero_flow_network_sweep_last_completion_timestamp_seconds"
                f"{{{FLOW_SELECTOR}}})",
                legend="{{flow}} {{network}}",
            )
        ],
        width=24,
    )
    return board


def exporter_health() -> Board:
    """The exporter itself: check rate, scheduler lag, skipped runs, scrape cost, reloads."""
    board = Board(
        "certero-flows-exporter",
        "Certero flows / Exporter health",
        "The exporters serving the selected sources: checks per second, how late checks start, "
        "skipped runs, what a scrape costs, config reloads and worker use.",
    )

    def own(expr: str) -> str:
        return f"{expr} {OF_SELECTED_EXPORTERS}"

    board.add(
        series_panel("ops", stacked=True),
        "Checks per second by check and result",
        "Checks finished per second, by check and result class.",
        [
            Query(
                "sum by (check, result) "
                f"({own('rate(certero_flow_exporter_checks_total[$__rate_interval])')})",
                legend="{{check}} {{result}}",
            )
        ],
        width=24,
        height=9,
    )
    board.add(
        series_panel("s"),
        "Scheduler lag",
        "How late checks start after they are due (waiting for concurrency slots): median and "
        "99th percentile per exporter.",
        [
            Query(
                f"histogram_quantile({quantile}, sum by (instance, le) ("
                f"{own('rate(certero_flow_exporter_scheduler_lag_seconds_bucket[$__rate_interval])')}"
                "))",
                legend=f"{{{{instance}}}} p{round(quantile * 100)}",
            )
            for quantile in (0.5, 0.99)
        ],
    )
    board.add(
        series_panel("short", bars=True),
        "Skipped runs",
        "Runs skipped because the previous run of the same pair or sweep had not finished.",
        [
            Query(
                "sum by (instance) "
                f"({own('increase(certero_flow_exporter_skipped_runs_total[$__rate_interval])')})",
                legend="{{instance}}",
            )
        ],
    )
    board.add(
        series_panel("short"),
        "Checks in flight and scheduled pairs",
        "Checks running now against the pairs the config schedules.",
        [
            Query(own("certero_flow_exporter_checks_in_flight"), legend="{{instance}} in flight"),
            Query(own("certero_flow_exporter_scheduled_pairs"), legend="{{instance}} pairs"),
        ],
    )
    board.add(
        series_panel("short"),
        "Blocking workers",
        "Worker threads for blocking library calls, and how many run a call now.",
        [
            Query(own("certero_flow_exporter_blocking_workers_busy"), legend="{{instance}} busy"),
            Query(own("certero_flow_exporter_blocking_workers"), legend="{{instance}} workers"),
        ],
    )
    board.add(
        series_panel("s"),
        "Scrape duration",
        "How long Prometheus takes to scrape each exporter.",
        [Query(own("scrape_duration_seconds"), legend="{{job}} {{instance}}")],
    )
    board.add(
        series_panel("short"),
        "Samples per scrape",
        "Samples each scrape returns: the series budget the config costs.",
        [Query(own("scrape_samples_scraped"), legend="{{job}} {{instance}}")],
    )
    board.add(
        stat.Panel().thresholds(threshold_steps((None, "red"), (1, "green"))),
        "Config reloads",
        "Whether the last config load or reload succeeded (1), and successful reloads in the "
        "time range.",
        [
            Query(
                own("certero_flow_exporter_config_last_reload_successful"),
                legend="{{instance}} last reload ok",
                instant=True,
            ),
            Query(
                "changes(certero_flow_exporter_config_last_reload_success_timestamp_seconds"
                f"[$__range]) {OF_SELECTED_EXPORTERS}",
                legend="{{instance}} reloads",
                instant=True,
            ),
        ],
    )
    board.add(
        series_panel("reqps"),
        "/probe requests rejected",
        "/probe requests answered without a result, by reason (policy 403; concurrency or "
        "exporter_error 503).",
        [
            Query(
                "sum by (instance, reason) ("
                f"{own('rate(certero_flow_exporter_probe_rejected_total[$__rate_interval])')})",
                legend="{{instance}} {{reason}}",
            )
        ],
    )
    board.add(
        series_panel("short", bars=True),
        "Check defects",
        "Check runs that raised an error no mapping knows (each became service_error and is "
        "logged once per check and error type).",
        [
            Query(
                "sum by (check) "
                f"({own('increase(certero_flow_exporter_check_defects_total[$__rate_interval])')})",
                legend="{{check}}",
                empty_when="no check has raised an unmapped error: the normal state",
            )
        ],
    )
    return board


def boards() -> list[Board]:
    """Every dashboard, in the order they are listed."""
    return [overview(), flow_detail(), endpoint_networks(), exporter_health()]


def file_name(board: Board) -> str:
    """`certero-flows-overview` → `overview.json`."""
    return board.uid.removeprefix(f"{TAG}-") + ".json"


def write(directory: Path) -> list[Path]:
    """Write every dashboard's JSON into `directory`; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for board in boards():
        path = directory / file_name(board)
        path.write_text(board.render(), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m dashboards.generate [--output DIR]`: regenerate the committed dashboards."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--output", type=Path, default=OUTPUT_DIR)
    arguments = parser.parse_args(argv)
    for path in write(arguments.output):
        print(path)


if __name__ == "__main__":
    main()
