"""The exporter's own error hierarchy.

    ExporterError
    ├── ConfigError          a config file is invalid: carries file, line and field path
    ├── ExporterFault        the exporter itself could not run a check; the target is not to blame
    │   └── CredentialError  a referenced secret (file / env var) cannot be read
    └── CheckFailure         a check classified its own failure (wrong greeting, bad status, ...)

Errors are named after what the caller can do: fix the file, provide the secret, or report
the flow as failing with the given class.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.result import Result


class ExporterError(Exception):
    """Base of every error the exporter raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a config file, located as precisely as the YAML allows."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ConfigError(ExporterError):
    """A config file cannot be used; lists every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


class ExporterFault(ExporterError):
    """The exporter could not run a check (its own resources or settings): says nothing of the flow.

    Such a run is classified `exporter_error`, so that an exporter out of file descriptors or
    missing a secret never reports a healthy target as broken.
    """


class CredentialError(ExporterFault):
    """A credential reference points at nothing readable; the message names the reference only."""


class CheckFailure(ExporterError):
    """Raised inside a check when the peer answered but not as the flow requires."""

    def __init__(self, result: Result, detail: str) -> None:
        self.result = result
        self.detail = detail
        super().__init__(detail)
