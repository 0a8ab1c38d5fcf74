"""Generates `alerts/certero-flow.rules.yml`, the Prometheus rules shipped with the exporter.

Every threshold, window and selector is a named field of `Settings`, in one place, so an operator
changes a number without editing PromQL (`--set flow_down_for=10m`), and the tests can shorten
the `for:` windows to seconds for the end-to-end alert path without a second copy of the rules.
The committed rule file is this module's output with the defaults; `tests/test_alerts.py` fails
when the two differ.

Conventions (kubernetes-mixin / node-mixin): CamelCase alert names with the prefix
`CerteroFlow`, a static `summary`, a templated `description`, a `runbook_url` into
`docs/runbooks.md`, recording rules named `level:metric:operations` under `certero_flow:`.

Flow alerts take `severity` and the port table's words (from, to, protocol, port, reason) from
`certero_flow_info`, joined on (flow, source). The info is first reduced with
`max by (flow, source, <info labels>)` so that two exporters of one source (sharded background
checks, each exporting the same info) do not make the join ambiguous.

Usage: `python -m alerts.generate [--set NAME=VALUE ...] [--output FILE]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RULE_FILE = Path(__file__).resolve().parent / "certero-flow.rules.yml"
ALERT_PREFIX = "CerteroFlow"
INFO_LABELS = ("severity", "optional", "reason", "protocol", "port", "from", "to")
# The labels that name one (flow, target) pair on one exporter.
PAIR_LABELS = ("job", "instance", "flow", "source", "target", "check")
DAY_SECONDS = 86400


@dataclass(frozen=True)
class Settings:
    """Every threshold of the rules. Durations are Prometheus durations (`5m`, `1d`)."""

    # Series selection: `flow_selector` narrows every certero_flow_* series (e.g.
    # `job="certero-flow"`); the exporter's own scrape job is `exporter_job`.
    flow_selector: str = ""
    exporter_job: str = "certero-flow"  # the job name of config/prometheus-scrape.yml
    # A flow (one target) failing continuously for this long pages per its severity.
    flow_down_for: str = "5m"
    # The exporter could not run a check (`exporter_error`): the flow's state is unknown.
    cannot_check_for: str = "10m"
    # Flapping: at least `flap_changes` changes of certero_flow_up within `flap_window`.
    flap_window: str = "30m"
    flap_changes: int = 4
    flap_for: str = "5m"
    # Latency: the flow's p95 over `latency_rate_window` above `latency_baseline_factor` times
    # its own average over `latency_baseline_window`, and above `latency_floor_seconds`.
    latency_quantile: float = 0.95
    latency_rate_window: str = "5m"
    latency_baseline_window: str = "1d"
    latency_baseline_factor: float = 2.0
    latency_floor_seconds: float = 0.05
    latency_for: str = "15m"
    # TLS certificates: leaf and chain expiry.
    cert_warning_days: int = 14
    cert_critical_days: int = 3
    cert_for: str = "10m"
    # Staleness: a pair (or a swept network) not checked for `stale_intervals` intervals.
    stale_intervals: int = 3
    stale_for: str = "1m"
    # The exporter itself.
    exporter_down_for: str = "5m"
    exporter_absent_for: str = "15m"
    exporter_severity: str = "critical"
    # An endpoint network's share of hosts passing the check, in points below its own average.
    network_share_drop: float = 0.2
    network_baseline_window: str = "1d"
    network_drop_for: str = "15m"
    # Where docs/runbooks.md is published; anchors are the lower-cased alert names.
    runbook_base_url: str = "docs/runbooks.md"


def metric(name: str, settings: Settings, *matchers: str) -> str:
    """`name{flow_selector, matchers}`, leaving out the braces when there is nothing to match."""
    parts = [part for part in (settings.flow_selector, *matchers) if part]
    return f"{name}{{{', '.join(parts)}}}" if parts else name


def with_flow_info(expression: str, settings: Settings) -> str:
    """Join `expression` (which has flow and source) with the flow's data from certero_flow_info.

    The value of `expression` is kept (the info series are 1).
    """
    labels = ", ".join(INFO_LABELS)
    info = metric("certero_flow_info", settings)
    return (
        f"(\n  {expression}\n)\n"
        f"* on (flow, source) group_left ({labels})\n"
        f"  max by (flow, source, {labels}) ({info})"
    )


# Template fragments: the flow in the port table's words, and its reason.
# ICMP flows have no port: the catalogue writes "-", left out of the text.
PORT_TEXT = '{{ $labels.protocol }}{{ if ne $labels.port "-" }} {{ $labels.port }}{{ end }}'
FLOW_TEXT = f"{{{{ $labels.flow }}}} ({{{{ $labels.from }}}} → {{{{ $labels.to }}}}, {PORT_TEXT})"
FIREWALL_TEXT = (
    f"Firewall rule: allow {PORT_TEXT} from {{{{ $labels.from }}}} to {{{{ $labels.to }}}}."
)
REASON_TEXT = "The flow is needed for: {{ $labels.reason }}"
LAST_RESULT_TEXT = (
    "{{ with printf `certero_flow_result{flow=%q,source=%q,target=%q,instance=%q,"
    'result!="ok"} == 1` $labels.flow $labels.source $labels.target $labels.instance '
    "| query }}{{ range . }}last result: {{ .Labels.result }}{{ end }}"
    "{{ else }}last result unknown{{ end }}"
)


def runbook(alert: str, settings: Settings) -> str:
    """The runbook URL of `alert`: docs/runbooks.md's heading anchor (GitHub style)."""
    return f"{settings.runbook_base_url}#{alert.lower()}"


