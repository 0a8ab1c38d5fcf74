"""The renderer writes valid exposition text from cached results, whatever the peer said."""

from __future__ import annotations

import subprocess

from prometheus_client.parser import text_string_to_metric_families

from exporter.collector import HISTOGRAM_BUCKETS, History, escape_label_value, render_catalogue
from exporter.config import parse_config
from exporter.result import CheckResult, PeerInfo, Phase, Result
from exporter.store import ResultStore

HOSTILE_PRODUCT = 'evil"product\\with\nnewline'


def filled_store() -> ResultStore:
    """Two pairs: one ok with every optional series, one failing with a hostile peer string."""
    config = parse_config(
        'extra_flows:\n  - {id: custom, check: tls, targets: ["a.example:443", "[2001:db8::1]:443"]}\n',
        "t.yaml",
    )
    store = ResultStore("endpoint_server")
    good, bad = config.jobs
    store.record(
        good,
        CheckResult(
            Result.OK,
            0.0123,
            "ok",
            {Phase.RESOLVE: 0.001, Phase.CONNECT: 0.002, Phase.TLS: 0.009},
            PeerInfo("TLS", "TLSv1.3"),
            "192.0.2.1",
            1_900_000_000.0,
            0.0004,
            tls_chain_expiry_seconds=1_850_000_000.0,
        ),
        1_800_000_000.0,
    )
    store.record(
        bad,
        CheckResult(
            Result.TLS_ERROR, 2.5, "bad", {Phase.CONNECT: 0.5}, PeerInfo(HOSTILE_PRODUCT, "1")
        ),
        1_800_000_001.0,
    )
    return store


def test_rendered_text_parses_and_keeps_values() -> None:
    """Every family parses back with the values and labels that were recorded."""
    text = filled_store().render().decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    up = {s.labels["target"]: s.value for s in families["certero_flow_up"].samples}
    assert up == {"a.example:443": 1.0, "[2001:db8::1]:443": 0.0}
    tls_states = [
        s.labels["result"] for s in families["certero_flow_result"].samples if s.value == 1.0
    ]
    assert tls_states == ["ok", "tls_error"]
    products = {s.labels["product"] for s in families["certero_flow_peer_info"].samples}
    assert products == {"TLS", HOSTILE_PRODUCT}
    expiry = families["certero_flow_tls_cert_expiry_timestamp_seconds"].samples
    assert [s.value for s in expiry] == [1_900_000_000.0]
    chain = families["certero_flow_tls_chain_expiry_timestamp_seconds"].samples
    assert [s.value for s in chain] == [1_850_000_000.0]
    rtt = families["certero_flow_tcp_rtt_seconds"].samples
    assert [s.value for s in rtt] == [0.0004]


def test_histogram_counts_every_observation() -> None:
    """The histogram accumulates durations in cumulative buckets."""
    history = History.empty()
    for seconds in (0.001, 0.02, 0.02, 30.0):
        history.observe(seconds)
    assert history.count == 4
    assert sum(history.bucket_counts) == 3  # 30 s is above the largest bucket
    assert history.bucket_counts[HISTOGRAM_BUCKETS.index(0.005)] == 1
    assert history.bucket_counts[HISTOGRAM_BUCKETS.index(0.025)] == 2


def test_label_escaping() -> None:
    """Backslash, quote and newline are escaped as the text format requires."""
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_store_and_catalogue_pass_promtool() -> None:
    """The rendered store plus the catalogue pass `promtool check metrics`."""
    text = filled_store().render() + render_catalogue()
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_retain_relabels_and_drops() -> None:
    """After a reload the store drops removed pairs and re-renders a changed source label."""
    store = filled_store()
    jobs = list(store.entries())
    store.retain([jobs[0].job], "client")
    assert len(store) == 1
    assert b'source="client"' in store.render()
    assert b'source="endpoint_server"' not in store.render()
