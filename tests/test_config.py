"""Config parsing: typed values, embedded default, and located error messages."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from exporter.checks.https import HttpSettings
from exporter.config import (
    EMBEDDED_DEFAULT,
    Endpoint,
    load_config,
    parse_config,
    parse_duration,
    parse_endpoint,
)
from exporter.errors import ConfigError
from tests.peers.exporter import run_cli

TESTDATA = Path(__file__).parent / "testdata"

# Every invalid-*.yaml file and the exact problems it must produce: (line, field path, message).
INVALID_CASES: dict[str, list[tuple[int, str, str]]] = {
    "invalid-typo-field.yaml": [(3, "defaults.intervall", "unknown field")],
    "invalid-yaml-syntax.yaml": [
        (
            4,
            "",
            "YAML syntax error: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence that starts on line 3)",
        )
    ],
    "invalid-unknown-flow.yaml": [(5, "flows.ldap_dcx", "unknown flow id (known: db2_bigfix,")],
    "invalid-bad-duration.yaml": [
        (3, "defaults.timeout", "expected a duration such as 5s, 1m30s or 250ms, got '5 parsecs'")
    ],
    "invalid-bad-port.yaml": [
        (
            4,
            "targets.ibm_hmc[1]",
            "'hmc2.corp.example:99999': port must be a number from 1 to 65535",
        )
    ],
    "invalid-unknown-role.yaml": [
        (2, "targets.domain_controller", "Input should be 'endpoint_networks'")
    ],
    "invalid-check-setting.yaml": [(6, "flows.https_app_relay.pathh", "unknown field")],
    "invalid-unknown-check.yaml": [
        (3, "extra_flows[1].check", "unknown check 'smtp' (known: db2,")
    ],
    "invalid-timeout-over-interval.yaml": [
        (6, "flows.ssh_hmc.timeout", "timeout must not exceed the interval")
    ],
    "invalid-default-timeout.yaml": [
        (3, "defaults.timeout", "timeout must not exceed the interval")
    ],
    "invalid-flow-interval-under-timeout.yaml": [
        (6, "flows.ssh_hmc.interval", "timeout must not exceed the interval")
    ],
    "invalid-flow-not-a-mapping.yaml": [(1, "flows.ssh_hmc", "expected a mapping (key: value)")],
    "invalid-duplicate-key.yaml": [(4, "targets.ibm_hmc", "duplicate key")],
    "invalid-network-too-large.yaml": [
        (
            4,
            "targets.endpoint_networks[1]",
            "network 10.0.0.0/8 has 16777214 hosts, more than "
            "scheduler.max_hosts_per_sweep (1048576)",
        ),
        (
            7,
            "targets.ibm_hmc[0]",
            "network 10.30.0.0/19 has 8190 hosts, more than scheduler.max_hosts_per_network (4096)",
        ),
    ],
    "invalid-missing-port.yaml": [(2, "extra_flows[0].port", "check tcp needs a port")],
    "invalid-source.yaml": [(1, "source", "Input should be 'endpoint_server'")],
    "invalid-duplicate-flow-id.yaml": [
        (2, "extra_flows[0].id", "flow id 'ssh_hmc' is already used")
    ],
    "invalid-bad-regex.yaml": [
        (5, "flows.https_app_relay.body_regex", "invalid regular expression: unterminated")
    ],
    "invalid-top-level-list.yaml": [(1, "", "the top level must be a mapping")],
    "invalid-long-label.yaml": [
        (
            4,
            "targets.ibm_hmc[1]",
            f"'{'a' * 64}.corp.example:22' is not a valid host name or address: "
            "label 1 is 64 characters long (DNS allows at most 63)",
        )
    ],
    "invalid-port-digits.yaml": [
        (4, "targets.ibm_hmc[1]", "'hmc2.corp.example:\u0662\u0662': port must be a number"),
        (6, "targets.endpoint_networks[0]", "'10.0.0.1:\u00b2': port must be a number from 1"),
    ],
    "invalid-alias-bomb.yaml": [
        (7, "", "aliases repeat more than 100000 nodes in all (each alias counts for every node")
    ],
    "invalid-alias-cycle.yaml": [(3, "", "alias *loop refers to a node that contains it")],
    "invalid-deep-nesting.yaml": [(3, "", "nested deeper than 64 levels")],
    "invalid-empty.yaml": [(1, "", "the file is empty (or holds only comments)")],
    "invalid-not-utf8.yaml": [(2, "", "not UTF-8: byte 0xe9 at offset 29")],
    "invalid-nul-byte.yaml": [
        (2, "", "YAML syntax error: special characters are not allowed #x0000 at offset 24")
    ],
    "invalid-too-many-pairs.yaml": [
        (
            5,
            "extra_flows[1]",
            "the config resolves to 763 (flow, target) pairs, more than scheduler.max_pairs (500)",
        )
    ],
    "invalid-extra-flow-typo.yaml": [
        (4, "extra_flows[0].targte", "unknown field; did you mean 'target'?"),
        (2, "extra_flows[0].targets", "needs at least one target"),
    ],
    "invalid-disabled-flow-typo.yaml": [
        (5, "flows.smb_endpoints.enabeld", "unknown field; did you mean 'enabled'?"),
        (10, "extra_flows[0].descripton", "unknown field; did you mean 'description'?"),
    ],
    "invalid-icmp-port.yaml": [
        (5, "flows.icmp_endpoints.port", "check icmp takes no port"),
        (
            7,
            "flows.icmp_endpoints.targets[0]",
            "check icmp takes no port: write the host or network alone",
        ),
    ],
    "invalid-other-vantage-typo.yaml": [
        (
            4,
            "flows.ssh_hmc.host_key_fingerprint",
            "unknown field; did you mean 'host_key_fingerprints'?",
        )
    ],
    "invalid-udp-flow-setting.yaml": [
        (
            5,
            "flows.netbios_ns_endpoints.scope_id",
            "unknown field",
        )
    ],
    "invalid-snmp-v3-typo.yaml": [
        (7, "flows.snmp_endpoints.auth_pasword", "unknown field; did you mean 'auth_password'?")
    ],
    "invalid-snmp-protocol.yaml": [
        (
            8,
            "flows.snmp_endpoints.priv_protocol",
            "unknown priv_protocol 'AES-512'; use one of DES, 3DES, AES, AES-192, AES-256, "
            "AES-192-C, AES-256-C",
        ),
        (11, "extra_flows[0]", "community is for v2c and username for v3: give one of them"),
    ],
    "invalid-untargeted-flow-typo.yaml": [
        (
            4,
            "flows.https_app_relay.expected_statuses",
            "unknown field; did you mean 'expected_status'?",
        )
    ],
    "invalid-check-setting-typos.yaml": [
        (6, "flows.https_vsphere.ca_fil", "unknown field; did you mean 'ca_file'?"),
        (8, "flows.sap_systems.system_id", "unknown field"),
    ],
}


def test_every_invalid_file_has_a_case() -> None:
    """No invalid-*.yaml file is left without pinned messages."""
    assert {path.name for path in TESTDATA.glob("invalid-*.yaml")} == set(INVALID_CASES)


@pytest.mark.parametrize("name", sorted(INVALID_CASES))
def test_invalid_config_names_file_line_and_field(name: str) -> None:
    """Each invalid file fails with exactly the pinned problems, located by line and field."""
    path = TESTDATA / name
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    problems = excinfo.value.problems
    assert len(problems) == len(INVALID_CASES[name]), str(excinfo.value)
    for problem, (line, field, message) in zip(problems, INVALID_CASES[name], strict=True):
        assert problem.file == str(path)
        assert problem.line == line
        assert problem.field == field
        assert problem.message.startswith(message), problem.message
    first = INVALID_CASES[name][0]
    assert str(excinfo.value).startswith(f"{path}:{first[0]}: ")


def test_all_problems_are_reported_at_once() -> None:
    """A file with several mistakes lists each of them, not just the first."""
    text = "defaults: {intervall: 5s}\nscheduler: {concurency: 3}\nsource: somewhere\n"
    with pytest.raises(ConfigError) as excinfo:
        parse_config(text, "multi.yaml")
    located = {(p.line, p.field) for p in excinfo.value.problems}
    assert located == {(1, "defaults.intervall"), (2, "scheduler.concurency"), (3, "source")}


def test_missing_file_is_a_config_error() -> None:
    """A config path that does not exist names the path."""
    with pytest.raises(ConfigError, match=r"no-such-file\.yaml"):
        load_config("/nonexistent/no-such-file.yaml")


def test_non_utf8_file_names_the_byte_and_never_quotes_the_file(tmp_path: Path) -> None:
    """A stray Latin-1 byte is located by offset and line; the file's text is not repeated."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"source: endpoint_server\n# token S3CR3T caf\xe9\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert str(excinfo.value) == f"{path}:2: not UTF-8: byte 0xe9 at offset 42"
    assert "S3CR3T" not in repr(excinfo.value.__cause__) + repr(excinfo.value.__context__)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("250ms", 0.25), ("1m30s", 90.0), ("2h", 7200.0), (3, 3.0), (0.5, 0.5)],
)
def test_durations(text: object, seconds: float) -> None:
    """Durations accept Prometheus-style units and plain seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 s", "s", "-1s", "0s", True, "1d"])
def test_bad_durations(text: object) -> None:
    """Anything else is rejected with a message (a quoted number needs a unit)."""
    with pytest.raises(ValueError, match=r"duration|greater than zero"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("dc1.corp.example", Endpoint("dc1.corp.example")),
        ("hmc1.corp.example:2222", Endpoint("hmc1.corp.example", 2222)),
        ("10.1.2.3:22", Endpoint("10.1.2.3", 22)),
        ("::1", Endpoint("::1")),
        ("fe80::1", Endpoint("fe80::1")),
        ("[2001:db8::5]:636", Endpoint("2001:db8::5", 636)),
        ("[::1]", Endpoint("::1")),
        ("10.20.0.0/22", Endpoint(network=ipaddress.ip_network("10.20.0.0/22"))),
        ("2001:db8::/126", Endpoint(network=ipaddress.ip_network("2001:db8::/126"))),
        ("sql_01.corp.example:1433", Endpoint("sql_01.corp.example", 1433)),
        ("dc1.corp.example.", Endpoint("dc1.corp.example.")),
        (f"{'a' * 63}.example:22", Endpoint(f"{'a' * 63}.example", 22)),
        (".".join(["a" * 63] * 4)[:253], Endpoint(".".join(["a" * 63] * 4)[:253])),
        ("bücher.example:443", Endpoint("xn--bcher-kva.example", 443)),
        ("BÜCHER.Example", Endpoint("xn--bcher-kva.example")),
    ],
)
def test_endpoints(text: str, endpoint: Endpoint) -> None:
    """Targets accept host[:port], IPv6 literals with or without brackets, and CIDRs.

    Underscores and a trailing dot stay valid; an internationalised name becomes its A-label.
    """
    assert parse_endpoint(text) == endpoint


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1:\u00b2", "'127.0.0.1:\u00b2': port must be a number from 1 to 65535"),
        (
            "127.0.0.1:\u0664\u0667\u0661\u0660\u0661",
            "'127.0.0.1:\u0664\u0667\u0661\u0660\u0661': port must be a number from 1 to 65535",
        ),
        (
            "127.0.0.1:" + "1" * 5000,
            f"'127.0.0.1:{'1' * 50}'… (5010 characters): port must be a number from 1 to 65535",
        ),
        (
            f"{'a' * 64}:47101",
            f"'{'a' * 64}:47101' is not a valid host name or address: "
            "label 1 is 64 characters long (DNS allows at most 63)",
        ),
        (
            "a" * 8000 + ":47101",
            f"'{'a' * 60}'… (8006 characters) is not a valid host name or address: "
            "the host name is 8000 characters long (DNS allows at most 253)",
        ),
        (
            "a..example",
            "'a..example' is not a valid host name or address: "
            "the host name has an empty label (a leading dot or two dots in a row)",
        ),
        (
            ":22",
            "':22' is not a valid host name or address: the host name is empty",
        ),
        (
            "bad host",
            "'bad host' is not a valid host name or address: "
            "character ' ' is not allowed in a host name",
        ),
        (
            "b\u00fc\u2603.example",
            "'b\u00fc\u2603.example' is not a valid host name: "
            "Codepoint U+2603 at position 3 of 'b\u00fc\u2603' not allowed",
        ),
    ],
)
def test_bad_host_names_and_ports_say_why(text: str, message: str) -> None:
    """A name DNS cannot carry or a port not in ASCII digits is refused with a plain reason."""
    with pytest.raises(ValueError, match=r".") as excinfo:
        parse_endpoint(text)
    assert str(excinfo.value) == message


@pytest.mark.parametrize(
    "text", ["", "host:0", "host:abc", "[::1", "[nothost]:22", "bad host", "10.0.0.0/33", ":::"]
)
def test_bad_endpoints(text: str) -> None:
    """Malformed targets are rejected with a message naming what is wrong."""
    with pytest.raises(ValueError, match=r"target|port|valid|missing"):
        parse_endpoint(text)


def test_embedded_default_targets_loopback_in_every_role() -> None:
    """No config means the embedded default: real checks of this host's loopback."""
    config = load_config(None)
    assert config.origin == EMBEDDED_DEFAULT
    assert config.jobs
    assert all(job.target.host == "127.0.0.1" for job in config.jobs)
    flows = {job.flow_id for job in config.jobs}
    assert {"ssh_endpoints", "icmp_endpoints", "https_app_relay", "ldaps_dc"} <= flows
    # every flow measured from the Endpoint Server runs, UDP ones included
    assert {"snmp_endpoints", "netbios_ns_endpoints", "mssql_browser_app_db"} - flows == {
        "mssql_browser_app_db"  # measured from the Application Server
    }
    assert not config.skipped_flows


