"""Hostile config files: `validate` refuses each in one line, quickly and in little memory, and a
running exporter keeps its config when one is swapped in, then reloads a good file again.

The files are those of the hostile-input reproducers: a 614-byte billion-laughs file, a FIFO
with no writer, a symbolic link to /dev/zero, 10,000 levels of nesting (flow sequences and flow
mappings), a non-UTF-8 byte, an empty file and a directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter import web
from exporter.config import (
    DEFAULT_MAX_PAIRS,
    MAX_CONFIG_BYTES,
    Config,
    load_config,
    parse_config,
)
from exporter.errors import ConfigError
from exporter.networks import Shard
from exporter.result import CheckResult, Result
from exporter.store import ResultStore
from exporter.web import ExporterState
from tests.peers.exporter import RunningExporter, run_exporter
from tests.peers.ports import free_tcp_port
from tests.test_serve import samples, value

MEASURED = Path(__file__).parent / "peers" / "measured.py"
VALIDATE_DEADLINE_S = 2.0  # the acceptance bound for one `validate` of a hostile file
VALIDATE_RSS_KIB = 100 * 1024
POLL_DEADLINE_S = 20.0
# SIGTERM must stop the process within the web server's grace period; the slack covers the
# interpreter's own exit.
STOP_DEADLINE_S = web.SHUTDOWN_GRACE_S + 5.0
SECRET = "S3CR3T-in-the-file"
HEAD = "source: endpoint_server\ndefaults: {interval: 10s, timeout: 3s}\n"


def laughs(levels: int, width: int = 10) -> str:
    """The billion-laughs file: each level a list of `width` aliases of the one before."""
    lines = [HEAD, 'l0: &l0 ["lol"' + ', "lol"' * (width - 1) + "]\n"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]\n")
    return "".join(lines)


def write_text(text: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_text(text, encoding="utf-8")

    return write


def write_bytes(data: bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(data)

    return write


# Each hostile file: how to put it at a path, and the one line `validate` prints after the path.
HOSTILE: dict[str, tuple[Callable[[Path], None], str]] = {
    "alias-bomb": (
        write_text(laughs(9)),
        ":7: aliases repeat more than 100000 nodes in all "
        "(each alias counts for every node of its anchor)",
    ),
    "fifo": (os.mkfifo, ": is a FIFO (named pipe); the config must be a regular file"),
    "dev-zero": (
        lambda path: path.symlink_to("/dev/zero"),
        ": is a character device (through a symbolic link); the config must be a regular file",
    ),
    "deep-sequences": (
        write_text(HEAD + "x: " + "[" * 10000 + "]" * 10000 + "\n"),
        ":3: nested deeper than 64 levels",
    ),
    "deep-mappings": (
        write_text(HEAD + "x: " + "{a: " * 10000 + "1" + "}" * 10000 + "\n"),
        ":3: nested deeper than 64 levels",
    ),
    "not-utf8": (
        write_bytes(f"source: endpoint_server\n# {SECRET} caf\xe9\n".encode("latin-1")),
        ":2: not UTF-8: byte 0xe9 at offset 48",
    ),
    "empty": (
        write_bytes(b""),
        ":1: the file is empty (or holds only comments); a config needs at least one setting",
    ),
    "directory": (Path.mkdir, ": is a directory; the config must be a regular file"),
}


def clear(path: Path) -> None:
    """Remove whatever sits at `path`: file, link, FIFO or directory."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def install(path: Path, write: Callable[[Path], None]) -> None:
    clear(path)
    write(path)


