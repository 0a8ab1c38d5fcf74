"""Recent history of one (flow, target) pair for the status page, in a fixed number of bytes.

The status page shows, per pair, the last results as a strip, a latency sparkline and the
uptime over the last hour and day. Keeping every result of a day would grow with the interval
(1,440 results a day at 60 s, 86,400 at 1 s); instead each pair holds one `bytearray` of fixed
size, written in place and never resized:

* a ring of the last `RING_SIZE` results, `RING_ENTRY` each: finish time (whole seconds, u32),
  result class (u8, an index into `Result`) and total latency (seconds, f32);
* `MINUTE_SLOTS` five-minute counters for the 1 h uptime and `HOUR_SLOTS` hourly counters for
  the 24 h uptime, `COUNTER` each: the slot's period number (u32), results counted and results
  ok (u16 each; 65,535 results in five minutes is one every 5 ms).

A window's uptime is the share of ok results among the results counted in its slots; a slot is
reused when its period comes round again, so the 1 h figure covers the current five-minute
period and the 11 before it (55 to 60 minutes), the 24 h figure the current hour and the 23
before it. `exporter_error` means the exporter could not run the check, so the flow's state is
unknown: such results join the strip but not the uptime.

`BYTES_PER_PAIR` is the documented bound of what one pair's history takes, object headers
included (measured with tracemalloc by tests/test_history.py for 10,000 pairs).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from exporter.result import CheckResult, Result

# Results in the strip and the sparkline: an hour at the default 60 s interval; at most 256
# (see PairHistory).
RING_SIZE = 60
MINUTE_PERIOD_S = 300
MINUTE_SLOTS = 12  # 12 x 5 min: the 1 h uptime
HOUR_PERIOD_S = 3600
HOUR_SLOTS = 24  # the 24 h uptime

_ENTRY = struct.Struct("<IBf")  # finished at (s), Result index, latency (s)
_COUNTER = struct.Struct("<IHH")  # period number, results counted, results ok
RING_ENTRY = _ENTRY.size
COUNTER = _COUNTER.size
_COUNTERS_AT = RING_SIZE * RING_ENTRY
_HOURS_AT = _COUNTERS_AT + MINUTE_SLOTS * COUNTER
DATA_BYTES = _HOURS_AT + HOUR_SLOTS * COUNTER
# The data plus the bytearray's and the slotted object's headers (about 60 + 56 bytes on
# CPython 3.11-3.13, 64-bit), with room for allocator rounding.
BYTES_PER_PAIR = DATA_BYTES + 160

_RESULTS = tuple(Result)
_INDEX = {result: index for index, result in enumerate(_RESULTS)}
_COUNTER_MAX = 0xFFFF
_SECONDS_MAX = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Recent:
    """One remembered result: when it finished, its class and its total latency."""

    finished_at: int
    result: Result
    latency_seconds: float


class PairHistory:
    """The last results and the uptime counters of one pair (see the module docstring)."""

    __slots__ = ("_data", "_kept", "_next")

    def __init__(self) -> None:
        self._data = bytearray(DATA_BYTES)
        # Both stay below RING_SIZE (<= 256), so they are CPython's shared small ints and a
        # pair never holds an int object of its own.
        self._next = 0  # the ring slot the next result goes to
        self._kept = 0  # results in the ring

    def record(self, result: CheckResult, finished_at: float) -> None:
        """Remember a result: into the ring, and into the uptime counters of its periods."""
        seconds = min(max(int(finished_at), 0), _SECONDS_MAX)  # u32: 1970 to 2106
        _ENTRY.pack_into(
            self._data,
            self._next * RING_ENTRY,
            seconds,
            _INDEX[result.result],
            result.duration_seconds,
        )
        self._next = (self._next + 1) % RING_SIZE
        self._kept = min(self._kept + 1, RING_SIZE)
        if result.result is Result.EXPORTER_ERROR:
            return
        ok = 1 if result.ok else 0
        self._count(_COUNTERS_AT, MINUTE_SLOTS, seconds // MINUTE_PERIOD_S, ok)
        self._count(_HOURS_AT, HOUR_SLOTS, seconds // HOUR_PERIOD_S, ok)

    def _count(self, start: int, slots: int, period: int, ok: int) -> None:
        offset = start + (period % slots) * COUNTER
        kept, counted, passed = _COUNTER.unpack_from(self._data, offset)
        if kept != period:  # the slot last held an older period: start it afresh
            counted = passed = 0
        if counted == _COUNTER_MAX:  # full for this period: the share stays as it stands
            return
        _COUNTER.pack_into(self._data, offset, period, counted + 1, passed + ok)

    def recent(self) -> Iterator[Recent]:
        """The remembered results, oldest first."""
        for number in range(self._next - self._kept, self._next):
            seconds, index, latency = _ENTRY.unpack_from(
                self._data, (number % RING_SIZE) * RING_ENTRY
            )
            yield Recent(seconds, _RESULTS[index], latency)

    def uptime_1h(self, now: float) -> float | None:
        """Share of ok results over the last hour (five-minute periods); None without any."""
        return self._uptime(_COUNTERS_AT, MINUTE_SLOTS, int(now) // MINUTE_PERIOD_S)

    def uptime_24h(self, now: float) -> float | None:
        """Share of ok results over the last 24 hours (hourly periods); None without any."""
        return self._uptime(_HOURS_AT, HOUR_SLOTS, int(now) // HOUR_PERIOD_S)

    def _uptime(self, start: int, slots: int, current: int) -> float | None:
        counted_total = passed_total = 0
        for slot in range(slots):
            period, counted, passed = _COUNTER.unpack_from(self._data, start + slot * COUNTER)
            if current - slots < period <= current:
                counted_total += counted
                passed_total += passed
        return passed_total / counted_total if counted_total else None
