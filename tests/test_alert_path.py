"""The whole alert path, with real processes: the exporter checks flows, Prometheus scrapes it and
evaluates the shipped rules, Alertmanager routes what fires. A flow's peer is stopped: the alert
reaches Alertmanager's API with the flow's labels and annotations and is delivered to the pager
receiver; the peer comes back: the alert resolves. Every expression of the shipped rule file is
then evaluated against that Prometheus."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import yaml

from alerts import generate
from tests.peers.alertmanager import Alertmanager, run_alertmanager
from tests.peers.exporter import run_exporter
from tests.peers.nginx import Nginx
from tests.peers.ports import free_tcp_port, wait_for_tcp
from tests.peers.procs import stop_process
from tests.peers.prometheus import Prometheus, run_prometheus
from tests.test_alerts import local_alertmanager_config

JOB = "certero-flow"  # the job name of config/prometheus-scrape.yml
FLOW = "app_database"
WAIT_S = 30.0
# Seconds instead of minutes, so the path runs in the test's time; every other setting is the
# shipped one.
SHORT_WINDOWS = ("flow_down_for=2s",)
# Accept connections and close them: a TCP peer that is up.
LISTENER_CODE = (
    "import socket,sys\n"
    "s=socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind(('127.0.0.1',int(sys.argv[1])))\n"
    "s.listen(16)\n"
    "while True:\n"
    "    s.accept()[0].close()\n"
)

T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], what: str, timeout_s: float = WAIT_S) -> T:
    """Poll `condition()` until it returns something other than None or empty."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.2)


class Listener:
    """A TCP peer on 127.0.0.1:port that the test stops and starts again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Listen, and return once connections are accepted."""
        self.proc = subprocess.Popen([sys.executable, "-c", LISTENER_CODE, str(self.port)])
        wait_for_tcp("127.0.0.1", self.port, 10.0, proc=self.proc)

    def stop(self) -> None:
        """Stop listening: connections are refused from now on."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@contextmanager
def tcp_listener(port: int) -> Iterator[Listener]:
    """A started listener, stopped at the end of the block whatever happened."""
    listener = Listener(port)
    listener.start()
    try:
        yield listener
    finally:
        listener.stop()


class Webhook:
    """Alertmanager's webhook notifications, received on loopback."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length", "0")), 1 << 20)
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def about(self, receiver: str, status: str) -> list[dict[str, Any]]:
        """Notifications to `receiver` with `status` that name the flow under test."""
        return [
            note
            for note in list(self.notifications)
            if note["receiver"] == receiver
            and note["status"] == status
            and any(alert["labels"].get("flow") == FLOW for alert in note["alerts"])
        ]


@contextmanager
def webhook() -> Iterator[Webhook]:
    """A webhook receiver thread for the block's duration."""
    hook = Webhook()
    hook.thread.start()
    try:
        yield hook
    finally:
        hook.server.shutdown()
        hook.server.server_close()


