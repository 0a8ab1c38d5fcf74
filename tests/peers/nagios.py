"""A throwaway Nagios Core 4 (Debian nagios4-core) that runs plugins and records their results.

Nagios gets a minimal main config in a temporary directory: root as its user, one time unit
per second, no notifications, status written every second and external commands on, so that
a test forces every service check at once instead of waiting for the scheduler's start-up
spread. What Nagios recorded is read back from its status file (`servicestatus` blocks with
`current_state`, `plugin_output` and `performance_data` as the plugin printed them).
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.peers.procs import log_tail, stop_process

NAGIOS = "/usr/sbin/nagios4"
HOST_NAME = "loop"
POLL_INTERVAL_S = 0.2


@dataclass(frozen=True)
class Nagios:
    """A running Nagios and where it keeps its files."""

    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def status_file(self) -> Path:
        """Written every second (status_update_interval=1)."""
        return self.directory / "var" / "status.dat"

    @property
    def command_file(self) -> Path:
        """The external command FIFO Nagios creates when it starts."""
        return self.directory / "var" / "nagios.cmd"

    def force_checks(self, services: list[str], timeout_s: float = 20.0) -> None:
        """Ask Nagios to run every service's check now (SCHEDULE_FORCED_SVC_CHECK).

        The FIFO accepts a writer only while Nagios reads it: retried until then.
        """
        now = int(time.time())
        commands = "".join(
            f"[{now}] SCHEDULE_FORCED_SVC_CHECK;{HOST_NAME};{service};{now}\n"
            for service in services
        ).encode()
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nagios exited early:\n{self.log()}")
            try:
                descriptor = os.open(self.command_file, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # not created yet, or no reader yet
                if exc.errno not in (errno.ENOENT, errno.ENXIO) or time.monotonic() > deadline:
                    raise
                time.sleep(POLL_INTERVAL_S)
                continue
            try:
                os.write(descriptor, commands)
            finally:
                os.close(descriptor)
            return

    def wait_for_results(
        self, services: list[str], timeout_s: float = 60.0
    ) -> dict[str, dict[str, str]]:
        """The status blocks of `services` once each has been checked at least once."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nagios exited early:\n{self.log()}")
            blocks = self.service_status()
            checked = {
                name: block
                for name, block in blocks.items()
                if name in services and block.get("has_been_checked") == "1"
            }
            if len(checked) == len(services):
                return checked
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"nagios checked only {sorted(checked)} of {services} within {timeout_s}s:"
                    f"\n{blocks}\n{self.log()}"
                )
            time.sleep(POLL_INTERVAL_S)

    def service_status(self) -> dict[str, dict[str, str]]:
        """Every `servicestatus` block of the status file, by service description."""
        try:
            text = self.status_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return {}
        return {
            block["service_description"]: block
            for block in parse_status(text, "servicestatus")
            if "service_description" in block
        }

    def log(self) -> str:
        """The end of Nagios' own log, for failure messages."""
        return log_tail(self.directory / "var" / "nagios.log")


def parse_status(text: str, kind: str) -> list[dict[str, str]]:
    """The `kind {` ... `}` blocks of a status.dat, each as key → value (split at the first =)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if current is None:
            if line == f"{kind} {{":
                current = {}
        elif line == "}":
            blocks.append(current)
            current = None
        else:
            key, _, value = line.partition("=")
            current[key] = value
    return blocks


def _define(kind: str, fields: Mapping[str, str]) -> str:
    """One object definition; the closing brace on its own line, as Nagios requires."""
    body = "".join(f"    {key} {value}\n" for key, value in fields.items())
    return f"define {kind} {{\n{body}}}\n"


def write_config(directory: Path, commands: Mapping[str, str]) -> Path:
    """Main and object config for one service per (name, command line) on host `loop`."""
    var = directory / "var"
    for sub in (var / "spool" / "checkresults", var / "archives", directory / "etc"):
        sub.mkdir(parents=True, exist_ok=True)
    main = directory / "etc" / "nagios.cfg"
    settings = {
        "log_file": var / "nagios.log",
        "cfg_file": directory / "etc" / "objects.cfg",
        "object_cache_file": var / "objects.cache",
        "precached_object_file": var / "objects.precache",
        "resource_file": directory / "etc" / "resource.cfg",
        "status_file": var / "status.dat",
        "status_update_interval": 1,
        "nagios_user": "root",
        "nagios_group": "root",
        "check_external_commands": 1,
        "command_file": var / "nagios.cmd",
        "lock_file": var / "nagios.lock",
        "temp_file": var / "nagios.tmp",
        "temp_path": var,
        "check_result_path": var / "spool" / "checkresults",
        "log_archive_path": var / "archives",
        "state_retention_file": var / "retention.dat",
        "retain_state_information": 0,
        "interval_length": 1,
        "check_result_reaper_frequency": 1,
        "max_check_result_reaper_time": 2,
        "service_check_timeout": 30,
        "process_performance_data": 1,
        "enable_notifications": 0,
        "enable_flap_detection": 0,
    }
    main.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    (directory / "etc" / "resource.cfg").write_text("$USER1$=/usr/lib/nagios/plugins\n")
    days = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
    objects = [
        _define(
            "timeperiod",
            {"timeperiod_name": "always", "alias": "always"} | {day: "00:00-24:00" for day in days},
        ),
        _define(
            "contact",
            {
                "contact_name": "nobody",
                "host_notifications_enabled": "0",
                "service_notifications_enabled": "0",
                "host_notification_period": "always",
                "service_notification_period": "always",
                "host_notification_options": "n",
                "service_notification_options": "n",
                "host_notification_commands": "noop",
                "service_notification_commands": "noop",
            },
        ),
        _define("command", {"command_name": "noop", "command_line": "/bin/true"}),
        _define(
            "host",
            {
                "host_name": HOST_NAME,
                "address": "127.0.0.1",
                "check_command": "noop",
                "max_check_attempts": "1",
                "check_period": "always",
                "contacts": "nobody",
                "notification_period": "always",
            },
        ),
    ]
    for name, command_line in commands.items():
        objects.append(
            _define("command", {"command_name": f"cmd_{name}", "command_line": command_line})
        )
        objects.append(
            _define(
                "service",
                {
                    "host_name": HOST_NAME,
                    "service_description": name,
                    "check_command": f"cmd_{name}",
                    "max_check_attempts": "1",
                    "check_interval": "300",  # the test forces the checks it needs
                    "retry_interval": "300",
                    "check_period": "always",
                    "contacts": "nobody",
                    "notification_period": "always",
                },
            )
        )
    (directory / "etc" / "objects.cfg").write_text("".join(objects))
    return main


@contextmanager
def run_nagios(directory: Path, commands: Mapping[str, str]) -> Iterator[Nagios]:
    """Verify the config with `nagios4 -v`, start Nagios in the foreground, stop it after."""
    main = write_config(directory, commands)
    verify = subprocess.run(
        [NAGIOS, "-v", str(main)], capture_output=True, text=True, check=False, timeout=30
    )
    if verify.returncode != 0:
        raise RuntimeError(f"nagios rejected its config:\n{verify.stdout}{verify.stderr}")
    with (directory / "var" / "stdout").open("wb") as output:
        process = subprocess.Popen(
            [NAGIOS, str(main)], stdout=output, stderr=subprocess.STDOUT, cwd=directory
        )
    try:
        yield Nagios(process, directory)
    finally:
        stop_process(process)
