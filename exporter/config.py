"""The YAML config: typed models, a loader that locates every error, and resolution into jobs.

Loading has two stages, after the file has been read (a regular file only, never blocking, at
most MAX_CONFIG_BYTES) and its YAML bounded in depth, aliases and size from the event stream.
The file's structure is validated into `ConfigFile` (unknown keys rejected); then cross-field
checks (known flow ids and roles, check settings against each check's own model, the number of
pairs against `scheduler.max_pairs`) run. Every problem found is reported with file, line and
field path, all at once, so that one `validate` run shows everything to fix.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from exporter.catalogue import FLOWS, FLOWS_BY_ID, Flow, Role, Transport, VantagePoint
from exporter.checks import CHECKS, AnyCheckSpec, CheckSettings, Target
from exporter.errors import ConfigError, ConfigProblem, CredentialError

EMBEDDED_DEFAULT = "<embedded default>"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Checks that exist in the catalogue but not yet in this build: TLS-protocol ports fall back to
# a TLS handshake, other TCP ports to a connect, and the `check` label says which ran.
_TLS_FALLBACK = frozenset({"ldaps", "vsphere"})

# Bounds that keep a hostile or mistaken file from hanging or exhausting the process. A config
# of 200,000 pairs written one extra flow per line is about 12 MB, so the size cap leaves room;
# everything above it is refused after reading at most MAX_CONFIG_BYTES + 1 bytes.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
# The deepest legitimate config is about six levels (extra_flows[0].headers.name); libyaml's
# own limit is 1,000 and the pure-Python composer recurses once per level, so the cap sits
# far below both.
MAX_YAML_DEPTH = 64
# Nodes of the document with every alias expanded: what the line map and pydantic would walk.
# 100,000 pairs take 100,000 nodes as target lists, 700,000 as one-line extra flows.
MAX_YAML_NODES = 2_000_000
# Of those, how many aliases may add in all. Sharing a list of 1,000 targets among 20 flows
# costs 20,000; a billion-laughs file is refused after its first few hundred events.
MAX_ALIAS_NODES = 100_000
# Default of scheduler.max_pairs: resolved (flow, target) pairs, counted before jobs are built.
DEFAULT_MAX_PAIRS = 200_000
# A syntax error is re-worded by the pure-Python parser only in files up to this size: its
# messages are the same on every platform, but it is about 20 times slower than libyaml.
_PURE_PYTHON_ERROR_BYTES = 1024 * 1024


def parse_duration(value: object) -> float:
    """`5s`, `1m30s`, `250ms`, `2h` or a plain number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, 1m30s or 250ms")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value and _DURATION.sub("", value.strip()) == "":
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(value))
    else:
        raise ValueError(f"expected a duration such as 5s, 1m30s or 250ms, got {value!r}")
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
Port = Annotated[int, Field(ge=1, le=65535)]
FlowId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A configured destination: one host (and optional port) or a network to expand."""

    host: str = ""
    port: int | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None


def parse_endpoint(text: str) -> Endpoint:
    """`host`, `host:port`, `[v6]:port`, a bare IPv6 literal, or a CIDR network."""
    text = text.strip()
    if not text:
        raise ValueError("empty target")
    if "/" in text:
        try:
            return Endpoint(network=ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid CIDR network") from exc
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"{text!r}: missing ']'")
        _require_ip(host, text)
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected [address]:port")
        return Endpoint(host=host, port=_port(rest[1:], text) if rest else None)
    if text.count(":") > 1:
        _require_ip(text, text)
        return Endpoint(host=text)
    host, sep, port = text.partition(":")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", host):
        raise ValueError(f"{text!r} is not a valid host name or address")
    return Endpoint(host=host, port=_port(port, text) if sep else None)


def _require_ip(host: str, text: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid IPv6 address") from exc


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{whole!r}: port must be a number from 1 to 65535")
    return int(text)


def _endpoint(value: object) -> Endpoint:
    if isinstance(value, Endpoint):
        return value
    if not isinstance(value, str):
        raise ValueError("a target must be a string such as host, host:port or 10.0.0.0/24")
    return parse_endpoint(value)


EndpointField = Annotated[Endpoint, BeforeValidator(_endpoint)]


class SecretRef(StrictModel):
    """A credential given by reference; the value itself never sits in the config."""

    file: Path | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of file or env")
        return self

    def reveal(self) -> str:
        """Read the secret now; errors name the reference, never the content."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise CredentialError(f"environment variable {self.env} is not set")
            return value
        assert self.file is not None
        try:
            return self.file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise CredentialError(f"cannot read secret file {self.file}: {exc.strerror}") from exc

    def __repr__(self) -> str:
        return f"SecretRef(file={self.file!s})" if self.file else f"SecretRef(env={self.env})"


