"""The status page's HTML: the port table matrix, each pair's state and history, nothing external."""

from __future__ import annotations

import re

from exporter.config import Config, Job, parse_config
from exporter.result import CheckResult, Result
from exporter.statuspage import LISTED_PAIRS, ROWS_PER_PART, render_status_page, status_page_parts
from exporter.store import ResultStore

NOW = 1_800_000_000.0
CONFIG = """
targets:
  ibm_hmc: ["127.0.0.1:2222", "127.0.0.2:2222"]
extra_flows:
  - {id: proxy_reachable, check: tcp, port: 3128, targets: [127.0.0.3]}
"""


def config() -> Config:
    """Two HMC pairs from the port table and one custom flow."""
    return parse_config(CONFIG, "inline.yaml")


def job_for(loaded: Config, flow_id: str, target: str) -> Job:
    """The configured job of (flow, target)."""
    return loaded.by_key[(flow_id, target)]


def strip_of(page: str, flow: str, target: str) -> list[str]:
    """The result classes of a pair's history strip, oldest first."""
    row = re.search(
        rf"<tr class='pair [^']*' data-flow='{flow}' data-target='{re.escape(target)}'.*?</tr>",
        page,
        re.DOTALL,
    )
    assert row is not None, page
    strip = re.search(r"<span class='strip'>(.*?)</span>", row.group(0))
    assert strip is not None
    runs = re.findall(r"data-result='(\w+)' data-count='(\d+)'", strip.group(1))
    return [result for result, count in runs for _ in range(int(count))]


def filled_store(loaded: Config) -> ResultStore:
    """hmc .1 went down and came back; hmc .2 refuses; the proxy pair has a hostile detail."""
    store = ResultStore(loaded.source.value)
    up = job_for(loaded, "ssh_hmc", "127.0.0.1:2222")
    for offset, kind in enumerate([Result.OK, Result.TIMEOUT, Result.TIMEOUT, Result.OK]):
        detail = "no answer within 5 s" if kind is Result.TIMEOUT else ""
        store.record(up, CheckResult(kind, 0.002 * (offset + 1), detail), NOW - 30 + offset * 10)
    down = job_for(loaded, "ssh_hmc", "127.0.0.2:2222")
    store.record(down, CheckResult(Result.REFUSED, 0.001, "connection refused"), NOW - 5)
    proxy = job_for(loaded, "proxy_reachable", "127.0.0.3:3128")
    hostile = "<script>alert(1)</script> answered 'HTTP/1.0'"
    store.record(proxy, CheckResult(Result.PROTOCOL_MISMATCH, 0.004, hostile), NOW - 1)
    return store


def test_matrix_colours_each_destination_role_by_its_worst_pair() -> None:
    """Source x role: ibm_hmc is red (a refused pair), the custom flows orange."""
    loaded = config()
    page = render_status_page(loaded, filled_store(loaded), NOW)
    assert "<th>endpoint_server</th>" in page
    assert "<td class='r-refused' data-role='ibm_hmc'>" in page
    assert "1/2 ok, refused" in page
    assert "<td class='r-protocol_mismatch' data-role='custom'>" in page


def test_each_pair_shows_its_state_detail_and_port_table_columns() -> None:
    """Every pair is a row with its class; a failing one carries its detail to hover and expand."""
    loaded = config()
    page = render_status_page(loaded, filled_store(loaded), NOW)
    results = dict(re.findall(r"data-flow='\w+' data-target='([^']+)' data-result='(\w+)'", page))
    assert results == {
        "127.0.0.1:2222": "ok",
        "127.0.0.2:2222": "refused",
        "127.0.0.3:3128": "protocol_mismatch",
    }
    assert "endpoint_server → ibm_hmc" in page
    # the detail, then what to change: the firewall rule of the Endpoint Server → HMC flow
    refused = re.search(
        r"<details title='(connection refused — [^']+)'><summary class='badge'>", page
    )
    assert refused is not None, page
    assert "must allow TCP 2222 from the Endpoint Server to the IBM HMC" in refused.group(1)
    assert "tcp 2222" in page


def test_history_strip_uptime_and_sparkline_follow_the_results() -> None:
    """The strip reads ok, timeout, timeout, ok; uptime 50 %; the sparkline has four points."""
    loaded = config()
    page = render_status_page(loaded, filled_store(loaded), NOW)
    assert strip_of(page, "ssh_hmc", "127.0.0.1:2222") == ["ok", "timeout", "timeout", "ok"]
    assert strip_of(page, "ssh_hmc", "127.0.0.2:2222") == ["refused"]
    assert "50.0 % / 50.0 %" in page
    polyline = re.search(r"points='([^']+)'", page)
    assert polyline is not None
    assert len(polyline.group(1).split()) == 4


def test_details_are_escaped_and_nothing_is_fetched_from_elsewhere() -> None:
    """A peer's words cannot inject markup; the page names no other origin to load from."""
    loaded = config()
    page = render_status_page(loaded, filled_store(loaded), NOW)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "@import" not in page
    assert "url(" not in page


def test_an_empty_store_counts_every_pair_as_not_checked_yet() -> None:
    """Before the first results the page says how many pairs wait, and shows no row yet."""
    loaded = config()
    page = render_status_page(loaded, ResultStore(loaded.source.value), NOW)
    assert "3 (flow, target) pairs and\n0 swept networks, 3 not checked yet" in page
    assert "no pair checked yet" in page
    assert "No result yet." in page


def test_history_survives_a_reload_that_keeps_the_pair() -> None:
    """A reload keeps a kept pair's strip; a removed pair's history goes with it."""
    loaded = config()
    store = filled_store(loaded)
    reloaded = parse_config(CONFIG.replace(', "127.0.0.2:2222"', ""), "inline.yaml")
    store.retain(reloaded.jobs, reloaded.source.value)
    page = render_status_page(reloaded, store, NOW)
    assert strip_of(page, "ssh_hmc", "127.0.0.1:2222") == ["ok", "timeout", "timeout", "ok"]
    assert "127.0.0.2:2222" not in page


def test_a_large_config_lists_its_worst_pairs_and_counts_all_in_the_matrix() -> None:
    """Past LISTED_PAIRS pairs the failing ones are listed first; the matrix counts them all."""
    networks = ", ".join(f"10.0.{block * 4}.0/22" for block in range(2))
    loaded = parse_config(
        f"extra_flows:\n  - {{id: many, check: tcp, port: 22, targets: [{networks}]}}\n",
        "inline.yaml",
    )
    store = ResultStore(loaded.source.value)
    for number, job in enumerate(loaded.jobs):
        kind = Result.TIMEOUT if number % 500 == 0 else Result.OK
        store.record(job, CheckResult(kind, 0.001, "no answer"), NOW)
    parts = list(status_page_parts(loaded, store, NOW))
    page = "".join(parts)
    total = len(loaded.jobs)
    assert total > LISTED_PAIRS
    assert page.count("<tr class='pair") == LISTED_PAIRS
    assert f"The {LISTED_PAIRS} worst of {total} checked pairs are listed" in page
    assert page.count("data-result='timeout'>") == 5  # every failing pair is listed
    assert f"{total - 5}/{total} ok, timeout" in page
    assert max(part.count("<tr class='pair") for part in parts) <= ROWS_PER_PART
