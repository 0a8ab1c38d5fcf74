"""Nagios/Icinga plugin mode: one flow checked once, one status line, the plugin exit code.

`certero-flow-exporter nagios --flow ID ...` and the `check_certero_flow` console script (or any
symlink of that name to it) run the flow's configured targets once, the way `check` does, and
speak the Nagios plugin API (Nagios Plugin Development Guidelines, "Plugin Return Codes",
"Performance data", "Threshold and ranges"):

* exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN;
* one line `CERTERO FLOW <STATE> - <what happened> | <perfdata>`;
* perfdata `'label'=value[UOM];[warn];[crit];[min];[max]` for the total latency, each phase's
  latency and, when the check saw a TLS chain, the days until its earliest expiry;
* thresholds in the full range syntax (`10`, `10:`, `~:10`, `10:20`, `@10:20`), with the
  semantics of the `nagiosplugin` library's `Range` (an alert when the value lies outside the
  range, or inside it with `@`).

States: a flow whose check did not end `ok` is CRITICAL, except `exporter_error` (the exporter
could not run the check, so the flow's state is unknown), which is UNKNOWN. An `ok` flow is
CRITICAL/WARNING when `-c`/`-w` alert on its total latency in seconds, or when the earliest
certificate of its chain expires in fewer than `--cert-crit`/`--cert-warn` days. A flow with
several targets is checked on every target at once unless `--target` picks one; the worst
state wins and the line names each target that is not OK (at most MAX_TARGETS_NAMED of them,
and perfdata for the first MAX_TARGETS_WITH_PERFDATA targets: Nagios keeps 8 KiB of output).
An unknown flow, a bad argument or a config that does not load is UNKNOWN: Nagios must not
read a broken invocation as a broken flow.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import enum
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from exporter.blocking import BlockingPool
from exporter.config import Config, Job, load_config
from exporter.errors import ConfigError
from exporter.remediation import remediate_pair
from exporter.result import CheckResult, Result
from exporter.runner import run_check

PLUGIN_NAME = "check_certero_flow"
STATUS_PREFIX = "CERTERO FLOW"
SECONDS_PER_DAY = 86400.0
# Nagios 4 keeps 8 KiB of a plugin's output (MAX_PLUGIN_OUTPUT_LENGTH): a flow with hundreds of
# targets names at most this many in the line, and gives perfdata for at most this many.
MAX_TARGETS_NAMED = 10
MAX_TARGETS_WITH_PERFDATA = 20


class State(enum.IntEnum):
    """Plugin states, ordered so that `max` picks the worst; the value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


class UsageError(Exception):
    """A bad argument or an unusable flow/target choice: the plugin answers UNKNOWN."""


@dataclass(frozen=True, slots=True)
class Range:
    """A Nagios threshold range, `[@][start:][end]`, with the `nagiosplugin.Range` semantics.

    `start:` may be left out when it is 0, `~` as start is minus infinity, a missing end is
    infinity, and `@` inverts the match. A value alerts when it lies outside [start, end]
    (bounds included in the range), or, inverted, when it lies inside.
    """

    start: float
    end: float
    invert: bool = False

    @classmethod
    def parse(cls, spec: str) -> Range:
        """Parse a range; `ValueError` names what is wrong."""
        text = spec
        invert = text.startswith("@")
        if invert:
            text = text[1:]
        start_text, separator, end_text = text.partition(":")
        if not separator:
            start_text, end_text = "", text
        elif ":" in end_text:
            raise ValueError(f"range {spec!r} has more than one ':'")
        start = -math.inf if start_text == "~" else _parse_bound(spec, start_text, 0)
        end = _parse_bound(spec, end_text, math.inf)
        if start > end:
            raise ValueError(f"range {spec!r}: start {start} must not be greater than end {end}")
        return cls(start, end, invert)

    def alerts(self, value: float) -> bool:
        """True when `value` is outside the range (inside it, for an inverted range)."""
        inside = self.start <= value <= self.end
        return inside if self.invert else not inside

    def violation(self) -> str:
        """Why a value alerts: `outside 0:10`, or `inside 10:20` for `@10:20`."""
        start = "~" if self.start == -math.inf else _number(self.start)
        end = "" if self.end == math.inf else _number(self.end)
        return f"{'inside' if self.invert else 'outside'} {start}:{end}"

    def __str__(self) -> str:
        """The canonical form, as it goes into perfdata (`nagiosplugin.Range.__str__`)."""
        text = "@" if self.invert else ""
        if self.start == -math.inf:
            text += "~:"
        elif self.start != 0:
            text += f"{_number(self.start)}:"
        if self.end != math.inf:
            text += _number(self.end)
        return text