class Defaults(StrictModel):
    """Interval and timeout of every flow unless the flow overrides them."""

    interval: Duration = 60.0
    timeout: Duration = 5.0


class SchedulerSettings(StrictModel):
    """Bounds on how hard the exporter probes."""

    concurrency: int = Field(default=256, ge=1, le=10000)
    per_host_concurrency: int = Field(default=8, ge=1, le=1000)
    startup_spread: Duration = 10.0
    jitter: float = Field(default=0.05, ge=0.0, le=0.5)
    max_hosts_per_network: int = Field(default=4096, ge=1, le=1 << 20)
    max_pairs: int = Field(default=DEFAULT_MAX_PAIRS, ge=1, le=10_000_000)


class FlowOverride(BaseModel):
    """Per-flow changes; keys other than these are the check's own settings."""

    model_config = ConfigDict(extra="allow", frozen=True)

    enabled: bool = True
    port: Port | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    targets: list[EndpointField] | None = None


class ExtraFlow(FlowOverride):
    """A flow of the user's own; `target` is shorthand for a one-element `targets`."""

    id: FlowId
    check: str
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _single_target(cls, data: Any) -> Any:
        if isinstance(data, dict) and "target" in data:
            data = dict(data)
            if "targets" in data:
                raise ValueError("give either target or targets, not both")
            data["targets"] = [data.pop("target")]
        return data


class ConfigFile(StrictModel):
    """The whole config file."""

    source: VantagePoint = VantagePoint.ENDPOINT_SERVER
    defaults: Defaults = Defaults()
    scheduler: SchedulerSettings = SchedulerSettings()
    targets: dict[Role, list[EndpointField]] = Field(default_factory=dict)
    flows: dict[str, FlowOverride] = Field(default_factory=dict)
    extra_flows: list[ExtraFlow] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Job:
    """One (flow, target) pair the exporter checks.

    `key` and `spread_fraction` are computed once, when the job is built (on the loader's
    thread for a reload), so that applying a config of 100,000 pairs on the event loop is
    dictionary work only.
    """

    flow_id: str
    check: str
    spec: AnyCheckSpec
    target: Target
    settings: CheckSettings
    interval: float
    timeout: float
    catalogue_flow: Flow | None = None
    # Identity of the pair across reloads.
    key: tuple[str, str] = field(init=False, repr=False, compare=False)
    # A stable number in [0, 1) that places this job's first run in the start-up spread.
    spread_fraction: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        target = str(self.target)
        digest = hashlib.blake2b(f"{self.flow_id}|{target}".encode(), digest_size=8).digest()
        object.__setattr__(self, "key", (self.flow_id, target))
        object.__setattr__(self, "spread_fraction", int.from_bytes(digest, "big") / 2**64)


@dataclass(frozen=True, slots=True)
class Config:
    """A validated config resolved into jobs; immutable, swapped whole on reload."""

    file: ConfigFile
    origin: str
    jobs: tuple[Job, ...]
    warnings: tuple[str, ...] = ()
    skipped_flows: Mapping[str, str] = field(default_factory=dict)
    # The jobs by key, built with the config (on the loader's thread for a reload), so that
    # the scheduler and the store take it over on the event loop without building it there.
    by_key: Mapping[tuple[str, str], Job] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_key", {job.key: job for job in self.jobs})

    @property
    def source(self) -> VantagePoint:
        """The vantage point this exporter stands on (the `source` label)."""
        return self.file.source

    def job_for(self, flow_id: str) -> Job | None:
        """Any job of a flow, used as a template by `/probe`."""
        return next((job for job in self.jobs if job.flow_id == flow_id), None)


def effective_check(flow: Flow) -> str | None:
    """The check that runs for a catalogue flow in this build (None: none can yet)."""
    if flow.check in CHECKS:
        return flow.check
    if flow.transport is not Transport.TCP:
        return None
    return "tls" if flow.check in _TLS_FALLBACK else "tcp"


def default_config_text() -> str:
    """The embedded default: this host's loopback in every destination role."""
    return resources.files("exporter").joinpath("default.yaml").read_text(encoding="utf-8")


