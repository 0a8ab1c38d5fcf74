"""The status page's per-pair history: a fixed-size ring and uptime counters, bounded in bytes."""

from __future__ import annotations

import gc
import tracemalloc

from exporter.history import (
    BYTES_PER_PAIR,
    HOUR_PERIOD_S,
    MINUTE_PERIOD_S,
    RING_SIZE,
    PairHistory,
)
from exporter.result import CheckResult, Result

PAIRS = 10_000
T0 = 1_800_000_000.0  # a whole hour (divisible by 3600), so periods line up with the test's steps


def result(kind: Result, latency: float = 0.01) -> CheckResult:
    """A result of class `kind` that took `latency` seconds."""
    return CheckResult(kind, latency, "" if kind is Result.OK else f"{kind.value} detail")


def test_ring_keeps_the_last_results_oldest_first() -> None:
    """Past RING_SIZE results the oldest fall out; order, class, time and latency are kept."""
    history = PairHistory()
    kinds = [Result.OK, Result.REFUSED, Result.TIMEOUT]
    for number in range(RING_SIZE + 7):
        history.record(result(kinds[number % 3], latency=number / 1000), T0 + number)
    recent = list(history.recent())
    assert len(recent) == RING_SIZE
    assert [item.finished_at for item in recent] == [
        int(T0) + number for number in range(7, RING_SIZE + 7)
    ]
    assert [item.result for item in recent[:3]] == [Result.REFUSED, Result.TIMEOUT, Result.OK]
    assert abs(recent[-1].latency_seconds - (RING_SIZE + 6) / 1000) < 1e-6


def test_empty_history_has_no_uptime_and_no_results() -> None:
    """A pair never checked shows nothing rather than 0 % or 100 %."""
    history = PairHistory()
    assert list(history.recent()) == []
    assert history.uptime_1h(T0) is None
    assert history.uptime_24h(T0) is None


def test_uptime_counts_ok_results_in_each_window() -> None:
    """3 ok of 4 in the last hour; the day also counts an hour 5 h ago with 2 failures."""
    history = PairHistory()
    history.record(result(Result.TIMEOUT), T0 - 5 * HOUR_PERIOD_S)
    history.record(result(Result.REFUSED), T0 - 5 * HOUR_PERIOD_S + 60)
    for minute, kind in enumerate([Result.OK, Result.REFUSED, Result.OK, Result.OK]):
        history.record(result(kind), T0 + minute * 60)
    now = T0 + 4 * 60
    assert history.uptime_1h(now) == 3 / 4
    assert history.uptime_24h(now) == 3 / 6


def test_uptime_forgets_periods_older_than_its_window() -> None:
    """Failures older than an hour leave the 1 h uptime, older than a day the 24 h uptime."""
    history = PairHistory()
    history.record(result(Result.TIMEOUT), T0)
    history.record(result(Result.OK), T0 + 2 * HOUR_PERIOD_S)
    assert history.uptime_1h(T0 + 2 * HOUR_PERIOD_S) == 1.0
    assert history.uptime_24h(T0 + 2 * HOUR_PERIOD_S) == 1 / 2
    assert history.uptime_24h(T0 + 24 * HOUR_PERIOD_S) == 1.0
    assert history.uptime_1h(T0 + 3 * HOUR_PERIOD_S) is None
    assert history.uptime_24h(T0 + 30 * HOUR_PERIOD_S) is None


def test_a_reused_slot_starts_afresh() -> None:
    """A five-minute slot coming round an hour later drops the old period's counts."""
    history = PairHistory()
    history.record(result(Result.REFUSED), T0)
    history.record(result(Result.OK), T0 + 12 * MINUTE_PERIOD_S)  # same slot, an hour later
    assert history.uptime_1h(T0 + 12 * MINUTE_PERIOD_S) == 1.0


def test_exporter_error_joins_the_strip_but_not_the_uptime() -> None:
    """The exporter not running a check says nothing about the flow's uptime."""
    history = PairHistory()
    history.record(result(Result.OK), T0)
    history.record(result(Result.EXPORTER_ERROR), T0 + 1)
    assert [item.result for item in history.recent()] == [Result.OK, Result.EXPORTER_ERROR]
    assert history.uptime_1h(T0 + 1) == 1.0


def test_a_clock_outside_u32_seconds_is_clamped_not_an_error() -> None:
    """A wall clock before 1970 or past 2106 must not make recording raise."""
    history = PairHistory()
    history.record(result(Result.OK), -5.0)
    history.record(result(Result.OK), 2.0**40)
    assert [item.finished_at for item in history.recent()] == [0, 0xFFFFFFFF]


def test_a_full_period_counter_saturates_instead_of_wrapping() -> None:
    """65,535 results in one period keep the counter at its maximum, the share unchanged."""
    history = PairHistory()
    for _ in range(0xFFFF + 10):
        history.record(result(Result.OK), T0)
    assert history.uptime_1h(T0) == 1.0


def test_history_of_10000_pairs_stays_within_the_documented_bound() -> None:
    """10,000 pairs, each with a day of results wrapping the ring and every counter slot,
    take at most BYTES_PER_PAIR each (tracemalloc), and filling never grows them."""
    step = 21 * 60  # 70 results over 24.5 h: every hourly and five-minute slot is written
    results = [result(Result.OK, 0.003), result(Result.TIMEOUT, 5.0)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        histories = [PairHistory() for _ in range(PAIRS)]
        empty = tracemalloc.get_traced_memory()[0]
        for number in range(70):
            finished = T0 + number * step
            kind = results[number % 7 == 0]
            for history in histories:
                history.record(kind, finished)
        for number in range(12):  # and the last hour, into every five-minute slot
            finished = T0 + 70 * step + number * MINUTE_PERIOD_S
            for history in histories:
                history.record(results[0], finished)
        after = tracemalloc.take_snapshot()
        filled = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(list(histories[0].recent())) == RING_SIZE
    assert histories[0].uptime_24h(T0 + 70 * step + 11 * MINUTE_PERIOD_S) is not None
    list_bytes = 8 * PAIRS + 1024  # the test's own list of the histories
    assert grown - list_bytes <= PAIRS * BYTES_PER_PAIR, f"{grown / PAIRS:.0f} bytes per pair"
    assert filled - empty < PAIRS  # recording writes in place: no per-result allocation