def test_laughs_file_is_the_reproducers_614_bytes() -> None:
    """The billion-laughs file here is byte for byte the size of the reported one."""
    assert len(laughs(9).encode()) == 614


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_load_config_refuses_hostile_file(case: str, tmp_path: Path) -> None:
    """In process: one located problem, and no exception text or cause that quotes the file."""
    path = tmp_path / "config.yaml"
    write, expected = HOSTILE[case]
    write(path)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert str(excinfo.value) == f"{path}{expected}"
    assert len(excinfo.value.problems) == 1
    chained = repr(excinfo.value.__cause__) + repr(excinfo.value.__context__)
    assert SECRET not in chained
    assert "lol" not in chained


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_validate_refuses_hostile_file_in_one_line_quickly(case: str, tmp_path: Path) -> None:
    """`validate` exits 1 with one clean line, within 2 s and 100 MB of its own."""
    path = tmp_path / "config.yaml"
    write, expected = HOSTILE[case]
    write(path)
    out, err = tmp_path / "out", tmp_path / "err"
    command = [sys.executable, "-m", "exporter", "validate", str(path)]
    measure = [sys.executable, str(MEASURED), str(VALIDATE_DEADLINE_S), str(out), str(err)]
    report = subprocess.run(
        [*measure, *command], capture_output=True, check=True, timeout=VALIDATE_DEADLINE_S + 30
    )
    figures = json.loads(report.stdout)
    stderr = err.read_text(encoding="utf-8")
    assert figures["exit"] == 1, f"killed at the {VALIDATE_DEADLINE_S} s deadline: {stderr}"
    assert stderr.splitlines() == [f"invalid config: {path}{expected}"]
    assert out.read_text(encoding="utf-8") == ""
    assert figures["maxrss_kib"] < VALIDATE_RSS_KIB


