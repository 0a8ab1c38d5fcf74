"""Nagios plugin mode: range semantics, states, the status line, and a real Nagios Core running it."""

from __future__ import annotations

import contextlib
import math
import re
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import nagiosplugin
import pytest

from exporter.checks import CHECKS, Target
from exporter.config import Job
from exporter.nagios import (
    MAX_TARGETS_NAMED,
    MAX_TARGETS_WITH_PERFDATA,
    Range,
    State,
    Thresholds,
    judge,
    status_line,
)
from exporter.nagios import main as nagios_main
from exporter.result import CheckResult, Phase, Result
from tests.peers.exporter import run_cli as cli
from tests.peers.nagios import run_nagios
from tests.peers.nginx import Nginx
from tests.peers.ports import free_tcp_port
from tests.peers.sshd import Sshd

REPO = Path(__file__).resolve().parent.parent
SLOW_BANNER_DELAY_S = 1.0  # the slow peer's delay: above -w 0.5, far below -c 10
NOW = 1_800_000_000.0

# (range, value, alerts): the Nagios Plugin Development Guidelines' examples and the edges.
RANGE_CASES = [
    ("10", -0.1, True),
    ("10", 0, False),
    ("10", 10, False),
    ("10", 10.5, True),
    ("10:", 9.9, True),
    ("10:", 10, False),
    ("10:", 1e9, False),
    ("~:10", -1e9, False),
    ("~:10", 10, False),
    ("~:10", 10.1, True),
    ("10:20", 9, True),
    ("10:20", 10, False),
    ("10:20", 20, False),
    ("10:20", 21, True),
    ("@10:20", 9, False),
    ("@10:20", 10, True),
    ("@10:20", 15, True),
    ("@10:20", 20, True),
    ("@10:20", 20.5, False),
    ("0.5", 0.49, False),
    ("0.5", 0.51, True),
    (":3", 4, True),
    ("", 1e9, False),
    ("", -1, True),
    ("@", 0, True),
    ("@~:0", -1, True),
    ("-5:-1", -3, False),
    ("-5:-1", 0, True),
]
CANONICAL = [("10", "10"), ("10:", "10:"), ("~:10", "~:10"), ("10:20", "10:20")]
CANONICAL += [("@10:20", "@10:20"), ("0:10", "10"), ("@0:10", "@10"), ("~:", "~:")]
INVALID_RANGES = ["20:10", "abc", "1:2:3", "1e3", "~", "@@1", "10:x", "5:~"]


@pytest.mark.parametrize(("spec", "value", "alerts"), RANGE_CASES)
def test_range_alerts_like_nagiosplugin(spec: str, value: float, alerts: bool) -> None:
    """Each range alerts exactly where the guidelines say and where nagiosplugin.Range does."""
    assert Range.parse(spec).alerts(value) is alerts
    assert nagiosplugin.Range(spec).match(value) is not alerts


@pytest.mark.parametrize(("spec", "canonical"), CANONICAL)
def test_range_prints_the_canonical_form(spec: str, canonical: str) -> None:
    """Perfdata carries the canonical range text, the same as nagiosplugin prints."""
    assert str(Range.parse(spec)) == canonical == str(nagiosplugin.Range(spec))


@pytest.mark.parametrize("spec", INVALID_RANGES)
def test_invalid_ranges_are_refused_like_nagiosplugin(spec: str) -> None:
    """A range nagiosplugin refuses is refused here too, with a reason naming the range."""
    with pytest.raises(ValueError, match="range"):
        Range.parse(spec)
    with pytest.raises(ValueError):  # noqa: PT011 - nagiosplugin raises bare ValueErrors
        nagiosplugin.Range(spec)


def _job(flow_id: str = "ldaps_dc", host: str = "10.0.0.1", port: int = 636) -> Job:
    return Job(
        flow_id, "tcp", CHECKS["tcp"], Target(host, port), CHECKS["tcp"].settings_model(), 60, 5
    )


def _result(
    result: Result = Result.OK,
    seconds: float = 0.012,
    detail: str = "accepted",
    chain_expiry: float | None = None,
) -> CheckResult:
    phases = {Phase.CONNECT: 0.002, Phase.TLS: 0.008}
    return CheckResult(result, seconds, detail, phases, tls_chain_expiry_seconds=chain_expiry)