def write_exporter_config(path: Path, nginx: Nginx, port: int) -> None:
    """The flow under test (TCP to the listener, critical), an HTTPS flow (certificate expiry)
    and a swept loopback network (network series); the other endpoint flows are off."""
    off = ("ssh_endpoints", "snmp_endpoints", "netbios_ns_endpoints", "smb_endpoints",
           "netbios_ssn_endpoints")  # fmt: skip
    flows: dict[str, Any] = {flow: {"enabled": False} for flow in off}
    flows["https_app_relay"] = {
        "ca_file": str(nginx.pki.ca_cert),
        "path": "/health",
        "body_regex": "flow-ok",
    }
    config = {
        "source": "endpoint_server",
        "defaults": {"interval": "1s", "timeout": "1s"},
        "scheduler": {"startup_spread": "1s"},
        "targets": {
            "application_server": [f"localhost:{nginx.valid_port}"],
            "endpoint_networks": ["127.0.0.0/30"],
        },
        "flows": flows,
        "extra_flows": [
            {
                "id": FLOW,
                "check": "tcp",
                "target": "127.0.0.1",
                "port": port,
                "severity": "critical",
                "description": "the application's database listener",
            }
        ],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


def query(prometheus: Prometheus, expression: str) -> list[dict[str, Any]]:
    """Evaluate an instant query; an invalid expression fails with Prometheus's error."""
    try:
        result: list[dict[str, Any]] = prometheus.api("query", query=expression)["result"]
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{expression!r}: {error.read().decode()}") from error
    return result


def flow_alerts(alertmanager: Alertmanager) -> list[dict[str, Any]]:
    """Alertmanager's unresolved CerteroFlowDown alerts of the flow under test."""
    return [
        alert
        for alert in alertmanager.alerts()
        if alert["labels"].get("alertname") == "CerteroFlowDown"
        and alert["labels"].get("flow") == FLOW
    ]


def test_a_broken_flow_pages_and_resolves(tmp_path: Path, nginx: Nginx) -> None:
    """Stopping the flow's peer fires CerteroFlowDown in Alertmanager with the flow's labels and
    annotations and pages; restarting it resolves the alert. Every shipped rule expression is
    valid against the real series, and none is empty where the series exist."""
    port = free_tcp_port()
    config_path = tmp_path / "flows.yaml"
    write_exporter_config(config_path, nginx, port)
    rules = tmp_path / "rules.yml"
    generate.main([*(f"--set={item}" for item in SHORT_WINDOWS), f"--output={rules}"])
    with webhook() as hook, tcp_listener(port) as listener:
        am_config = local_alertmanager_config(hook.url)
        # Notify at once and on every change, instead of the example's 30 s and 5 m.
        am_config["route"]["routes"][0].update(group_wait="1s", group_interval="1s")
        with (
            run_exporter(config_path, tmp_path) as exporter,
            run_alertmanager(tmp_path / "alertmanager", am_config) as alertmanager,
            run_prometheus(
                tmp_path / "prometheus",
                [
                    {
                        "job_name": JOB,
                        "static_configs": [
                            {"targets": [urllib.parse.urlsplit(exporter.base_url).netloc]}
                        ],
                    }
                ],
                rule_files=[rules],
                alertmanagers=[alertmanager.address],
            ) as prometheus,
        ):
            wait_for(
                lambda: query(prometheus, f'certero_flow_up{{flow="{FLOW}"}} == 1'),
                "the flow passing in Prometheus",
            )
            assert flow_alerts(alertmanager) == []

            listener.stop()
            (alert,) = wait_for(lambda: flow_alerts(alertmanager), "CerteroFlowDown firing")
            assert alert["status"]["state"] == "active"
            labels = alert["labels"]
            assert labels == {
                "alertname": "CerteroFlowDown",
                "severity": "critical",
                "flow": FLOW,
                "source": "endpoint_server",
                "target": f"127.0.0.1:{port}",
                "check": "tcp",
                "from": "endpoint_server",
                "to": "custom",
                "protocol": "tcp",
                "port": str(port),
                "optional": "false",
                "reason": "the application's database listener",
                "job": JOB,
                "instance": urllib.parse.urlsplit(exporter.base_url).netloc,
            }
            annotations = alert["annotations"]
            assert annotations["description"] == (
                f"Flow {FLOW} (endpoint_server → custom, tcp {port}) from endpoint_server to "
                f"127.0.0.1:{port} has failed its tcp check for more than 2s; last result: "
                "refused. The flow is needed for: the application's database listener. "
                f"Firewall rule: allow tcp {port} from endpoint_server to custom."
            )
            assert annotations["runbook_url"] == "docs/runbooks.md#certeroflowdown"
            assert annotations["summary"].startswith("A network flow is failing")
            wait_for(lambda: hook.about("certero-pager", "firing"), "the page")
            # While the flow is down the shipped (5 m) rule's expression already holds.
            down_rule = next(r for r in shipped_rules() if r.get("alert") == "CerteroFlowDown")
            assert query(prometheus, down_rule["expr"]) != []

            listener.start()
            wait_for(lambda: not flow_alerts(alertmanager), "CerteroFlowDown resolved")
            wait_for(lambda: hook.about("certero-pager", "resolved"), "the resolved page")

            check_every_shipped_expression(prometheus)


def shipped_rules() -> list[dict[str, Any]]:
    """Every rule of the committed rule file."""
    document = yaml.safe_load(generate.RULE_FILE.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def check_every_shipped_expression(prometheus: Prometheus) -> None:
    """Every expression of the shipped rules is valid PromQL over the real series; every
    recording rule has a result; every metric a rule reads is one the exporter really serves.

    Alert expressions may rightly be empty here (nothing else is broken), so for them the test
    asks for valid PromQL and for the series they read.
    """
    names: set[str] = set()
    for rule in shipped_rules():
        result = query(prometheus, rule["expr"])
        if "record" in rule:
            assert result, f"recording rule {rule['record']} is empty"
        names |= set(re.findall(r"\b(certero_flow_[a-z_]+|up)\b(?![:(])", rule["expr"]))
    missing = {name for name in names if not query(prometheus, f"count({name})")}
    assert missing == set()
    assert {"certero_flow_info", "certero_flow_latency_seconds_bucket"} <= names
