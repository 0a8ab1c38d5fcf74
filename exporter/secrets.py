"""Credentials by reference, and redaction of the text that could carry one.

Every setting that carries a credential (an HTTP header value or query parameter today; an LDAP
bind password, an SNMP community or a database password tomorrow) is typed `Secret`: an inline
string, `{file: PATH}` or `{env: NAME}`. A reference is read when a check runs, so a rotated
file or a changed variable takes effect without a reload, and the value never sits in the
config, in an error, or in a `repr`. Config loading reads every reference once
(`unreadable_secrets`) so that `validate` reports a missing file or variable where it is
written.

This module imports nothing of the exporter but its errors, so that both the config loader and
the checks can use it (the loader imports the checks).
"""

from __future__ import annotations

import functools
import os
import threading
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, PlainValidator

from exporter.errors import CredentialError
from exporter.files import FileRefused, read_regular_file

REDACTED: Final = "<redacted>"
MAX_SECRET_FILE_BYTES: Final = 64 * 1024  # a credential, not a document: larger is a mistake
_SHAPE = "a secret is a string, {file: PATH} or {env: NAME}"


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A credential given by reference: exactly one of a file path or an environment variable.

    Its `repr` and `str` name the reference (which is not secret), never the value.
    """

    file: Path | None = None
    env: str | None = None

    def __post_init__(self) -> None:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of file or env")
        if self.env is not None and not self.env:
            raise ValueError("env must name an environment variable")
        if self.file is not None and not str(self.file):
            raise ValueError("file must name a path")

    def reveal(self) -> str:
        """Read the secret now; an error names the reference, never the content."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise CredentialError(f"environment variable {self.env} is not set")
            return value
        assert self.file is not None
        return _FILES.read(self.file)

    def __str__(self) -> str:
        return f"{{file: {self.file}}}" if self.file is not None else f"{{env: {self.env}}}"

    def __repr__(self) -> str:
        return f"SecretRef({self})"


class _SecretFiles:
    """Secret files read once per version: a run costs one `stat`, a read only after a change.

    A version is (inode, size, mtime): a rotation that replaces the file (a new inode, as
    Kubernetes and `mv` do) or rewrites it in place (a new mtime or size) is seen on the next run.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # config loading reads from a worker thread
        self._cache: dict[Path, tuple[tuple[int, int, int], str]] = {}

    def read(self, path: Path) -> str:
        try:
            info = os.stat(path)
        except OSError as exc:
            raise CredentialError(f"cannot read secret file {path}: {exc.strerror}") from None
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[0] == _version(info):
            return cached[1]
        version, value = _read_small_file(path)
        with self._lock:
            self._cache[path] = (version, value)
        return value


def _version(info: os.stat_result) -> tuple[int, int, int]:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _read_small_file(path: Path) -> tuple[tuple[int, int, int], str]:
    """The file's version and text without its final line break; errors never carry content."""
    try:
        info, data = read_regular_file(path, MAX_SECRET_FILE_BYTES, "secret file")
    except FileRefused as exc:
        raise CredentialError(f"cannot read secret file {path}: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # `from None`: a UnicodeDecodeError holds the bytes, i.e. the secret itself
        raise CredentialError(f"secret file {path} is not UTF-8") from None
    return _version(info), text.rstrip("\r\n")


_FILES = _SecretFiles()


class _SecretMarker:
    """Marks a `Secret` inside a settings annotation, so that `repr` can hide inline values."""

    def __repr__(self) -> str:
        return "SECRET"


SECRET_MARKER: Final = _SecretMarker()


def _parse_secret(value: object) -> str | SecretRef:
    """Accept a string or a one-key mapping; messages never repeat the value given."""
    if isinstance(value, str | SecretRef):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(_SHAPE)
    if set(value) - {"file", "env"} or len(value) != 1:
        raise ValueError(f"{_SHAPE} (exactly one key)")
    key, reference = next(iter(value.items()))
    if not isinstance(reference, str) or not reference:
        raise ValueError(f"{key} must be a non-empty string")
    return SecretRef(file=Path(reference)) if key == "file" else SecretRef(env=reference)


Secret = Annotated[str | SecretRef, PlainValidator(_parse_secret), SECRET_MARKER]
"""The type of every setting that carries a credential: inline, `{file: PATH}` or `{env: NAME}`."""


def reveal(secret: str | SecretRef) -> str:
    """The value of a `Secret` setting, read now when it is a reference."""
    return secret if isinstance(secret, str) else secret.reveal()


@functools.cache
def secret_fields(model: type[BaseModel]) -> frozenset[str]:
    """Names of the fields of `model` whose type holds a `Secret` (directly or in a container)."""
    return frozenset(
        name
        for name, info in model.model_fields.items()
        if SECRET_MARKER in info.metadata or _mentions_secret(info.annotation)
    )


def _mentions_secret(annotation: object) -> bool:
    if typing.get_origin(annotation) is Annotated and SECRET_MARKER in typing.get_args(annotation):
        return True
    return any(_mentions_secret(arg) for arg in typing.get_args(annotation))


def hide_secrets(value: object) -> object:
    """A copy of a `Secret` setting's value fit for `repr`: references kept, strings hidden."""
    if isinstance(value, str):
        return REDACTED
    if isinstance(value, Mapping):
        return {key: hide_secrets(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [hide_secrets(item) for item in value]
    return value


FieldPath = tuple[str | int, ...]


def unreadable_secrets(settings: BaseModel) -> Iterator[tuple[FieldPath, str]]:
    """Every reference in `settings` that cannot be read now: its field path and the reason."""
    yield from _walk(settings, ())


def _walk(value: object, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
    if isinstance(value, SecretRef):
        try:
            value.reveal()
        except CredentialError as exc:
            yield path, str(exc)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name), (*path, name))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, (*path, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _walk(item, (*path, index))


def redact_url(text: str) -> str:
    """A URL or request path fit to show: userinfo, query values and fragment replaced.

    `/health?token=abc&v=2` → `/health?token=<redacted>&v=<redacted>`;
    `https://user:pw@host/x#k=v` → `https://<redacted>@host/x#<redacted>`. Every query value is
    hidden, not only known names: which parameter carries a credential is not knowable here.
    Works on any text (no parsing that can fail), so it is safe on a hostile `Location`.
    """
    rest, hash_sign, fragment = text.partition("#")
    rest, question, query = rest.partition("?")
    scheme_end = rest.find("://")
    if scheme_end >= 0:
        start = scheme_end + 3
        end = rest.find("/", start)
        end = len(rest) if end < 0 else end
        _, at, host = rest[start:end].rpartition("@")
        if at:
            rest = f"{rest[:start]}{REDACTED}@{host}{rest[end:]}"
    if question:
        rest += "?" + "&".join(_redact_parameter(part) for part in query.split("&"))
    if hash_sign:
        rest += "#" + (REDACTED if fragment else "")
    return rest


def _redact_parameter(part: str) -> str:
    name, equals, value = part.partition("=")
    if equals:
        return f"{name}={REDACTED if value else ''}"
    return REDACTED if part else ""
