"""Command line: `serve`, `check`, `validate`, `catalogue`, `nagios`.

Exit codes: 0 success (for `check`: every flow ok), 1 a flow failed or a config is invalid,
2 bad usage. `nagios` (and the program started as `check_certero_flow`) follows the Nagios
plugin API instead: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (see exporter/nagios.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from exporter import __version__
from exporter.blocking import BlockingPool
from exporter.catalogue import FLOWS
from exporter.config import Config, Job, Sweep, load_config, parse_endpoint
from exporter.errors import ConfigError, ConfigProblem
from exporter.nagios import add_arguments as add_nagios_arguments
from exporter.nagios import is_plugin_name, run_plugin
from exporter.nagios import main as nagios_main
from exporter.networks import Shard
from exporter.report import (
    FlowReport,
    NetworkReport,
    print_table,
    to_csv,
    to_html,
    to_json,
    to_junit,
    to_markdown,
)
from exporter.runner import run_check
from exporter.sweep import WORST_HOSTS_KEPT, run_sweep
from exporter.web import DEFAULT_PORT, serve
from exporter.webconfig import load_web_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LOG_LEVELS = ("debug", "info", "warning", "error")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script.

    Started as `check_certero_flow` (a symlink), or with the `nagios` command, the arguments go
    to the plugin's own parser, whose usage errors exit UNKNOWN (3) as Nagios expects rather
    than argparse's 2.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    if argv is None and is_plugin_name(sys.argv[0]):
        return nagios_main(arguments)
    plugin = _plugin_invocation(arguments)
    if plugin is not None:
        log_level, plugin_arguments = plugin
        return nagios_main(plugin_arguments, "certero-flow-exporter nagios", log_level)
    parser = _parser()
    args = parser.parse_args(arguments)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        separator = " " if len(exc.problems) == 1 else "\n"  # one problem, one line
        print(f"invalid config:{separator}{exc}", file=sys.stderr)
        return EXIT_FAILED
    return code


def _plugin_invocation(arguments: Sequence[str]) -> tuple[str, list[str]] | None:
    """(log level, plugin arguments) when the command is `nagios`, after any `--log-level`."""
    log_level = "error"  # the plugin's stdout is its status line; only errors go to stderr
    index = 0
    while index < len(arguments) and arguments[index].startswith("--log-level"):
        option = arguments[index]
        if "=" in option:
            log_level, index = option.partition("=")[2], index + 1
        elif index + 1 < len(arguments):
            log_level, index = arguments[index + 1], index + 2
        else:
            return None  # argparse reports the missing value
    if arguments[index : index + 1] != ["nagios"]:
        return None
    if log_level not in LOG_LEVELS:
        return None  # argparse reports the bad choice
    return log_level, list(arguments[index + 1 :])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certero-flow-exporter",
        description="Proves every network flow of a Certero deployment is open and answered.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser(
        "serve", help="run the exporter (background checks, /metrics, /probe)"
    )
    serve_cmd.add_argument("--config", help="YAML config (default: the embedded loopback config)")
    serve_cmd.add_argument(
        "--listen",
        default=f"0.0.0.0:{DEFAULT_PORT}",
        help=f"HOST:PORT (default 0.0.0.0:{DEFAULT_PORT})",
    )
    serve_cmd.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="exporter-toolkit web config: TLS, basic auth, headers (default: none, plain HTTP"
        " open to anyone who can reach the port)",
    )
    serve_cmd.add_argument(
        "--log.access",
        dest="log_access",
        action="store_true",
        help="log every HTTP request at INFO (logger exporter.access; default off)",
    )
    _add_shard(serve_cmd)
    serve_cmd.set_defaults(handler=_serve)

    check_cmd = commands.add_parser("check", help="one-shot readiness run of every configured flow")
    check_cmd.add_argument("--config", help="YAML config (default: the embedded loopback config)")
    check_cmd.add_argument(
        "--flow", action="append", default=[], metavar="ID", help="only this flow (repeatable)"
    )
    check_cmd.add_argument(
        "--format",
        choices=["table", "json", "junit", "markdown", "html", "csv"],
        default="table",
        help="table (default), json, junit, or a readiness report: markdown, html (one "
        "self-contained page), csv (the firewall rules to request, one row per rule)",
    )
    check_cmd.add_argument(
        "--report",
        metavar="FILE",
        help="write the --format output to FILE instead of stdout; stdout then shows the table",
    )
    check_cmd.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    check_cmd.add_argument(
        "--details",
        action="store_true",
        help=f"list the worst hosts of each swept network (up to {WORST_HOSTS_KEPT})",
    )
    _add_shard(check_cmd)
    check_cmd.set_defaults(handler=_check)

    validate_cmd = commands.add_parser(
        "validate", help="validate a config file and list every problem"
    )
    validate_cmd.add_argument("file")
    validate_cmd.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="also validate this exporter-toolkit web config (TLS files, users, headers)",
    )
    validate_cmd.set_defaults(handler=_validate)

    catalogue_cmd = commands.add_parser(
        "catalogue", help="print the port table as the exporter knows it"
    )
    catalogue_cmd.add_argument("--format", choices=["table", "json"], default="table")
    catalogue_cmd.set_defaults(handler=_catalogue)

    nagios_cmd = commands.add_parser(
        "nagios",
        help="Nagios/Icinga plugin: check one flow once, exit 0 OK/1 WARNING/2 CRITICAL/3 UNKNOWN",
    )
    add_nagios_arguments(nagios_cmd)
    nagios_cmd.set_defaults(handler=run_plugin)
    return parser


def _add_shard(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="sweep only the hosts of shard I of N (N replicas split every network with no "
        "overlap and no gap); wins over scheduler.shard",
    )


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config, shard=args.shard)
    for warning in config.warnings:
        logging.getLogger("exporter.config").warning("%s", warning)
    endpoint = parse_endpoint(args.listen)
    if endpoint.port is None:
        print(f"--listen needs HOST:PORT, got {args.listen!r}", file=sys.stderr)
        return EXIT_USAGE
    web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    serve(
        config,
        args.config,
        endpoint.host,
        endpoint.port,
        web_config,
        access_log=args.log_access,
        shard=args.shard,
    )
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    config = load_config(args.config, shard=args.shard)
    jobs = list(config.jobs)
    sweeps = list(config.sweeps)
    if args.flow:
        known = {job.flow_id for job in jobs} | {sweep.flow_id for sweep in sweeps}
        unknown = sorted(set(args.flow) - known)
        if unknown:
            print(f"no configured pairs for flow(s): {', '.join(unknown)}", file=sys.stderr)
            return EXIT_USAGE
        jobs = [job for job in jobs if job.flow_id in args.flow]
        sweeps = [sweep for sweep in sweeps if sweep.flow_id in args.flow]
    if not jobs and not sweeps:
        print("the config yields no (flow, target) pairs to check", file=sys.stderr)
        return EXIT_USAGE
    to_stdout = args.report is None
    show_progress = (not args.no_progress and sys.stderr.isatty()) or (
        args.format == "table" or not to_stdout
    )
    reports, networks = asyncio.run(run_once(config, jobs, sweeps, show_progress=show_progress))
    if args.format == "table":
        text = None
    elif args.format == "json":
        text = to_json(reports, networks, details=args.details) + "\n"
    else:
        render = {"junit": to_junit, "markdown": to_markdown, "html": to_html, "csv": to_csv}
        text = render[args.format](reports, networks)
    if not to_stdout:
        report_file = Path(args.report)
        if text is None:  # a plain-text table, without colours
            with report_file.open("w", encoding="utf-8") as out:
                print_table(reports, Console(file=out, width=160), networks, details=args.details)
        else:
            report_file.write_text(text, encoding="utf-8", newline="")
    if text is None or not to_stdout:
        console = Console(width=None if sys.stdout.isatty() else 160)
        print_table(reports, console, networks, details=args.details)
    else:
        sys.stdout.write(text)
    passed = all(report.result.ok for report in reports) and all(n.ok for n in networks)
    return EXIT_OK if passed else EXIT_FAILED


async def run_once(
    config: Config, jobs: list[Job], sweeps: list[Sweep], *, show_progress: bool
) -> tuple[list[FlowReport], list[NetworkReport]]:
    """Run every job and sweep once, bounded like the scheduler (global and per-host slots,
    shared by the sweeps' hosts), with progress."""
    slots = asyncio.Semaphore(config.file.scheduler.concurrency)
    per_host = config.file.scheduler.per_host_concurrency
    host_limits = {job.target.host: asyncio.Semaphore(per_host) for job in jobs}
    source = config.source.value
    progress = Progress(
        TextColumn("checking flows"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failing"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not show_progress,
        transient=True,
    )
    reports: dict[int, FlowReport] = {}
    with progress, BlockingPool(config.file.scheduler.blocking_workers) as blocking:
        task = progress.add_task("flows", total=len(jobs) + len(sweeps), failed=0)
        failed = 0
        networks: dict[int, NetworkReport] = {}

        async def sweep_once(index: int, sweep: Sweep) -> None:
            nonlocal failed
            tally = await run_sweep(sweep, slots, blocking=blocking)
            networks[index] = NetworkReport(sweep, source, tally)
            failed += not networks[index].ok
            progress.update(task, advance=1, failed=failed)

        async def run(index: int, job: Job) -> None:
            nonlocal failed
            async with host_limits[job.target.host], slots:
                outcome = await run_check(
                    job.spec, job.target, job.settings, job.timeout, blocking=blocking
                )
            template = config.templates.get(job.flow_id)
            description = template.description if template is not None else ""
            reports[index] = FlowReport(job, source, outcome.result, description)
            failed += not outcome.result.ok
            progress.update(task, advance=1, failed=failed)

        async with asyncio.TaskGroup() as group:
            for index, job in enumerate(jobs):
                group.create_task(run(index, job))
            for index, sweep in enumerate(sweeps):
                group.create_task(sweep_once(index, sweep))
    return (
        [reports[index] for index in range(len(jobs))],
        [networks[index] for index in range(len(sweeps))],
    )


def _validate(args: argparse.Namespace) -> int:
    """Both files are checked before anything is reported, so one run lists every problem."""
    problems: list[ConfigProblem] = []
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        problems += exc.problems
    if args.web_config_file:
        try:
            web_config = load_web_config(args.web_config_file)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    hosts = sum(sweep.network.host_count for sweep in config.sweeps)
    swept = f", {len(config.sweeps)} swept networks ({hosts} hosts)" if config.sweeps else ""
    print(
        f"{args.file}: valid, source {config.source.value}, {len(config.jobs)} (flow, target) "
        f"pairs{swept}"
    )
    if args.web_config_file:
        tls = "on" if web_config.ssl_context is not None else "off"
        print(f"{args.web_config_file}: valid, TLS {tls}, {len(web_config.users)} basic auth users")
    return EXIT_OK


def _catalogue(args: argparse.Namespace) -> int:
    if args.format == "json":
        document = [
            {
                "id": flow.id,
                "transport": flow.transport.value,
                "port": flow.port,
                "port_range": list(flow.port_range) if flow.port_range else None,
                "from": flow.source.value,
                "to": flow.destination.value,
                "check": flow.check,
                "optional": flow.optional,
                "reason": flow.reason,
                "footnote": flow.footnote,
                "erratum": flow.erratum,
                "table_rows": [row.number for row in flow.rows],
            }
            for flow in FLOWS
        ]
        print(json.dumps(document, indent=2))
        return EXIT_OK
    table = Table(title="Certero port table (26 flows from 27 rows)")
    for column in ("Id", "Proto/port", "From → to", "Check", "Rows", "Reason", "Notes"):
        table.add_column(column, overflow="fold")
    for flow in FLOWS:
        check = flow.check
        notes = " ".join(
            part
            for part in (flow.footnote, flow.erratum, "Optional." if flow.optional else "")
            if part
        )
        table.add_row(
            flow.id,
            f"{flow.transport.value}/{flow.port_text}",
            f"{flow.source.value} → {flow.destination.value}",
            check,
            ",".join(str(row.number) for row in flow.rows),
            flow.reason,
            notes,
        )
    Console(width=200).print(table)
    return EXIT_OK