# (check result, thresholds, expected state, words of the line)
STATE_CASES = [
    (_result(), Thresholds(), State.OK, "ldaps_dc 10.0.0.1:636 ok in 12 ms"),
    (_result(seconds=0.7), Thresholds(Range.parse("0.5"), Range.parse("1")), State.WARNING,
     "latency 0.7s outside 0:0.5 (warning)"),
    (_result(seconds=1.5), Thresholds(Range.parse("0.5"), Range.parse("1")), State.CRITICAL,
     "latency 1.5s outside 0:1 (critical)"),
    (_result(seconds=0.015), Thresholds(Range.parse("@0.01:0.02")), State.WARNING,
     "inside 0.01:0.02 (warning)"),
    (_result(chain_expiry=NOW + 20 * 86400), Thresholds(cert_warn_days=30, cert_crit_days=7),
     State.WARNING, "certificate chain expires in 20.0 days (< 30)"),
    (_result(chain_expiry=NOW + 2 * 86400), Thresholds(cert_warn_days=30, cert_crit_days=7),
     State.CRITICAL, "certificate chain expires in 2.0 days (< 7)"),
    (_result(chain_expiry=NOW + 90 * 86400), Thresholds(cert_warn_days=30, cert_crit_days=7),
     State.OK, "ok in 12 ms"),
    (_result(Result.REFUSED, detail="connection refused"), Thresholds(), State.CRITICAL,
     "ldaps_dc 10.0.0.1:636 refused: connection refused"),
    (_result(Result.TLS_ERROR, detail="certificate has expired"), Thresholds(), State.CRITICAL,
     "tls_error: certificate has expired"),
    (_result(Result.EXPORTER_ERROR, detail="no worker thread"), Thresholds(), State.UNKNOWN,
     "exporter_error: no worker thread"),
]  # fmt: skip


@pytest.mark.parametrize(("result", "thresholds", "state", "words"), STATE_CASES)
def test_state_and_status_line(
    result: CheckResult, thresholds: Thresholds, state: State, words: str
) -> None:
    """Class first (exporter_error UNKNOWN, other failures CRITICAL), then latency and cert days."""
    verdict = judge(_job(), result, thresholds, 5, now=NOW)
    worst, line = status_line("ldaps_dc", [verdict], thresholds)
    assert (verdict.state, worst) == (state, state)
    assert line.startswith(f"CERTERO FLOW {state.name} - ")
    assert words in line.split(" | ")[0]


def test_perfdata_has_total_phases_thresholds_and_cert_days() -> None:
    """`'label'=value[UOM];warn;crit;min;max` for total, each phase and the chain's days left."""
    thresholds = Thresholds(Range.parse("~:0.5"), Range.parse("@1:2"), 30, 7)
    verdict = judge(_job(), _result(chain_expiry=NOW + 45 * 86400), thresholds, 5, now=NOW)
    _, line = status_line("ldaps_dc", [verdict], thresholds)
    perf = line.split(" | ")[1]
    assert perf == (
        "'time'=0.012s;~:0.5;@1:2;0;5 'connect'=0.002s;;;0; 'tls'=0.008s;;;0; "
        "'cert_days'=45;30:;7:;;"
    )


def test_several_targets_worst_wins_and_perfdata_names_each() -> None:
    """Without --target every target counts: one refused of two is CRITICAL, labels carry it."""
    thresholds = Thresholds()
    verdicts = [
        judge(_job(host="10.0.0.1"), _result(), thresholds, 5, now=NOW),
        judge(_job(host="10.0.0.2"), _result(Result.TIMEOUT, 5, "no answer"), thresholds, 5),
    ]
    state, line = status_line("ldaps_dc", verdicts, thresholds)
    assert state is State.CRITICAL
    summary, perf = line.split(" | ")
    assert summary == (
        "CERTERO FLOW CRITICAL - ldaps_dc: 1 of 2 targets OK; 10.0.0.2:636 timeout: no answer"
    )
    assert "'10.0.0.1:636 time'=0.012s;;;0;5" in perf
    assert "'10.0.0.2:636 time'=5s;;;0;5" in perf


def test_a_flow_with_many_targets_keeps_the_line_bounded() -> None:
    """Thirty refused targets: ten are named, the rest counted, perfdata for twenty."""
    verdicts = [
        judge(_job(host=f"10.0.0.{index}"), _result(Result.REFUSED, detail="refused"),
              Thresholds(), 5)
        for index in range(30)
    ]  # fmt: skip
    state, line = status_line("ldaps_dc", verdicts, Thresholds())
    summary, perf = line.split(" | ")
    assert state is State.CRITICAL
    assert summary.count("refused: refused") == MAX_TARGETS_NAMED
    assert summary.endswith(f"; and {30 - MAX_TARGETS_NAMED} more")
    assert perf.count(" time'=") == MAX_TARGETS_WITH_PERFDATA