def alert_rule(
    name: str,
    expression: str,
    for_: str,
    settings: Settings,
    *,
    summary: str,
    description: str,
    severity: str | None = None,
) -> dict[str, Any]:
    """One alerting rule; `severity` None keeps the severity the expression carries (per flow)."""
    rule: dict[str, Any] = {"alert": name, "expr": expression, "for": for_}
    if severity is not None:
        rule["labels"] = {"severity": severity}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": runbook(name, settings),
    }
    return rule


def recording_rules(settings: Settings) -> list[dict[str, Any]]:
    """Series the alerts and the dashboards share, one evaluation ahead of their users."""
    quantile = settings.latency_quantile
    percentile = f"p{round(quantile * 100)}"
    latency = f"certero_flow:latency_seconds:{percentile}_{settings.latency_rate_window}"
    buckets = metric("certero_flow_latency_seconds_bucket", settings)
    ok_hosts = metric("certero_flow_network_hosts", settings, 'result="ok"')
    probed = metric("certero_flow_network_hosts_probed", settings)
    network_keys = "job, flow, source, network, check"
    return [
        {
            # Share of a flow's targets that pass, per exporter: the overview matrix's colour.
            "record": "certero_flow:targets_up:ratio",
            "expr": f"avg by (job, flow, source) ({metric('certero_flow_up', settings)})",
        },
        {
            # Targets of a flow per result class: what a failing flow fails with.
            "record": "certero_flow:targets_by_result:sum",
            "expr": (
                f"sum by (job, flow, source, result) ({metric('certero_flow_result', settings)})"
            ),
        },
        {
            # The flow's latency quantile across its targets (histogram of contract item 3).
            "record": latency,
            "expr": (
                f"histogram_quantile({quantile}, sum by (flow, source, check, le) "
                f"(rate({buckets}[{settings.latency_rate_window}])))"
            ),
        },
        {
            # The flow's own latency baseline: the quantile's average over the baseline window.
            "record": f"{latency}_avg{settings.latency_baseline_window}",
            "expr": f"avg_over_time({latency}[{settings.latency_baseline_window}])",
        },
        {
            # Share of a swept network's probed hosts that passed the check (shards summed).
            "record": "certero_flow:network_reachable:ratio",
            "expr": (
                f"sum by ({network_keys}) ({ok_hosts})\n/ (sum by ({network_keys}) ({probed}) > 0)"
            ),
        },
    ]