def test_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A file over the size cap is refused by its size, naming the limit."""
    path = tmp_path / "big.yaml"
    with path.open("wb") as file:
        file.truncate(MAX_CONFIG_BYTES + 1)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    limit = MAX_CONFIG_BYTES // (1024 * 1024)
    assert str(excinfo.value) == (
        f"{path}: is {MAX_CONFIG_BYTES + 1} bytes, over the {limit} MiB limit for a config"
    )


def test_pair_cap_counts_networks_without_building_them() -> None:
    """Sixty /12 networks (62 M addresses) are refused by arithmetic, not by building jobs."""
    networks = ", ".join(f"10.{16 * (i % 16)}.0.0/12" for i in range(60))
    text = (
        "scheduler: {max_hosts_per_network: 1048576}\n"
        f"extra_flows:\n  - {{id: wide, check: tcp, port: 9, targets: [{networks}]}}\n"
    )
    with pytest.raises(ConfigError) as excinfo:
        parse_config(text, "wide.yaml")
    assert str(excinfo.value) == (
        f"wide.yaml:3: extra_flows[0]: the config resolves to {60 * (2**20 - 2)} (flow, target) "
        f"pairs, more than scheduler.max_pairs ({DEFAULT_MAX_PAIRS}); this flow crosses the limit "
        "(pairs are counted as written, before duplicate pairs are dropped)"
    )


def test_shared_target_list_by_alias_is_accepted() -> None:
    """Aliases within the budget are a fair way to share targets between flows."""
    text = (
        "extra_flows:\n"
        '  - {id: one, check: tcp, port: 9, targets: &hosts ["127.0.0.1", "127.0.0.2"]}\n'
        "  - {id: two, check: tcp, port: 10, targets: *hosts}\n"
    )
    config = parse_config(text, "shared.yaml")
    assert sorted(job.key for job in config.jobs) == [
        ("one", "127.0.0.1:9"),
        ("one", "127.0.0.2:9"),
        ("two", "127.0.0.1:10"),
        ("two", "127.0.0.2:10"),
    ]


def test_retain_in_steps_pauses_and_ends_like_retain() -> None:
    """Applying a reload in steps pauses once per step and leaves the store as `retain` does."""
    first = config_of(range(10))
    second = config_of(range(5, 15))
    stepped, whole = ResultStore("endpoint_server"), ResultStore("endpoint_server")
    for store in (stepped, whole):
        for job in first.jobs:
            store.record(job, ok_result(), 1.0)
    pauses = sum(1 for _ in stepped.retain_in_steps(second.by_key, "endpoint_server", step=3))
    whole.retain(second.jobs, "endpoint_server")
    assert pauses == 3
    assert stepped.render() == whole.render()
    assert [entry.job for entry in stepped.entries()] == list(second.jobs[:5])


def config_of(hosts: range) -> Config:
    targets = ", ".join(f'"127.0.0.{host + 1}"' for host in hosts)
    text = f"extra_flows:\n  - {{id: pairs, check: tcp, port: 9, targets: [{targets}]}}\n"
    return parse_config(text, "pairs.yaml")


def ok_result() -> CheckResult:
    return CheckResult(Result.OK, 0.001, "")


def good_config(port: int, flows: int) -> str:
    """`flows` extra flows to one closed loopback port: results arrive, no traffic leaves."""
    lines = [HEAD, "scheduler: {startup_spread: 1s}\n", "extra_flows:\n"]
    lines += [f'  - {{id: f{i}, check: tcp, target: "127.0.0.1:{port}"}}\n' for i in range(flows)]
    return "".join(lines)


def scraped(exporter: RunningExporter) -> tuple[float | None, float | None]:
    """`config_last_reload_successful` and `scheduled_pairs` from one scrape."""
    status, text = exporter.get("/metrics")
    assert status == 200
    found = samples(text)
    return (
        value(found, "certero_flow_exporter_config_last_reload_successful"),
        value(found, "certero_flow_exporter_scheduled_pairs"),
    )


def wait_for_log(exporter: RunningExporter, text: str, count: int) -> str:
    """Poll the exporter's log until `text` occurs `count` times; return the log."""
    deadline = time.monotonic() + POLL_DEADLINE_S
    while True:
        log = exporter.log()
        if log.count(text) >= count:
            return log
        assert time.monotonic() < deadline, f"{text!r} not logged {count} times:\n{log[-3000:]}"
        time.sleep(0.05)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_reload_of_hostile_file_keeps_the_running_config(case: str, tmp_path: Path) -> None:
    """SIGHUP and POST /-/reload both keep the config and set reload_successful 0; POST says
    why in a 500; each logs one ERROR line without the file's content; a good file then loads."""
    path = tmp_path / "live.yaml"
    port = free_tcp_port()
    path.write_text(good_config(port, 2), encoding="utf-8")
    write, expected = HOSTILE[case]
    with run_exporter(path, tmp_path) as exporter:
        assert scraped(exporter) == (1, 2)
        install(path, write)
        os.kill(exporter.process.pid, signal.SIGHUP)
        wait_for_log(exporter, "config reload rejected", 1)
        assert scraped(exporter) == (0, 2)
        status, body = exporter.post("/-/reload")
        assert (status, body) == (
            500,
            f"config rejected, previous config kept:\n{path}{expected}\n",
        )
        assert scraped(exporter) == (0, 2)
        install(path, write_text(good_config(port, 3)))
        assert exporter.post("/-/reload") == (200, "Reloaded\n")
        assert scraped(exporter) == (1, 3)
        log = exporter.log()
    errors = [line for line in log.splitlines() if "level=ERROR" in line]
    assert [line.split(" msg=", 1)[1] for line in errors] == [
        f"config reload rejected, keeping the running config: {path}{expected}"
    ] * 2
    assert "Traceback" not in log
    assert SECRET not in log


def write_slow_config(path: Path, port: int) -> None:
    """100,000 one-line extra flows: valid, and the slowest shape to load (seconds)."""
    with path.open("w", encoding="utf-8") as file:
        file.write("source: endpoint_server\ndefaults: {interval: 1h, timeout: 5s}\nextra_flows:\n")
        for i in range(100_000):
            file.write(f'  - {{id: f{i:06d}, check: tcp, target: "127.0.0.1:{port}"}}\n')