def load_config(path: str | Path | None) -> Config:
    """Load and resolve a config file, or the embedded default when `path` is None.

    Whatever the file holds, this returns or raises `ConfigError` within bounded time and
    memory: the read never blocks, and the YAML is bounded before anything is built from it.
    """
    if path is None:
        return parse_config(default_config_text(), EMBEDDED_DEFAULT)
    origin = str(path)
    text = _decode_utf8(_read_regular_file(origin), origin)
    try:
        return parse_config(text, origin)
    except (RecursionError, MemoryError) as exc:
        # Last resort: the caps above should make these unreachable. `from None`: a traceback
        # of either would be thousands of lines and says nothing an operator can act on.
        what = "too deeply nested" if isinstance(exc, RecursionError) else "too large"
        problem = ConfigProblem(origin, None, "", f"the document is {what} to load")
        raise ConfigError([problem]) from None


def _read_regular_file(path: str) -> bytes:
    """The file's bytes, read without ever blocking and never more than the size cap + 1.

    `stat` first refuses a FIFO, device, directory or socket without opening it (opening a
    device can have effects of its own); `fstat` on the opened descriptor then closes the race
    with a file swapped in between. `O_NONBLOCK` makes even that open return at once for a FIFO
    with no writer.
    """
    try:
        _require_regular(os.stat(path).st_mode, path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError([ConfigProblem(path, None, "", exc.strerror or str(exc))]) from exc
    try:
        status = os.fstat(fd)
        _require_regular(status.st_mode, path)
        if status.st_size > MAX_CONFIG_BYTES:
            raise _too_large(path, status.st_size)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_CONFIG_BYTES:  # a file that grows while read stops at cap + 1
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError([ConfigProblem(path, None, "", exc.strerror or str(exc))]) from exc
    finally:
        os.close(fd)
    if size > MAX_CONFIG_BYTES:
        raise _too_large(path, None)
    return b"".join(chunks)


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _require_regular(mode: int, path: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    via = " (through a symbolic link)" if os.path.islink(path) else ""
    message = f"is {kind}{via}; the config must be a regular file"
    raise ConfigError([ConfigProblem(path, None, "", message)])


def _too_large(path: str, size: int | None) -> ConfigError:
    """`size` is the file's size, or None for a file that grew past the cap while read."""
    amount = f"is {size} bytes" if size is not None else "grew while read"
    limit = MAX_CONFIG_BYTES // (1024 * 1024)
    message = f"{amount}, over the {limit} MiB limit for a config file"
    return ConfigError([ConfigProblem(path, None, "", message)])


def _decode_utf8(data: bytes, origin: str) -> str:
    """Decode the file; a bad byte is located, and the error never carries the file's content.

    A `UnicodeDecodeError` holds the whole input, so it must not travel in `__context__` either:
    a logged traceback would print every inline secret of the file.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start
    line = data.count(b"\n", 0, offset) + 1
    message = f"not UTF-8: byte 0x{data[offset]:02x} at offset {offset}"
    raise ConfigError([ConfigProblem(origin, line, "", message)])


def parse_config(text: str, origin: str) -> Config:
    """Validate YAML text into a `Config`; raise `ConfigError` listing every problem."""
    try:
        node, raw = _load_yaml(text, origin)
    except yaml.YAMLError as exc:
        # `from None`: the error's marks hold the whole text, and a snippet of it in their repr.
        raise ConfigError([_yaml_problem(exc, text, origin)]) from None
    lines = _LineMap(node, origin)
    if raw is None:
        message = "the file is empty (or holds only comments); a config needs at least one setting"
        raise ConfigError([ConfigProblem(origin, 1, "", message)])
    if not isinstance(raw, dict):
        raise ConfigError([ConfigProblem(origin, 1, "", "the top level must be a mapping")])
    problems = list(lines.duplicates)
    try:
        config_file = ConfigFile.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, lines, ()))
        raise ConfigError(problems) from exc
    resolver = _Resolver(config_file, lines)
    jobs = resolver.resolve()
    problems.extend(resolver.problems)
    if problems:
        raise ConfigError(problems)
    return Config(config_file, origin, tuple(jobs), tuple(resolver.warnings), resolver.skipped)


# libyaml's parser where PyYAML has it (its wheels do): 10,000 targets load in a fraction of the
# pure-Python parser's time, which matters for start-up and reloads.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(text: str, origin: str) -> tuple[yaml.Node | None, Any]:
    """Parse once: the node tree (for line numbers) and the plain data built from it.

    A syntax error is reported by the pure-Python parser, whose messages are the same on
    every platform (libyaml words them differently), as long as the file is small enough for
    it to be quick.
    """
    try:
        return _parse_yaml(text, _SafeLoader, origin)
    except yaml.YAMLError:
        if _SafeLoader is yaml.SafeLoader or len(text) > _PURE_PYTHON_ERROR_BYTES:
            raise
        return _parse_yaml(text, yaml.SafeLoader, origin)


def _parse_yaml(
    text: str, loader_class: type[yaml.SafeLoader], origin: str
) -> tuple[yaml.Node | None, Any]:
    _check_yaml_bounds(text, loader_class, origin)
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return node, data


def _check_yaml_bounds(text: str, loader_class: type[yaml.SafeLoader], origin: str) -> None:
    """Refuse deep nesting and alias bombs from the event stream, before any node is built.

    The event parser is a state machine in both libyaml and PyYAML, so this pass holds only the
    open collections and one size per anchor, whatever the file. The composer and the line map
    recurse once per level, and both they and pydantic walk every alias as a full copy; so
    aliases are allowed (they are a fair way to share a target list) but each counts for the
    nodes it stands for, known once its anchored node ends. What aliases add in all must stay
    under MAX_ALIAS_NODES, a fixed amount whatever the file's size, rather than a multiple of
    it; and the whole expanded document under MAX_YAML_NODES.
    """
    loader = loader_class(text)
    anchors: dict[str, int] = {}  # anchor -> nodes it expands to
    open_collections: list[tuple[str | None, int]] = []  # (anchor, node count at its start)
    nodes = 0
    alias_nodes = 0
    try:
        while loader.check_event():
            event: yaml.Event = loader.get_event()  # type: ignore[no-untyped-call]  # stub
            if isinstance(event, yaml.ScalarEvent):
                nodes += 1
                if event.anchor is not None:
                    anchors[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                nodes += 1
                open_collections.append((event.anchor, nodes))
                if len(open_collections) > MAX_YAML_DEPTH:
                    message = f"nested deeper than {MAX_YAML_DEPTH} levels"
                    raise _event_error(event, origin, message)
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, start = open_collections.pop()
                if anchor is not None:
                    anchors[anchor] = nodes - start + 1
            elif isinstance(event, yaml.AliasEvent):
                size = anchors.get(event.anchor) if event.anchor is not None else None
                if size is None:
                    inside = any(anchor == event.anchor for anchor, _ in open_collections)
                    problem = "refers to a node that contains it" if inside else "has no anchor"
                    raise _event_error(event, origin, f"alias *{event.anchor} {problem}")
                nodes += size
                alias_nodes += size
                if alias_nodes > MAX_ALIAS_NODES:
                    message = (
                        f"aliases repeat more than {MAX_ALIAS_NODES} nodes in all "
                        "(each alias counts for every node of its anchor)"
                    )
                    raise _event_error(event, origin, message)
            if nodes > MAX_YAML_NODES:
                message = f"the document has more than {MAX_YAML_NODES} nodes"
                raise _event_error(event, origin, message)
    finally:
        loader.dispose()


def _event_error(event: yaml.Event, origin: str, message: str) -> ConfigError:
    line = event.start_mark.line + 1 if event.start_mark is not None else None
    return ConfigError([ConfigProblem(origin, line, "", message)])


class _LineMap:
    """Line numbers of every key and item in a YAML document, by field path."""

    def __init__(self, node: yaml.Node | None, origin: str) -> None:
        self.origin = origin
        self.lines: dict[tuple[str | int, ...], int] = {}
        self.duplicates: list[ConfigProblem] = []
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple[str | int, ...]) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in seen:
                    self.duplicates.append(
                        ConfigProblem(
                            self.origin,
                            key_node.start_mark.line + 1,
                            format_path((*path, key)),
                            "duplicate key",
                        )
                    )
                seen.add(key)
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                self._walk(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, (*path, index))

    def line_of(self, path: tuple[str | int, ...]) -> int | None:
        """Line of the deepest known prefix of `path`."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def problem(self, path: tuple[str | int, ...], message: str) -> ConfigProblem:
        """A problem located at `path`."""
        return ConfigProblem(self.origin, self.line_of(path), format_path(path), message)


def format_path(path: Iterable[str | int]) -> str:
    """`("extra_flows", 0, "check")` → `extra_flows[0].check`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _yaml_problem(exc: yaml.YAMLError, text: str, origin: str) -> ConfigProblem:
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML forbids, such as NUL
        where = text.count("\n", 0, exc.position) + 1
        message = f"YAML syntax error: {exc.reason} #x{exc.character:04x} at offset {exc.position}"
        return ConfigProblem(origin, where, "", message)
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        context = f"{context} that starts on line {context_mark.line + 1}"
    message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    return ConfigProblem(origin, line, "", message)


def _pydantic_problems(
    exc: ValidationError, lines: _LineMap, prefix: tuple[str | int, ...]
) -> Iterator[ConfigProblem]:
    for error in exc.errors():
        path = (*prefix, *(part for part in error["loc"] if not _is_internal(part)))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] in ("model_type", "dict_type"):
            message = "expected a mapping (key: value)"
        yield lines.problem(path, message)


def _is_internal(part: str | int) -> bool:
    """Pydantic inserts validator names (e.g. `function-before[...]`) into error paths."""
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


class _Resolver:
    """Cross-field checks and expansion of flows x targets into jobs."""

    def __init__(self, config: ConfigFile, lines: _LineMap) -> None:
        self.config = config
        self.lines = lines
        self.problems: list[ConfigProblem] = []
        self.warnings: list[str] = []
        self.skipped: dict[str, str] = {}
        self.pairs = 0  # counted before each flow's jobs are built
        self.over_limit_at: tuple[str | int, ...] | None = None

    def resolve(self) -> list[Job]:
        jobs: list[Job] = []
        self._check_network_sizes()
        defaults = self.config.defaults
        if defaults.timeout > defaults.interval:
            self.problems.append(
                self.lines.problem(("defaults", "timeout"), "timeout must not exceed the interval")
            )
        for flow_id in self.config.flows:
            if flow_id not in FLOWS_BY_ID:
                known = ", ".join(sorted(FLOWS_BY_ID))
                self.problems.append(
                    self.lines.problem(("flows", flow_id), f"unknown flow id (known: {known})")
                )
        for flow in FLOWS:
            jobs.extend(self._catalogue_jobs(flow))
        seen_ids: set[str] = set()
        for index, extra in enumerate(self.config.extra_flows):
            path: tuple[str | int, ...] = ("extra_flows", index)
            if extra.id in FLOWS_BY_ID or extra.id in seen_ids:
                self.problems.append(
                    self.lines.problem((*path, "id"), f"flow id {extra.id!r} is already used")
                )
            seen_ids.add(extra.id)
            jobs.extend(self._extra_jobs(extra, path))
        if self.over_limit_at is not None:
            limit = self.config.scheduler.max_pairs
            self.problems.append(
                self.lines.problem(
                    self.over_limit_at,
                    f"the config resolves to {self.pairs} (flow, target) pairs, more than "
                    f"scheduler.max_pairs ({limit}); this flow crosses the limit",
                )
            )
        return jobs

    def _check_network_sizes(self) -> None:
        """Report each oversized network once, where it is written."""
        limit = self.config.scheduler.max_hosts_per_network
        written: list[tuple[tuple[str | int, ...], list[Endpoint]]] = [
            (("targets", role.value), endpoints) for role, endpoints in self.config.targets.items()
        ]
        written += [
            (("flows", flow_id, "targets"), override.targets)
            for flow_id, override in self.config.flows.items()
            if override.targets
        ]
        written += [
            (("extra_flows", index, "targets"), extra.targets)
            for index, extra in enumerate(self.config.extra_flows)
            if extra.targets
        ]
        for path, endpoints in written:
            for index, endpoint in enumerate(endpoints):
                if endpoint.network is not None and endpoint.network.num_addresses > limit:
                    self.problems.append(
                        self.lines.problem(
                            (*path, index),
                            f"network {endpoint.network} has {endpoint.network.num_addresses} "
                            f"addresses, more than scheduler.max_hosts_per_network ({limit})",
                        )
                    )

    def _catalogue_jobs(self, flow: Flow) -> list[Job]:
        override = self.config.flows.get(flow.id, FlowOverride())
        path: tuple[str | int, ...] = ("flows", flow.id)
        check = effective_check(flow)
        if flow.source is not self.config.source:
            if flow.id in self.config.flows:
                self.warnings.append(
                    f"flow {flow.id} is measured from {flow.source.value}; this exporter stands "
                    f"on {self.config.source.value}, so its settings are not used here"
                )
            return []
        if not override.enabled:
            self.skipped[flow.id] = "disabled in the config"
            return []
        if check is None:
            self.skipped[flow.id] = f"check {flow.check} is not available in this version"
            return []
        endpoints = override.targets
        if endpoints is None:
            endpoints = self.config.targets.get(flow.destination, [])
        if not endpoints:
            self.skipped[flow.id] = f"no targets for role {flow.destination.value}"
            return []
        extras = override.model_extra or {}
        if check != flow.check:
            self.warnings.append(
                f"flow {flow.id}: check {flow.check} is not available in this version; "
                f"running {check} instead"
            )
            if extras:
                self.warnings.append(
                    f"flow {flow.id}: settings {', '.join(sorted(extras))} apply to check "
                    f"{flow.check} and are ignored until it is available"
                )
            extras = {}
        return self._jobs(
            flow.id,
            check,
            override=override,
            extras=extras,
            endpoints=endpoints,
            path=path,
            flow=flow,
            default_port=flow.port,
        )

    def _extra_jobs(self, extra: ExtraFlow, path: tuple[str | int, ...]) -> list[Job]:
        if extra.check not in CHECKS:
            known = ", ".join(sorted(CHECKS))
            self.problems.append(
                self.lines.problem(
                    (*path, "check"), f"unknown check {extra.check!r} (known: {known})"
                )
            )
            return []
        if not extra.enabled:
            self.skipped[extra.id] = "disabled in the config"
            return []
        if not extra.targets:
            self.problems.append(
                self.lines.problem((*path, "targets"), "needs at least one target")
            )
            return []
        extras = dict(extra.model_extra or {})  # declared fields never land in model_extra
        return self._jobs(
            extra.id,
            extra.check,
            override=extra,
            extras=extras,
            endpoints=extra.targets,
            path=path,
            flow=None,
            default_port=None,
        )

    def _jobs(
        self,
        flow_id: str,
        check: str,
        *,
        override: FlowOverride,
        extras: Mapping[str, Any],
        endpoints: list[Endpoint],
        path: tuple[str | int, ...],
        flow: Flow | None,
        default_port: int | None,
    ) -> list[Job]:
        spec = CHECKS[check]
        try:
            settings = spec.settings_model.model_validate(dict(extras))
        except ValidationError as exc:
            self.problems.extend(_pydantic_problems(exc, self.lines, path))
            return []
        port = override.port or default_port
        interval = override.interval or self.config.defaults.interval
        timeout = override.timeout or self.config.defaults.timeout
        if timeout > interval:
            if override.timeout is not None or override.interval is not None:
                key = "timeout" if override.timeout is not None else "interval"
                self.problems.append(
                    self.lines.problem((*path, key), "timeout must not exceed the interval")
                )
            return []  # otherwise the defaults are at fault, reported once by resolve()
        self.pairs += sum(_pair_count(endpoint, self.config.scheduler) for endpoint in endpoints)
        if self.pairs > self.config.scheduler.max_pairs:
            # Counted, never built: a small file of large networks must not cost minutes.
            self.over_limit_at = self.over_limit_at or path
            return []
        jobs: list[Job] = []
        for target in self._targets(endpoints, port, spec, path):
            jobs.append(Job(flow_id, check, spec, target, settings, interval, timeout, flow))
        return jobs

    def _targets(
        self,
        endpoints: list[Endpoint],
        port: int | None,
        spec: AnyCheckSpec,
        path: tuple[str | int, ...],
    ) -> Iterator[Target]:
        limit = self.config.scheduler.max_hosts_per_network
        for endpoint in endpoints:
            target_port = (endpoint.port or port) if spec.uses_port else None
            if spec.uses_port and target_port is None:
                self.problems.append(
                    self.lines.problem((*path, "port"), f"check {spec.name} needs a port")
                )
                return
            if endpoint.network is None:
                yield Target(endpoint.host, target_port)
                continue
            if endpoint.network.num_addresses > limit:
                continue  # reported once by _check_network_sizes
            for address in endpoint.network.hosts():
                yield Target(str(address), target_port)


def _pair_count(endpoint: Endpoint, scheduler: SchedulerSettings) -> int:
    """Pairs an endpoint yields, by arithmetic: what `network.hosts()` would give."""
    network = endpoint.network
    if network is None:
        return 1
    if network.num_addresses > scheduler.max_hosts_per_network:
        return 0  # reported once by _check_network_sizes
    if network.num_addresses <= 2:  # /31, /32, /127, /128: every address is a host
        return network.num_addresses
    return network.num_addresses - (2 if network.version == 4 else 1)