def test_overrides_custom_flows_and_networks() -> None:
    """Per-flow overrides, custom flows and CIDR expansion resolve into jobs."""
    config = parse_config(
        """
source: endpoint_server
defaults: {interval: 60s, timeout: 5s}
targets:
  ibm_hmc: ["hmc1.corp.example:2222", hmc2.corp.example]
  endpoint_networks: [192.0.2.0/30]
  application_server: [app.corp.example]
flows:
  ssh_hmc: {interval: 2m, timeout: 10s}
  https_app_relay: {port: 8443, path: /relay/health, expected_status: [200, 204]}
  smb_endpoints: {enabled: false}
extra_flows:
  - {id: proxy_reachable, check: tcp, target: "proxy.corp.example:3128", interval: 15s}
""",
        "inline.yaml",
    )
    jobs = {(job.flow_id, str(job.target)): job for job in config.jobs}
    hmc = jobs[("ssh_hmc", "hmc1.corp.example:2222")]
    assert (hmc.interval, hmc.timeout) == (120.0, 10.0)
    assert ("ssh_hmc", "hmc2.corp.example:22") in jobs
    relay = jobs[("https_app_relay", "app.corp.example:8443")]
    assert isinstance(relay.settings, HttpSettings)
    assert relay.settings.path == "/relay/health"
    assert relay.settings.expected_status == [200, 204]
    assert not [job for job in config.jobs if job.flow_id == "ssh_endpoints"]
    (sweep,) = [sweep for sweep in config.sweeps if sweep.flow_id == "ssh_endpoints"]
    assert (sweep.network.label, sweep.port) == ("192.0.2.0/30", 22)
    assert list(sweep.network.hosts()) == ["192.0.2.1", "192.0.2.2"]
    assert "smb_endpoints" in config.skipped_flows
    proxy = jobs[("proxy_reachable", "proxy.corp.example:3128")]
    assert (proxy.check, proxy.interval, proxy.timeout) == ("tcp", 15.0, 5.0)
    assert proxy.catalogue_flow is None