@pytest.mark.parametrize("trigger", ["sighup", "post"])
def test_sigterm_stops_the_exporter_during_a_reload(trigger: str, tmp_path: Path) -> None:
    """SIGTERM while a reload is still loading stops the process within the grace period."""
    path = tmp_path / "live.yaml"
    port = free_tcp_port()
    path.write_text(good_config(port, 1), encoding="utf-8")
    with run_exporter(path, tmp_path) as exporter:
        write_slow_config(path, port)
        answers: list[tuple[int, str] | OSError] = []

        def post() -> None:
            try:
                answers.append(exporter.post("/-/reload"))
            except OSError as exc:  # the server closes the connection as it stops
                answers.append(exc)

        poster = threading.Thread(target=post, daemon=True)
        if trigger == "sighup":
            os.kill(exporter.process.pid, signal.SIGHUP)
        else:
            poster.start()
        wait_for_log(exporter, "config reload started", 1)
        exporter.process.terminate()
        exporter.process.wait(timeout=STOP_DEADLINE_S)
        log = exporter.log()
    if trigger == "post":
        poster.join(timeout=POLL_DEADLINE_S)
        assert len(answers) == 1
        assert not isinstance(answers[0], tuple)  # no answer: the reload never completed
    assert "config reloaded" not in log  # the signal came while the file was loading
    assert "Traceback" not in log


def reload_gauge(state: ExporterState) -> str:
    """The `config_last_reload_successful` line of the self metrics."""
    text = state.metrics.render().decode()
    return next(
        line
        for line in text.splitlines()
        if line.startswith("certero_flow_exporter_config_last_reload_successful ")
    )


async def join_loader_threads() -> None:
    """Wait (bounded) for every loader thread to end."""
    for thread in threading.enumerate():
        if thread.name == "config-reload":
            await asyncio.to_thread(thread.join, POLL_DEADLINE_S)


async def test_reload_past_its_deadline_frees_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load past the deadline fails the reload and frees the lock; while that load still runs
    a second reload is refused at once; once it ends, a reload works again."""
    path = tmp_path / "config.yaml"
    path.write_text(good_config(9, 1), encoding="utf-8")
    release = threading.Event()

    def stuck_once(config_path: str | Path | None, *, shard: Shard | None = None) -> Config:
        if not release.is_set():
            release.wait(POLL_DEADLINE_S)
        return load_config(config_path, shard=shard)

    monkeypatch.setattr(web, "load_config", stuck_once)
    monkeypatch.setattr(web, "RELOAD_DEADLINE_S", 0.05)
    config = load_config(path)
    state = ExporterState(config=config, config_path=str(path), store=ResultStore("x"))
    error = await web._reload_locked(state)
    assert str(error) == f"{path}: not loaded within the reload deadline of 0.05 s"
    assert not state.reload_lock.locked()
    assert reload_gauge(state).endswith(" 0.0")
    busy = await web._reload_locked(state)
    assert str(busy) == f"{path}: the previous reload is still loading the file, past its deadline"
    release.set()
    await join_loader_threads()
    assert await web._reload_locked(state) is None
    assert reload_gauge(state).endswith(" 1.0")


async def test_unexpected_loader_failure_is_one_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception the loader did not foresee fails the reload by its type alone."""
    path = tmp_path / "config.yaml"
    path.write_text(good_config(9, 1), encoding="utf-8")

    def broken(config_path: str | Path | None, *, shard: Shard | None = None) -> Config:
        raise UnicodeDecodeError("utf-8", SECRET.encode(), 0, 1, "invalid start byte")

    config = load_config(path)
    monkeypatch.setattr(web, "load_config", broken)
    state = ExporterState(config=config, config_path=str(path), store=ResultStore("x"))
    error = await web._reload_locked(state)
    message = f"{path}: could not be loaded: unexpected UnicodeDecodeError"
    assert str(error) == message
    assert reload_gauge(state).endswith(" 0.0")
    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == [
        f"config reload rejected, keeping the running config: {message}"
    ]
    assert SECRET not in caplog.text
    await join_loader_threads()