def flow_alerts(settings: Settings) -> list[dict[str, Any]]:
    """Alerts about flows: down, not checkable, flapping, slow, certificates, stale, networks."""
    up = metric("certero_flow_up", settings)
    pair = ", ".join(PAIR_LABELS)
    exporter_error = metric("certero_flow_result", settings, 'result="exporter_error"')
    percentile = f"p{round(settings.latency_quantile * 100)}"
    latency = f"certero_flow:latency_seconds:{percentile}_{settings.latency_rate_window}"
    baseline = f"{latency}_avg{settings.latency_baseline_window}"
    leaf = metric("certero_flow_tls_cert_expiry_timestamp_seconds", settings)
    chain = metric("certero_flow_tls_chain_expiry_timestamp_seconds", settings)
    interval = metric("certero_flow_interval_seconds", settings)
    last_check = metric("certero_flow_last_check_timestamp_seconds", settings)
    sweep_done = metric("certero_flow_network_sweep_last_completion_timestamp_seconds", settings)
    stale_after = f"{settings.stale_intervals} * max by (flow, source) ({interval})"
    share = "certero_flow:network_reachable:ratio"
    share_baseline = f"avg_over_time({share}[{settings.network_baseline_window}])"
    pair_text = f"Flow {FLOW_TEXT} from {{{{ $labels.source }}}} to {{{{ $labels.target }}}}"
    rules = [
        alert_rule(
            f"{ALERT_PREFIX}Down",
            with_flow_info(
                f"{up} == 0\n  unless on ({pair}) ({exporter_error} == 1)",
                settings,
            ),
            settings.flow_down_for,
            settings,
            summary="A network flow is failing: its service cannot be reached or "
            "does not answer as it must.",
            description=f"{pair_text} has failed its {{{{ $labels.check }}}} check for more "
            f"than {settings.flow_down_for}; {LAST_RESULT_TEXT}. {REASON_TEXT}. {FIREWALL_TEXT}",
        ),
        alert_rule(
            f"{ALERT_PREFIX}CannotCheck",
            with_flow_info(f"{exporter_error} == 1", settings),
            settings.cannot_check_for,
            settings,
            severity="warning",
            summary="The exporter cannot run a flow's check: the flow's state is unknown.",
            description=f"The exporter {{{{ $labels.instance }}}} could not run the "
            f"{{{{ $labels.check }}}} check of {FLOW_TEXT} to {{{{ $labels.target }}}} for "
            f"{settings.cannot_check_for} (exporter_error: out of file descriptors, no free "
            "worker, a secret it cannot read). The flow itself may be fine.",
        ),
        alert_rule(
            f"{ALERT_PREFIX}Flapping",
            with_flow_info(
                f"changes({up}[{settings.flap_window}]) >= {settings.flap_changes}", settings
            ),
            settings.flap_for,
            settings,
            summary="A network flow keeps failing and recovering.",
            description=f"{pair_text} changed between passing and failing "
            f"{{{{ $value }}}} times in {settings.flap_window}. {REASON_TEXT}.",
        ),
        alert_rule(
            f"{ALERT_PREFIX}LatencyAboveBaseline",
            with_flow_info(
                f"{latency} > {settings.latency_baseline_factor} * {baseline}\n"
                f"  and {latency} > {settings.latency_floor_seconds}",
                settings,
            ),
            settings.latency_for,
            settings,
            severity="warning",
            summary="A network flow answers much slower than it usually does.",
            description=f"Flow {FLOW_TEXT} from {{{{ $labels.source }}}}: the "
            f"{percentile} of its {{{{ $labels.check }}}} checks over "
            f"{settings.latency_rate_window} is {{{{ $value | humanizeDuration }}}}, more than "
            f"{settings.latency_baseline_factor:g} times its {settings.latency_baseline_window} "
            f"average. {REASON_TEXT}.",
        ),
    ]
    for severity, days in (
        ("warning", settings.cert_warning_days),
        ("critical", settings.cert_critical_days),
    ):
        rules.append(
            alert_rule(
                f"{ALERT_PREFIX}TLSCertificateExpiring",
                with_flow_info(f"{leaf} - time() < {days * DAY_SECONDS}", settings),
                settings.cert_for,
                settings,
                severity=severity,
                summary=f"The TLS certificate a flow's service presents expires in less than "
                f"{days} days.",
                description=f"The certificate {{{{ $labels.target }}}} presents on {FLOW_TEXT} "
                "expires in {{ $value | humanizeDuration }} (negative: expired). Clients of "
                "the flow will refuse it once it expires.",
            )
        )
        rules.append(
            alert_rule(
                f"{ALERT_PREFIX}TLSChainCertificateExpiring",
                with_flow_info(
                    f"{chain} - time() < {days * DAY_SECONDS}\n"
                    f"  unless on ({pair}) ({chain} >= {leaf})",
                    settings,
                ),
                settings.cert_for,
                settings,
                severity=severity,
                summary=f"An intermediate certificate of a flow's TLS chain expires in less "
                f"than {days} days, before the server's own certificate.",
                description=f"The chain {{{{ $labels.target }}}} presents on {FLOW_TEXT} "
                "has a certificate expiring in {{ $value | humanizeDuration }}, before the "
                "leaf: every client of the flow fails then, whatever the leaf's date.",
            )
        )
    rules += [
        alert_rule(
            f"{ALERT_PREFIX}ResultsStale",
            with_flow_info(
                f"(time() - {last_check})\n  > on (flow, source) group_left {stale_after}",
                settings,
            ),
            settings.stale_for,
            settings,
            summary="A flow's result is old: the exporter has not checked it for "
            f"{settings.stale_intervals} intervals.",
            description=f"{pair_text} was last checked {{{{ $value | humanizeDuration }}}} "
            f"ago, more than {settings.stale_intervals} check intervals: the result shown is "
            "not current (scheduler overloaded or checks hanging).",
        ),
        alert_rule(
            f"{ALERT_PREFIX}NetworkSweepStale",
            with_flow_info(
                f"(time() - {sweep_done})\n  > on (flow, source) group_left {stale_after}",
                settings,
            ),
            settings.stale_for,
            settings,
            summary="A swept network's counts are old: its last sweep completed more than "
            f"{settings.stale_intervals} intervals ago.",
            description=f"The sweep of network {{{{ $labels.network }}}} on {FLOW_TEXT} from "
            "{{ $labels.source }} last completed {{ $value | humanizeDuration }} ago, more "
            f"than {settings.stale_intervals} check intervals: the counts shown are not current "
            "(the sweep takes longer than the interval, or hangs).",
        ),
        alert_rule(
            f"{ALERT_PREFIX}NetworkReachableShareDropping",
            with_flow_info(
                f"{share}\n  < {share_baseline} - {settings.network_share_drop}", settings
            ),
            settings.network_drop_for,
            settings,
            summary="Far fewer hosts of an endpoint network pass a flow's check than usually.",
            description=f"On {FLOW_TEXT} from {{{{ $labels.source }}}}, "
            "{{ $value | humanizePercentage }} of the probed hosts of network "
            "{{ $labels.network }} pass the {{ $labels.check }} check, more than "
            f"{settings.network_share_drop * 100:g} points below its "
            f"{settings.network_baseline_window} average. {REASON_TEXT}. {FIREWALL_TEXT}",
        ),
    ]
    return rules


