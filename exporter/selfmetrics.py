"""The exporter's metrics about itself, in a registry of its own (never the global one)."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from exporter import __version__
from exporter.blocking import BlockingPool


class ExporterMetrics:
    """Counters and gauges the scheduler and web server update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.checks = Counter(
            "certero_flow_exporter_checks",
            "Checks run, by check and result class.",
            ["check", "result"],
            registry=self.registry,
        )
        self._check_children: dict[tuple[str, str], Counter] = {}
        self.scheduler_lag = Histogram(
            "certero_flow_exporter_scheduler_lag_seconds",
            "How late a check started after it was due (waiting for concurrency slots).",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "certero_flow_exporter_checks_in_flight",
            "Checks running now.",
            registry=self.registry,
        )
        self.pairs = Gauge(
            "certero_flow_exporter_scheduled_pairs",
            "(flow, target) pairs scheduled by the current config.",
            registry=self.registry,
        )
        self.skipped_runs = Counter(
            "certero_flow_exporter_skipped_runs",
            "Runs skipped because the previous run of the same pair had not finished.",
            registry=self.registry,
        )
        self.probe_rejected = Counter(
            "certero_flow_exporter_probe_rejected",
            "/probe requests answered without a result: refused by the allow-list (policy, "
            "403), probe.concurrency full (concurrency, 503), or the exporter could not run "
            "the check, e.g. no free file descriptors (exporter_error, 503).",
            ["reason"],
            registry=self.registry,
        )
        for reason in ("policy", "concurrency", "exporter_error"):
            self.probe_rejected.labels(reason)
        self.check_defects = Counter(
            "certero_flow_exporter_check_defects",
            "Check runs that raised an error no mapping knows (a defect of the check, logged "
            "once per check and error type); each became a service_error result.",
            ["check"],
            registry=self.registry,
        )
        self.blocking_workers_busy = Gauge(
            "certero_flow_exporter_blocking_workers_busy",
            "Worker threads running a blocking library call, including calls whose check "
            "already timed out (they return at their own socket timeout).",
            registry=self.registry,
        )
        self.blocking_workers = Gauge(
            "certero_flow_exporter_blocking_workers",
            "Worker threads for blocking library calls (scheduler.blocking_workers).",
            registry=self.registry,
        )
        self.reload_success = Gauge(
            "certero_flow_exporter_config_last_reload_successful",
            "1 if the last config load or reload succeeded.",
            registry=self.registry,
        )
        self.reload_timestamp = Gauge(
            "certero_flow_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load or reload.",
            registry=self.registry,
        )
        build = Gauge(
            "certero_flow_exporter_build_info",
            "Version of the exporter and of Python; always 1.",
            ["version", "python_version"],
            registry=self.registry,
        )
        build.labels(__version__, platform.python_version()).set(1)

    def count_check(self, check: str, result: str) -> None:
        """Count one finished check (label children cached: this runs for every check)."""
        child = self._check_children.get((check, result))
        if child is None:
            child = self._check_children[(check, result)] = self.checks.labels(check, result)
        child.inc()

    def watch_blocking_pool(self, pool: BlockingPool) -> None:
        """Report the pool's size and busy workers, read at every scrape."""
        self.blocking_workers.set(pool.workers)
        self.blocking_workers_busy.set_function(lambda: pool.busy)

    def render(self) -> bytes:
        """The self-metrics in the text format."""
        return generate_latest(self.registry)
