"""The command line: one-shot `check` reports, `validate` and `catalogue`."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import bcrypt
import pytest

from tests.peers.exporter import run_cli as cli
from tests.peers.nginx import Nginx
from tests.peers.pki import Pki
from tests.peers.ports import free_tcp_port
from tests.peers.sshd import Sshd

TESTDATA = Path(__file__).parent / "testdata"


@pytest.fixture
def config(tmp_path: Path, sshd: Sshd, nginx: Nginx) -> Path:
    """Two flows that pass and one that fails (a closed port)."""
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
targets:
  ibm_hmc: ["127.0.0.1:{sshd.port}"]
  application_server: ["localhost:{nginx.valid_port}"]
flows:
  https_app_relay: {{ca_file: {nginx.pki.ca_cert}, path: /health}}
extra_flows:
  - {{id: proxy_reachable, check: tcp, target: "127.0.0.1:{free_tcp_port()}"}}
""",
        encoding="utf-8",
    )
    return path


def test_check_json_reports_every_pair_and_fails(config: Path, sshd: Sshd) -> None:
    """--format json is a valid document with one entry per pair; a failing flow exits 1."""
    run = cli("check", "--config", str(config), "--format", "json")
    assert run.returncode == 1, run.stderr
    document = json.loads(run.stdout)
    assert document["summary"] == {"total": 3, "ok": 2, "failed": 1}
    flows = {entry["flow"]: entry for entry in document["flows"]}
    assert flows["ssh_hmc"]["result"] == "ok"
    assert flows["ssh_hmc"]["peer"]["product"] == "OpenSSH"
    assert flows["ssh_hmc"]["target"] == f"127.0.0.1:{sshd.port}"
    assert flows["https_app_relay"]["tls_cert_expiry_seconds"] > 0
    assert flows["proxy_reachable"]["result"] == "refused"
    assert "connection refused" in flows["proxy_reachable"]["detail"]
    assert flows["proxy_reachable"]["destination"] == "custom"


def test_check_junit_is_valid_xml_with_failures(config: Path) -> None:
    """--format junit gives one testcase per pair and a failure element for the broken flow."""
    run = cli("check", "--config", str(config), "--format", "junit")
    assert run.returncode == 1
    root = ET.fromstring(run.stdout)
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")
    failures = root.findall(".//testcase/failure")
    assert len(failures) == 1
    assert failures[0].get("type") == "refused"


def test_check_flow_filter_and_success_exit(config: Path) -> None:
    """--flow limits the run; when every selected flow is ok the exit code is 0."""
    run = cli(
        "check",
        "--config",
        str(config),
        "--flow",
        "ssh_hmc",
        "--flow",
        "https_app_relay",
        "--format",
        "json",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert {entry["flow"] for entry in json.loads(run.stdout)["flows"]} == {
        "ssh_hmc",
        "https_app_relay",
    }
    unknown = cli("check", "--config", str(config), "--flow", "no_such_flow")
    assert unknown.returncode == 2
    assert "no_such_flow" in unknown.stderr


def test_check_table_names_the_failing_flow(config: Path) -> None:
    """The human table lists every pair and a summary line."""
    run = cli("check", "--config", str(config))
    assert run.returncode == 1
    assert "proxy_reachable" in run.stdout
    assert "2/3 flows ok, 1 failing" in run.stdout


def test_validate_reports_typo_and_syntax_errors_with_line() -> None:
    """validate names file, line and field for a typo, and the line for a YAML syntax error."""
    typo = cli("validate", str(TESTDATA / "invalid-typo-field.yaml"))
    assert typo.returncode == 1
    assert (
        f"{TESTDATA / 'invalid-typo-field.yaml'}:3: defaults.intervall: unknown field"
        in typo.stderr
    )
    syntax = cli("validate", str(TESTDATA / "invalid-yaml-syntax.yaml"))
    assert syntax.returncode == 1
    assert f"{TESTDATA / 'invalid-yaml-syntax.yaml'}:4: YAML syntax error" in syntax.stderr


def test_validate_reports_bad_targets_with_line() -> None:
    """validate refuses an over-long DNS label and non-ASCII port digits, one located line each."""
    label = cli("validate", str(TESTDATA / "invalid-long-label.yaml"))
    assert label.returncode == 1
    assert (
        f"{TESTDATA / 'invalid-long-label.yaml'}:4: targets.ibm_hmc[1]: "
        "'" + "a" * 64 + ".corp.example:22' is not a valid host name or address: "
        "label 1 is 64 characters long (DNS allows at most 63)"
    ) in label.stderr
    digits = cli("validate", str(TESTDATA / "invalid-port-digits.yaml"))
    assert digits.returncode == 1
    assert digits.stderr.splitlines()[1:] == [
        f"{TESTDATA / 'invalid-port-digits.yaml'}:4: targets.ibm_hmc[1]: "
        "'hmc2.corp.example:\u0662\u0662': port must be a number from 1 to 65535",
        f"{TESTDATA / 'invalid-port-digits.yaml'}:6: targets.endpoint_networks[0]: "
        "'10.0.0.1:\u00b2': port must be a number from 1 to 65535",
    ]
    assert "Traceback" not in label.stderr + digits.stderr


def test_validate_lists_the_problems_of_both_files_at_once() -> None:
    """With --web.config.file, validate reports the config's and the web config's problems."""
    run = cli(
        "validate",
        str(TESTDATA / "invalid-typo-field.yaml"),
        "--web.config.file",
        str(TESTDATA / "web" / "invalid-unknown-key.yml"),
    )
    assert run.returncode == 1
    located = [line.split(": ")[0:2] for line in run.stderr.splitlines()[1:]]
    assert located == [
        [f"{TESTDATA / 'invalid-typo-field.yaml'}:3", "defaults.intervall"],
        [f"{TESTDATA / 'web' / 'invalid-unknown-key.yml'}:4", "tls_server_config.min_versoin"],
    ]


def test_validate_accepts_a_web_config_and_says_what_it_turns_on(pki: Pki, tmp_path: Path) -> None:
    """A valid web config is loaded as serve would load it: TLS on, users counted."""
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"scrape", bcrypt.gensalt(4)).decode()
    web.write_text(
        f"tls_server_config: {{cert_file: {pki.valid.cert}, key_file: {pki.valid.key}}}\n"
        f"basic_auth_users: {{prometheus: '{hashed}'}}\n"
    )
    example = Path(__file__).parent.parent / "config" / "example.yaml"
    run = cli("validate", str(example), "--web.config.file", str(web))
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[1] == f"{web}: valid, TLS on, 1 basic auth users"


def test_validate_accepts_the_example_config() -> None:
    """The documented example config is valid."""
    example = Path(__file__).parent.parent / "config" / "example.yaml"
    run = cli("validate", str(example))
    assert run.returncode == 0, run.stderr
    assert "valid, source endpoint_server" in run.stdout


def test_catalogue_lists_all_flows() -> None:
    """catalogue --format json prints all 26 flows with their table rows and errata."""
    run = cli("catalogue", "--format", "json")
    assert run.returncode == 0
    flows = json.loads(run.stdout)
    assert len(flows) == 26
    rows = sorted(number for flow in flows for number in flow["table_rows"])
    assert rows == list(range(1, 28))
    browser = next(flow for flow in flows if flow["id"] == "mssql_browser_app_db")
    assert browser["transport"] == "udp"
    assert "UDP 1434" in browser["erratum"]
    table = cli("catalogue")
    assert table.returncode == 0
    assert "mssql_bigfix" in table.stdout