def _parse_bound(spec: str, text: str, default: float) -> float:
    """One bound: empty takes the default; an integer, or a decimal with a point."""
    if text == "":
        return default
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        raise ValueError(f"range {spec!r}: {text!r} is not a number") from None


def _number(value: float) -> str:
    """A perfdata number: plain decimal notation, no exponent, no trailing zeros."""
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def _range_argument(text: str) -> Range:
    try:
        return Range.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _days_argument(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not math.isfinite(days) or days < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days >= 0")
    return days


def _timeout_argument(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return seconds


class PluginArgumentParser(argparse.ArgumentParser):
    """Argument errors end the plugin with UNKNOWN (3) and a status line, not argparse's 2."""

    def error(self, message: str) -> NoReturn:
        """Nagios shows stdout: the reason goes there, as an UNKNOWN status line."""
        print(f"{STATUS_PREFIX} UNKNOWN - bad arguments: {message}")
        sys.exit(State.UNKNOWN)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The plugin's arguments, shared by `nagios` and `check_certero_flow`."""
    parser.add_argument("--flow", required=True, metavar="ID", help="the flow to check")
    parser.add_argument(
        "--target",
        metavar="T",
        help="only this target of the flow (HOST or HOST:PORT as configured); default: every "
        "target of the flow, the worst state wins",
    )
    parser.add_argument(
        "-w",
        "--warning",
        type=_range_argument,
        metavar="RANGE",
        help="WARNING when the total latency in seconds alerts on this Nagios range",
    )
    parser.add_argument(
        "-c",
        "--critical",
        type=_range_argument,
        metavar="RANGE",
        help="CRITICAL when the total latency in seconds alerts on this Nagios range",
    )
    parser.add_argument(
        "--cert-warn",
        type=_days_argument,
        metavar="DAYS",
        help="WARNING when the earliest certificate of the chain expires in fewer days",
    )
    parser.add_argument(
        "--cert-crit",
        type=_days_argument,
        metavar="DAYS",
        help="CRITICAL when the earliest certificate of the chain expires in fewer days",
    )
    parser.add_argument(
        "--timeout",
        type=_timeout_argument,
        metavar="S",
        help="seconds each target's check may take (default: the flow's configured timeout)",
    )
    parser.add_argument("--config", help="YAML config (default: the embedded loopback config)")


def plugin_parser(prog: str = PLUGIN_NAME) -> PluginArgumentParser:
    """The standalone parser of `check_certero_flow` and `certero-flow-exporter nagios`."""
    parser = PluginArgumentParser(
        prog=prog,
        description="Nagios/Icinga plugin: check one Certero flow once (exit 0/1/2/3).",
    )
    add_arguments(parser)
    return parser


def is_plugin_name(argv0: str) -> bool:
    """True when the program was started as `check_certero_flow` (a symlink or the script)."""
    name = os.path.basename(argv0)
    return name == PLUGIN_NAME or name.startswith(PLUGIN_NAME + ".")


def main(
    argv: Sequence[str] | None = None, prog: str = PLUGIN_NAME, log_level: str = "error"
) -> int:
    """Entry point of `check_certero_flow`: parse, check, print one line, return the state."""
    args = plugin_parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    # Nagios reads stdout only; log lines go to stderr and stay out of the status line.
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
        stream=sys.stderr,
    )
    return run_plugin(args)


def run_plugin(args: argparse.Namespace) -> int:
    """Run the chosen flow once and print its status line; the return value is the exit code.

    The plugin's boundary: whatever goes wrong in the exporter itself ends as an UNKNOWN line,
    never as a traceback Nagios would show as a CRITICAL exit 1 without a status line.
    """
    try:
        return _run_plugin(args)
    except Exception as exc:  # the boundary: Nagios must see UNKNOWN, not a traceback
        logging.getLogger(__name__).error("plugin run failed", exc_info=exc)
        return _emit(State.UNKNOWN, f"the exporter failed: {type(exc).__name__}")


def _run_plugin(args: argparse.Namespace) -> int:
    thresholds = Thresholds(args.warning, args.critical, args.cert_warn, args.cert_crit)
    try:
        config = load_config(args.config)
        jobs = select_jobs(config, args.flow, args.target)
    except ConfigError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid config"
        return _emit(State.UNKNOWN, f"invalid config: {first}")
    except UsageError as exc:
        return _emit(State.UNKNOWN, str(exc))
    results = asyncio.run(_run_jobs(config, jobs, args.timeout))
    verdicts = [
        dataclasses.replace(
            judge(job, result, thresholds, args.timeout or job.timeout),
            remediation="" if result.ok else remediate_pair(config, job, result).summary,
        )
        for job, result in zip(jobs, results, strict=True)
    ]
    state, line = status_line(args.flow, verdicts, thresholds)
    print(line)
    return int(state)


def _emit(state: State, message: str) -> int:
    print(f"{STATUS_PREFIX} {state.name} - {message}")
    return int(state)


def select_jobs(config: Config, flow_id: str, target: str | None) -> list[Job]:
    """The flow's pairs, or the one `target` names; `UsageError` says what exists instead."""
    jobs = [job for job in config.jobs if job.flow_id == flow_id]
    if not jobs:
        if any(sweep.flow_id == flow_id for sweep in config.sweeps):
            raise UsageError(
                f"flow {flow_id} is a swept network; plugin mode checks listed targets only "
                "(list a host of the network as an extra flow to check it from Nagios)"
            )
        reason = config.skipped_flows.get(flow_id)
        if reason:
            raise UsageError(f"flow {flow_id} has no pairs to check: {reason}")
        known = _listing(sorted({job.flow_id for job in config.jobs}))
        raise UsageError(f"no configured pairs for flow {flow_id} (configured: {known})")
    if target is None:
        return jobs
    chosen = [job for job in jobs if target in (str(job.target), job.target.host)]
    if not chosen:
        targets = _listing([str(job.target) for job in jobs])
        raise UsageError(f"flow {flow_id} has no target {target} (targets: {targets})")
    return chosen


def _listing(names: Sequence[str]) -> str:
    """`a, b, c and 12 more`: a bounded list of names for one line."""
    shown = ", ".join(names[:MAX_TARGETS_NAMED]) or "none"
    rest = len(names) - MAX_TARGETS_NAMED
    return f"{shown} and {rest} more" if rest > 0 else shown


async def _run_jobs(
    config: Config, jobs: Sequence[Job], timeout_override: float | None
) -> list[CheckResult]:
    """Every chosen pair concurrently, bounded by `scheduler.concurrency` like `check`: a flow
    with a few targets ends within one timeout, not one per target."""
    slots = asyncio.Semaphore(config.file.scheduler.concurrency)

    async def run(job: Job, blocking: BlockingPool) -> CheckResult:
        timeout = timeout_override if timeout_override is not None else job.timeout
        async with slots:
            outcome = await run_check(
                job.spec, job.target, job.settings, timeout, blocking=blocking
            )
        return outcome.result

    with BlockingPool(config.file.scheduler.blocking_workers) as blocking:
        return list(await asyncio.gather(*(run(job, blocking) for job in jobs)))


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The plugin's thresholds: latency ranges in seconds, certificate minimums in days."""

    warning: Range | None = None
    critical: Range | None = None
    cert_warn_days: float | None = None
    cert_crit_days: float | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """One pair's state, the reason for it, and its perfdata."""

    job: Job
    result: CheckResult
    state: State
    reason: str
    timeout: float
    cert_days: float | None
    remediation: str = ""  # what to change, for a pair that did not pass


def cert_days_left(result: CheckResult, now: float | None = None) -> float | None:
    """Days until the earliest notAfter of the presented chain (the leaf's when no chain)."""
    expiry = result.tls_chain_expiry_seconds
    if expiry is None:
        expiry = result.tls_cert_expiry_seconds
    if expiry is None:
        return None
    return (expiry - (time.time() if now is None else now)) / SECONDS_PER_DAY


def judge(
    job: Job,
    result: CheckResult,
    thresholds: Thresholds,
    timeout: float,
    now: float | None = None,
) -> Verdict:
    """A pair's state: the check's class first, then latency and certificate thresholds.

    `timeout` is the time the check was given: the maximum of the latency perfdata.
    """
    days = cert_days_left(result, now)
    if result.result is Result.EXPORTER_ERROR:
        return Verdict(job, result, State.UNKNOWN, result.detail, timeout, days)
    if not result.ok:
        return Verdict(job, result, State.CRITICAL, result.detail, timeout, days)
    seconds = result.duration_seconds
    latency = f"{_number(round(seconds, 3))}s"
    checks: list[tuple[State, bool, str]] = [
        (
            State.CRITICAL,
            thresholds.critical is not None and thresholds.critical.alerts(seconds),
            f"latency {latency} {_violation(thresholds.critical)} (critical)",
        ),
        (
            State.WARNING,
            thresholds.warning is not None and thresholds.warning.alerts(seconds),
            f"latency {latency} {_violation(thresholds.warning)} (warning)",
        ),
    ]
    if days is not None:
        left = f"certificate chain expires in {days:.1f} days"
        for state, minimum in (
            (State.CRITICAL, thresholds.cert_crit_days),
            (State.WARNING, thresholds.cert_warn_days),
        ):
            if minimum is not None:
                checks.append((state, days < minimum, f"{left} (< {minimum:g})"))
    alerts = [(state, reason) for state, alerted, reason in checks if alerted]
    if not alerts:
        return Verdict(job, result, State.OK, f"ok in {_milliseconds(seconds)}", timeout, days)
    worst = max(state for state, _ in alerts)
    reasons = "; ".join(reason for state, reason in alerts if state is worst)
    took = _milliseconds(seconds)
    return Verdict(job, result, worst, f"ok in {took} but {reasons}", timeout, days)


def _violation(threshold: Range | None) -> str:
    return threshold.violation() if threshold is not None else ""


def _milliseconds(seconds: float) -> str:
    """`0.4 ms`, `12 ms`: small latencies keep a decimal so that they never read as 0."""
    milliseconds = seconds * 1000
    return f"{milliseconds:.1f} ms" if milliseconds < 10 else f"{milliseconds:.0f} ms"


def describe(verdict: Verdict, *, with_flow: bool = True) -> str:
    """`ldaps_dc 10.0.0.1:636 refused: connection refused` and its remediation, if any."""
    job, result = verdict.job, verdict.result
    pair = f"{job.flow_id} {job.target}" if with_flow else str(job.target)
    if result.ok:
        return f"{pair} {verdict.reason}"
    text = f"{pair} {result.result.value}: {verdict.reason}"
    return f"{text} - {verdict.remediation}" if verdict.remediation else text


def perfdata(verdicts: Sequence[Verdict], thresholds: Thresholds) -> str:
    """Perfdata of every pair: `'time'=0.012s;0.5;1;0;10 'connect'=...` (one target) or the
    same labels prefixed with the target when the flow has several.

    `time` carries the -w/-c ranges and the check's timeout as maximum; `cert_days` carries
    the certificate thresholds as ranges (`30:`: fewer than 30 days alerts).
    """
    items: list[str] = []
    prefix_targets = len(verdicts) > 1
    for verdict in verdicts[:MAX_TARGETS_WITH_PERFDATA]:
        result = verdict.result
        prefix = f"{verdict.job.target} " if prefix_targets else ""
        items.append(
            _perf(
                f"{prefix}time",
                result.duration_seconds,
                "s",
                warn=_range_text(thresholds.warning),
                crit=_range_text(thresholds.critical),
                low="0",
                high=_number(verdict.timeout),
            )
        )
        items.extend(
            _perf(f"{prefix}{phase.value}", seconds, "s", low="0")
            for phase, seconds in result.phases.items()
        )
        if verdict.cert_days is not None:
            items.append(
                _perf(
                    f"{prefix}cert_days",
                    verdict.cert_days,
                    warn=_minimum_text(thresholds.cert_warn_days),
                    crit=_minimum_text(thresholds.cert_crit_days),
                )
            )
    return " ".join(items)


def _range_text(threshold: Range | None) -> str:
    return str(threshold) if threshold is not None else ""


def _minimum_text(days: float | None) -> str:
    return f"{_number(days)}:" if days is not None else ""


def _perf(
    label: str,
    value: float,
    uom: str = "",
    *,
    warn: str = "",
    crit: str = "",
    low: str = "",
    high: str = "",
) -> str:
    """One perfdata item; a quote in a label is doubled as the guidelines ask, `=` dropped."""
    quoted = label.replace("'", "''").replace("=", "_")
    return f"'{quoted}'={_number(value)}{uom};{warn};{crit};{low};{high}"


def status_line(
    flow_id: str, verdicts: Sequence[Verdict], thresholds: Thresholds
) -> tuple[State, str]:
    """The worst state and the one line Nagios shows: the pairs that are not OK first."""
    state = max(verdict.state for verdict in verdicts)
    if len(verdicts) == 1:
        summary = describe(verdicts[0])
    else:
        bad = [verdict for verdict in verdicts if verdict.state is not State.OK]
        counts = f"{len(verdicts) - len(bad)} of {len(verdicts)} targets OK"
        shown = bad or list(verdicts)
        summary = f"{flow_id}: {counts}; " + "; ".join(
            describe(verdict, with_flow=False) for verdict in shown[:MAX_TARGETS_NAMED]
        )
        if len(shown) > MAX_TARGETS_NAMED:
            summary += f"; and {len(shown) - MAX_TARGETS_NAMED} more"
    summary = summary.replace("|", "/").replace("\n", " ")  # `|` starts perfdata
    return state, f"{STATUS_PREFIX} {state.name} - {summary} | {perfdata(verdicts, thresholds)}"