def test_a_pipe_in_a_detail_does_not_start_the_perfdata() -> None:
    """A detail quoting the peer cannot inject perfdata: `|` in the text is replaced."""
    verdict = judge(_job(), _result(Result.PROTOCOL_MISMATCH, detail="sent 'a|b'"), Thresholds(), 5)
    _, line = status_line("ldaps_dc", [verdict], Thresholds())
    assert line.count("|") == 1


@pytest.fixture
def plugin_config(tmp_path: Path, sshd: Sshd) -> Path:
    """ssh_hmc answered by a real sshd, a closed port, and the flows of a slow peer."""
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
targets:
  ibm_hmc: ["127.0.0.1:{sshd.port}", "127.0.0.1:{free_tcp_port()}"]
extra_flows:
  - {{id: hmc_closed, check: tcp, target: "127.0.0.1:{free_tcp_port()}"}}
""",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--flow", "no_such_flow"], "no configured pairs for flow no_such_flow"),
        (["--flow", "ssh_hmc", "-w", "20:10"], "bad arguments: argument -w/--warning: range"),
        (["--flow", "ssh_hmc", "--target", "10.9.9.9"], "flow ssh_hmc has no target 10.9.9.9"),
        (["--flow", "ssh_hmc", "--timeout", "0"], "bad arguments: argument --timeout"),
        (["--flow", "ssh_hmc", "--cert-warn", "soon"], "bad arguments: argument --cert-warn"),
        (["-w", "1"], "bad arguments: the following arguments are required: --flow"),
    ],
)
def test_bad_invocations_are_unknown(plugin_config: Path, args: list[str], words: str) -> None:
    """Unknown flow, unknown target and bad arguments exit 3 with an UNKNOWN line on stdout."""
    run = cli("nagios", "--config", str(plugin_config), *args)
    assert run.returncode == 3, run.stderr
    assert run.stdout.startswith("CERTERO FLOW UNKNOWN - ")
    assert words in run.stdout


def test_nagios_after_global_options_still_answers_unknown(plugin_config: Path) -> None:
    """`--log-level debug nagios ...` reaches the plugin's parser: a bad range is UNKNOWN (3)."""
    run = cli("--log-level", "debug", "nagios", "--config", str(plugin_config), "-c", "x")
    assert run.returncode == 3
    assert run.stdout.startswith("CERTERO FLOW UNKNOWN - bad arguments: argument -c/--critical")
    assert "nagios" in cli("--help").stdout