def exporter_alerts(settings: Settings) -> list[dict[str, Any]]:
    """Alerts about the exporter: its scrape fails, or Prometheus has no such target at all."""
    job = f'up{{job="{settings.exporter_job}"}}'
    return [
        alert_rule(
            f"{ALERT_PREFIX}ExporterDown",
            f"{job} == 0",
            settings.exporter_down_for,
            settings,
            severity=settings.exporter_severity,
            summary="Prometheus cannot scrape a Certero flow exporter: its flows are not watched.",
            description=f"Scraping {{{{ $labels.instance }}}} (job {settings.exporter_job}) has "
            f"failed for {settings.exporter_down_for}. The flows this exporter checks are not "
            "watched; their own alerts are inhibited meanwhile.",
        ),
        alert_rule(
            f"{ALERT_PREFIX}ExporterAbsent",
            f"absent({job})",
            settings.exporter_absent_for,
            settings,
            severity=settings.exporter_severity,
            summary="Prometheus has no Certero flow exporter target: no flow is watched.",
            description=f"No target of job {settings.exporter_job} has been known to Prometheus "
            f"for {settings.exporter_absent_for}: the scrape config lost it, or service "
            "discovery finds none.",
        ),
    ]


def _named(rules: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """The rules whose record or alert name starts with `prefix`, in their order."""
    return [rule for rule in rules if rule.get("record", rule.get("alert", "")).startswith(prefix)]


def rule_groups(settings: Settings) -> dict[str, Any]:
    """The rule file's content.

    Prometheus evaluates the rules of one group in order but the groups independently, so an
    alert on a recorded series sits in its record's group, after it: it then sees this
    evaluation's value, not the previous one's, and fires exactly one `for` after its cause.
    """
    records = recording_rules(settings)
    alerts = flow_alerts(settings)
    latency = f"{ALERT_PREFIX}LatencyAboveBaseline"
    share = f"{ALERT_PREFIX}NetworkReachableShareDropping"
    return {
        "groups": [
            {"name": "certero-flow.targets", "rules": _named(records, "certero_flow:targets")},
            {
                "name": "certero-flow.latency",
                "rules": _named(records, "certero_flow:latency") + _named(alerts, latency),
            },
            {
                "name": "certero-flow.networks",
                "rules": _named(records, "certero_flow:network") + _named(alerts, share),
            },
            {
                "name": "certero-flow.alerts",
                "rules": [rule for rule in alerts if rule["alert"] not in (latency, share)],
            },
            {"name": "certero-flow-exporter.alerts", "rules": exporter_alerts(settings)},
        ]
    }


class _RuleDumper(yaml.SafeDumper):
    """Writes multi-line PromQL as literal blocks so the file reads like hand-written rules."""


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_RuleDumper.add_representer(str, _represent_text)

HEADER = (
    "# Generated by `python -m alerts.generate` from alerts/generate.py: edit the settings there\n"
    "# (or regenerate with --set NAME=VALUE), not this file.\n"
)


def render(settings: Settings | None = None) -> str:
    """The rule file as text."""
    body = yaml.dump(
        rule_groups(settings or Settings()),
        Dumper=_RuleDumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )
    return HEADER + body


def parse_overrides(assignments: Sequence[str]) -> Settings:
    """`NAME=VALUE` pairs over the defaults; values take the type of the field's default."""
    defaults = Settings()
    changes: dict[str, Any] = {}
    for assignment in assignments:
        name, separator, value = assignment.partition("=")
        if not separator or not hasattr(defaults, name):
            raise ValueError(f"unknown setting in {assignment!r}")
        changes[name] = type(getattr(defaults, name))(value)
    return dataclasses.replace(defaults, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    """Write the rule file (the committed one by default)."""
    parser = argparse.ArgumentParser(prog="python -m alerts.generate", description=__doc__)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--output", type=Path, default=RULE_FILE)
    args = parser.parse_args(argv)
    try:
        settings = parse_overrides(args.set)
    except ValueError as error:
        parser.error(str(error))
    args.output.write_text(render(settings), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
