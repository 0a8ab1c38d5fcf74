"""Latest result of every (flow, target) pair, with its pre-rendered metric lines.

Only the scheduler (or a one-shot run) writes; `/metrics`, the landing page and the CLI read.
Everything runs on one event loop, so no locks are needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from exporter.collector import History, iter_families, render_pair
from exporter.config import Job
from exporter.result import CheckResult, Result


@dataclass(slots=True)
class Entry:
    """The cached state of one pair."""

    job: Job
    labels: tuple[tuple[str, str], ...]
    result: CheckResult
    finished_at: float
    history: History
    chunks: tuple[bytes, ...]


class ResultStore:
    """Latest results by job key; renders a pair's metric lines when its result changes."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._entries: dict[tuple[str, str], Entry] = {}

    def record(self, job: Job, result: CheckResult, finished_at: float) -> Result | None:
        """Store a result; return the previous result class (None for the first one)."""
        entry = self._entries.get(job.key)
        history = entry.history if entry is not None else History.empty()
        history.observe(result.duration_seconds)
        labels = entry.labels if entry is not None and entry.job is job else self.labels(job)
        chunks = render_pair(labels, result, finished_at, history)
        self._entries[job.key] = Entry(job, labels, result, finished_at, history, chunks)
        return entry.result.result if entry is not None else None

    def labels(self, job: Job) -> tuple[tuple[str, str], ...]:
        """The identifying labels of a pair's series."""
        return (
            ("flow", job.flow_id),
            ("source", self.source),
            ("target", str(job.target)),
            ("check", job.check),
        )

    def retain(self, jobs: Iterable[Job], source: str) -> None:
        """After a reload: drop pairs no longer configured, re-label the rest."""
        wanted = {job.key: job for job in jobs}
        for _ in self.retain_in_steps(wanted, source, step=len(self._entries) + 1):
            pass

    def retain_in_steps(
        self, wanted: Mapping[tuple[str, str], Job], source: str, step: int
    ) -> Iterator[None]:
        """`retain` given the jobs by key, pausing after every `step` entries so an event loop
        can serve between.

        Each pause leaves a consistent store: an entry is either still the old pair or already
        the new one, and a scrape in between sees the old pairs not yet dropped.
        """
        relabel = source != self.source
        self.source = source
        for index, key in enumerate(list(self._entries)):
            if index % step == step - 1:
                yield
            job = wanted.get(key)
            entry = self._entries[key]  # only a retain deletes, and reloads run one at a time
            if job is None or job.check != entry.job.check:
                del self._entries[key]
            elif relabel:
                entry.job = job
                entry.labels = self.labels(job)
                entry.chunks = render_pair(
                    entry.labels, entry.result, entry.finished_at, entry.history
                )
            else:  # same key and check: same labels, so the rendered lines stand
                entry.job = job

    def entries(self) -> Iterator[Entry]:
        """All cached entries, in insertion order."""
        return iter(list(self._entries.values()))

    def get(self, key: tuple[str, str]) -> Entry | None:
        """One entry by job key."""
        return self._entries.get(key)

    def __len__(self) -> int:
        return len(self._entries)

    def render_parts(self) -> Iterator[bytes]:
        """The per-pair families for a scrape, one family per part: joins of kept bytes."""
        return iter_families([entry.chunks for entry in self._entries.values()])

    def render(self) -> bytes:
        """The whole per-pair text at once (for tests and one-shot use)."""
        return b"".join(self.render_parts())