def test_flow_from_another_vantage_point_is_not_run_here() -> None:
    """Settings for a flow measured elsewhere produce a warning and no job."""
    config = parse_config(
        "source: endpoint_server\ntargets: {database_server: [db1]}\nflows: {mssql_app_db: {}}\n",
        "inline.yaml",
    )
    assert not [job for job in config.jobs if job.flow_id == "mssql_app_db"]
    assert any("mssql_app_db is measured from application_server" in w for w in config.warnings)


def test_settings_of_a_flow_that_does_not_run_are_still_checked() -> None:
    """A valid block of a disabled flow, or of one measured elsewhere, loads; the flow stays off."""
    config = parse_config(
        "source: application_server\ntargets: {ibm_hmc: [127.0.0.1]}\n"
        "flows:\n"
        "  ssh_hmc: {host_key_fingerprints: ['SHA256:x'], timeout: 2s}\n"
        "  https_customer_centre: {enabled: false, path: /sync}\n",
        "inline.yaml",
    )
    assert not [job for job in config.jobs if job.flow_id in ("ssh_hmc", "https_customer_centre")]
    assert config.skipped_flows["https_customer_centre"] == "disabled in the config"


def test_disabled_flow_with_a_bad_timeout_is_refused() -> None:
    """The whole block is checked before the flow is skipped, its timings included."""
    with pytest.raises(ConfigError) as excinfo:
        parse_config("flows: {ssh_hmc: {enabled: false, timeout: 2m}}\n", "inline.yaml")
    assert str(excinfo.value) == (
        "inline.yaml:1: flows.ssh_hmc.timeout: timeout must not exceed the interval"
    )


def test_validate_names_a_misspelt_key_on_its_own_line() -> None:
    """`validate` prints each problem of a flow block on a line of its own, the typo first."""
    path = TESTDATA / "invalid-extra-flow-typo.yaml"
    run = run_cli("validate", str(path), timeout=60)
    assert run.returncode == 1
    assert run.stderr.splitlines() == [
        "invalid config:",
        f"{path}:4: extra_flows[0].targte: unknown field; did you mean 'target'?",
        f"{path}:2: extra_flows[0].targets: needs at least one target",
    ]