def test_console_script_entry_point(
    plugin_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check_certero_flow` (pyproject's exporter.nagios:main) prints one line and returns."""
    code = nagios_main(["--config", str(plugin_config), "--flow", "hmc_closed"])
    out = capsys.readouterr().out
    assert code == 2
    assert out.count("\n") == 1
    assert out.startswith("CERTERO FLOW CRITICAL - hmc_closed 127.0.0.1:")


def test_an_invalid_config_is_unknown(tmp_path: Path) -> None:
    """A config that does not load is the plugin's fault, not the flow's: UNKNOWN."""
    path = tmp_path / "bad.yaml"
    path.write_text("flows: {ssh_hmc: {enabeld: false}}\n", encoding="utf-8")
    run = cli("nagios", "--config", str(path), "--flow", "ssh_hmc")
    assert run.returncode == 3
    assert run.stdout.startswith("CERTERO FLOW UNKNOWN - invalid config: ")


def test_target_picks_one_and_all_targets_otherwise(plugin_config: Path, sshd: Sshd) -> None:
    """--target checks only that target (OK); without it the closed second target makes it
    CRITICAL and the line names that target."""
    picked = cli("nagios", "--config", str(plugin_config), "--flow", "ssh_hmc", "--target",
                 f"127.0.0.1:{sshd.port}")  # fmt: skip
    assert picked.returncode == 0, picked.stdout
    assert re.match(rf"CERTERO FLOW OK - ssh_hmc 127\.0\.0\.1:{sshd.port} ok in ", picked.stdout)
    every = cli("nagios", "--config", str(plugin_config), "--flow", "ssh_hmc")
    assert every.returncode == 2, every.stdout
    assert "1 of 2 targets OK" in every.stdout
    assert "refused: connection refused" in every.stdout
    # the remediation follows the class: the firewall rule of the Endpoint Server → HMC flow
    assert "must allow TCP " in every.stdout
    assert "from the Endpoint Server to the IBM HMC" in every.stdout
    assert f"'127.0.0.1:{sshd.port} handshake'=" in every.stdout


def test_cert_days_of_a_tls_flow(tmp_path: Path, nginx: Nginx) -> None:
    """A TLS flow reports the chain's days left; --cert-warn above them gives WARNING."""
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
targets: {{application_server: ["localhost:{nginx.valid_port}"]}}
flows: {{https_app_relay: {{ca_file: {nginx.pki.ca_cert}, path: /health}}}}
""",
        encoding="utf-8",
    )
    base = ["nagios", "--config", str(path), "--flow", "https_app_relay"]
    ok = cli(*base, "--cert-warn", "1", "--cert-crit", "0")
    assert ok.returncode == 0, ok.stdout
    days = float(re.search(r"'cert_days'=([0-9.]+);1:;0:;;", ok.stdout).group(1))  # type: ignore[union-attr]
    assert days > 1
    warned = cli(*base, "--cert-warn", str(math.ceil(days) + 1))
    assert warned.returncode == 1, warned.stdout
    assert "certificate chain expires in" in warned.stdout


class SlowSshPeer:
    """Accepts, waits SLOW_BANNER_DELAY_S, then sends an SSH identification: a slow service.

    The wait ends early when the client hangs up or the peer is closed; each connection gets a
    thread, and the listener stops with the test.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            if self.closed.wait(SLOW_BANNER_DELAY_S):
                return
            try:
                connection.sendall(b"SSH-2.0-OpenSSH_9.2p1 SlowPeer\r\n")
                connection.settimeout(5)
                connection.recv(4096)  # until the client closes
            except OSError:
                return

    def close(self) -> None:
        self.closed.set()
        with contextlib.suppress(OSError):  # wakes the blocked accept(); close() does not
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def slow_ssh_peer() -> Iterator[SlowSshPeer]:
    """A slow SSH identification on a free loopback port for one test."""
    peer = SlowSshPeer()
    yield peer
    peer.close()


def _plugin_symlink(directory: Path) -> Path:
    """`check_certero_flow` as a symlink to a launcher of the command line's `main`: proves the
    program name alone selects plugin mode, as a symlink to the console script does."""
    launcher = directory / "certero-flow-exporter"
    launcher.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from exporter.cli import main\n"
        "sys.exit(main())\n",
        encoding="utf-8",
    )
    launcher.chmod(0o755)
    plugin = directory / "check_certero_flow"
    plugin.symlink_to(launcher)
    return plugin


def test_real_nagios_records_ok_critical_and_warning(
    tmp_path: Path, sshd: Sshd, slow_ssh_peer: SlowSshPeer
) -> None:
    """Nagios Core runs check_certero_flow for an ok, a broken and a slow flow; its status file
    shows OK, CRITICAL and WARNING with the plugin's output and perfdata."""
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
targets:
  ibm_hmc: ["127.0.0.1:{sshd.port}"]
extra_flows:
  - {{id: proxy_closed, check: tcp, target: "127.0.0.1:{free_tcp_port()}"}}
  - {{id: hmc_slow, check: ssh, target: "127.0.0.1:{slow_ssh_peer.port}"}}
""",
        encoding="utf-8",
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    plugin = f"{_plugin_symlink(bin_dir)} --config {config}"
    services = {
        "flow_ok": f"{plugin} --flow ssh_hmc -w 5 -c 10",
        "flow_broken": f"{plugin} --flow proxy_closed",
        "flow_slow": f"{plugin} --flow hmc_slow -w 0.5 -c 10 --timeout 15",
    }
    with run_nagios(tmp_path / "nagios", services) as nagios:
        nagios.force_checks(list(services))
        status = nagios.wait_for_results(list(services))
    ok, broken, slow = status["flow_ok"], status["flow_broken"], status["flow_slow"]
    assert ok["current_state"] == "0", ok
    assert ok["plugin_output"].startswith(f"CERTERO FLOW OK - ssh_hmc 127.0.0.1:{sshd.port} ok")
    assert re.match(r"'time'=[0-9.]+s;5;10;0;5 'connect'=[0-9.]+s;;;0; 'handshake'=",
                    ok["performance_data"]), ok  # fmt: skip
    assert broken["current_state"] == "2", broken
    assert broken["plugin_output"].startswith("CERTERO FLOW CRITICAL - proxy_closed 127.0.0.1:")
    assert "refused: connection refused" in broken["plugin_output"]
    assert broken["performance_data"].startswith("'time'=")
    assert slow["current_state"] == "1", slow
    assert slow["plugin_output"].startswith("CERTERO FLOW WARNING - hmc_slow ")
    assert "outside 0:0.5 (warning)" in slow["plugin_output"]
    seconds = float(re.match(r"'time'=([0-9.]+)s;0.5;10;0;15 ", slow["performance_data"]).group(1))  # type: ignore[union-attr]
    assert SLOW_BANNER_DELAY_S <= seconds < 10
