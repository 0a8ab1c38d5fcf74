"""The YAML config: typed models, a loader that locates every error, and resolution into jobs.

Loading has two stages, after the file has been read (a regular file only, never blocking, at
most MAX_CONFIG_BYTES) and its YAML bounded in depth, aliases and size from the event stream.
The file's structure is validated into `ConfigFile` (unknown keys rejected); then cross-field
checks (known flow ids and roles, check settings against each check's own model, the number of
pairs against `scheduler.max_pairs`) run. Every problem found is reported with file, line and
field path, all at once, so that one `validate` run shows everything to fix.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import idna
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from exporter.catalogue import FLOWS, FLOWS_BY_ID, Flow, Role, VantagePoint
from exporter.checks import CHECKS, AnyCheckSpec, CheckSettings, Target
from exporter.checks.net import dns_name_problem
from exporter.errors import ConfigError, ConfigProblem
from exporter.files import FileRefused, read_regular_file
from exporter.networks import Network, Shard, parse_host_list
from exporter.probe_policy import AllowPattern, parse_allow_pattern
from exporter.secrets import unreadable_secrets

EMBEDDED_DEFAULT = "<embedded default>"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
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
# Default of scheduler.max_pairs: resolved (flow, target) pairs, counted before jobs are built
# and before duplicate pairs are dropped, so the count is an upper bound of the jobs.
DEFAULT_MAX_PAIRS = 200_000
# The check whose answer tells a sweep that a host is there (`presence: icmp`).
PRESENCE_CHECK = "icmp"
# A host list of a /16 written one address a line is under 1 MiB; sixteen leave room for comments.
MAX_HOST_LIST_BYTES = 16 * 1024 * 1024
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
Severity = Literal["critical", "warning", "info"]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A configured destination: one host (and optional port), a CIDR network or a host list.

    A network or host list is swept (per-network aggregates, `exporter.sweep`) on flows to
    endpoint networks and expanded into one pair per host elsewhere.
    """

    host: str = ""
    port: int | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    host_list: Network | None = None

    @property
    def hosts_of(self) -> Network | None:
        """The network this endpoint stands for (a CIDR or a host list), None for one host."""
        if self.host_list is not None:
            return self.host_list
        if self.network is not None:
            return Network(str(self.network), (self.network,))
        return None


def parse_endpoint(text: str) -> Endpoint:
    """`host`, `host:port`, `[v6]:port`, a bare IPv6 literal, or a CIDR network.

    A host name must be one DNS can carry (see `dns_name_problem`); an internationalised name
    is converted to its ASCII form (`bücher.example` → `xn--bcher-kva.example`, IDNA 2008 with
    UTS 46 mapping), the form the resolver, SNI and the `target` label all use.
    """
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
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            reason = str(exc) if len(str(exc)) <= 100 else f"{str(exc)[:100]}…"
            raise ValueError(f"{_quoted(text)} is not a valid host name: {reason}") from exc
    problem = dns_name_problem(host)
    if problem is not None:
        raise ValueError(f"{_quoted(text)} is not a valid host name or address: {problem}")
    return Endpoint(host=host, port=_port(port, text) if sep else None)


def _quoted(text: str) -> str:
    """The text as written, shortened: an 8 kB target must not come back in every message."""
    return repr(text) if len(text) <= 80 else f"{text[:60]!r}… ({len(text)} characters)"


def _require_ip(host: str, text: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid IPv6 address") from exc


def _port(text: str, whole: str) -> int:
    """ASCII digits only: `str.isdigit` also admits '²' and Arabic-Indic digits."""
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{_quoted(whole)}: port must be a number from 1 to 65535")
    return int(text)


def _endpoint(value: object) -> Endpoint:
    if isinstance(value, Endpoint):
        return value
    if isinstance(value, dict) and set(value) == {"file"} and isinstance(value["file"], str):
        return read_host_list(value["file"])
    if not isinstance(value, str):
        raise ValueError(
            "a target must be a string such as host, host:port or 10.0.0.0/24, "
            "or {file: PATH} naming a host list"
        )
    return parse_endpoint(value)


def read_host_list(path: str) -> Endpoint:
    """A `{file: PATH}` target: one address or CIDR a line (see `exporter.networks`)."""
    try:
        _, data = read_regular_file(path, MAX_HOST_LIST_BYTES, "host list")
    except (OSError, FileRefused) as exc:
        raise ValueError(f"host list {path}: {exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"host list {path} is not UTF-8 text") from exc
    blocks = parse_host_list(text, path)
    if not blocks:
        raise ValueError(f"host list {path} names no host")
    return Endpoint(host_list=Network(f"file:{path}", blocks))


EndpointField = Annotated[Endpoint, BeforeValidator(_endpoint)]


def _shard(value: object) -> Shard:
    if isinstance(value, Shard):
        return value
    if not isinstance(value, str):
        raise ValueError("a shard is written I/N, such as 0/2")
    return Shard.parse(value)


ShardField = Annotated[Shard, BeforeValidator(_shard)]


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
    # A network written for a flow that does not sweep it becomes one pair per host.
    max_hosts_per_network: int = Field(default=4096, ge=1, le=1 << 20)
    # A swept network costs a few dozen series however large; this bounds one sweep's work.
    max_hosts_per_sweep: int = Field(default=1 << 20, ge=1, le=1 << 24)
    shard: ShardField | None = None
    max_pairs: int = Field(default=DEFAULT_MAX_PAIRS, ge=1, le=10_000_000)
    # Threads for checks whose library blocks (ldap3, pymssql); as many calls again may wait.
    # Read at start-up: a reload that changes it applies at the next restart.
    blocking_workers: int = Field(default=32, ge=1, le=1024)


def _allow_pattern(value: object) -> AllowPattern:
    if isinstance(value, AllowPattern):
        return value
    if not isinstance(value, str):
        raise ValueError("a pattern must be a string such as 10.0.0.0/8 or *.corp.example:443")
    return parse_allow_pattern(value)


AllowPatternField = Annotated[AllowPattern, BeforeValidator(_allow_pattern)]


class ProbeModuleSettings(StrictModel):
    """What one module (a flow id or a check id) may probe beyond the defaults."""

    allow: list[AllowPatternField] = Field(default_factory=list)


class ProbeSettings(StrictModel):
    """Bounds on `/probe`: what it may reach (see `exporter.probe_policy`) and how many at once.

    The default concurrency of 32 covers a Prometheus polling dozens of targets through
    `/probe` (each probe lasts at most its timeout) while two descriptors per probe (the
    request and the check's connection) stay far below a 1,024-descriptor limit next to the
    scheduler's own 256 checks.
    """

    allow: list[AllowPatternField] = Field(default_factory=list)
    concurrency: int = Field(default=32, ge=1, le=10000)
    modules: dict[str, ProbeModuleSettings] = Field(default_factory=dict)


class FlowOverride(BaseModel):
    """Per-flow changes; keys other than these are the check's own settings.

    `sweep` says whether the flow's networks are swept (default: on flows to endpoint
    networks); `per_host`, `max_per_host_series` and `presence` shape a sweep's output.
    `severity` overrides the catalogue's (alerts page by it); `histograms` adds a latency
    histogram per pair to the per-flow one (14 series a pair).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    enabled: bool = True
    port: Port | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    targets: list[EndpointField] | None = None
    severity: Severity | None = None
    histograms: bool = False
    sweep: bool | None = None
    per_host: bool = False
    max_per_host_series: int = Field(default=256, ge=1, le=65536)
    presence: Literal["icmp", "none"] = "icmp"


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
    probe: ProbeSettings = ProbeSettings()


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
    histograms: bool = False  # a latency histogram of this pair's own (opt-in: 14 series)
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
class FlowTemplate:
    """A runnable flow's resolved settings, with or without targets: what `/probe` runs."""

    flow_id: str
    check: str
    spec: AnyCheckSpec
    settings: CheckSettings
    port: int | None
    interval: float
    timeout: float
    catalogue_flow: Flow | None
    endpoints: tuple[Endpoint, ...] = ()
    severity: str = "warning"
    histograms: bool = False
    description: str = ""

    def port_for(self, written: int | None) -> int | None:
        """The port checked for a target written with `written`: its own, else the flow's;
        None when the check takes no port. The scheduler and `/probe` both ask here."""
        return (written or self.port) if self.spec.uses_port else None

    def target(self, host: str, written_port: int | None) -> Target:
        """The target checked for `host` written with `written_port`."""
        port = self.port_for(written_port)
        if self.spec.uses_port and port is None:
            raise ValueError(f"check {self.spec.name} needs a port")
        return Target(host, port)

    def job(self, target: Target) -> Job:
        """This flow's job for `target`."""
        return Job(
            self.flow_id,
            self.check,
            self.spec,
            target,
            self.settings,
            self.interval,
            self.timeout,
            self.catalogue_flow,
            self.histograms,
        )


@dataclass(frozen=True, slots=True)
class Sweep:
    """One flow checked across one network on the flow's interval (see `exporter.sweep`).

    It is scheduled like a `Job` (same `key`, `interval` and `spread_fraction` attributes);
    its key's second part is the network's label, which no single target can spell (a CIDR
    has a '/', a host list starts with 'file:').
    """

    template: FlowTemplate
    network: Network
    port: int | None
    per_host: bool
    max_per_host_series: int
    presence: bool
    shard: Shard | None
    key: tuple[str, str] = field(init=False, repr=False, compare=False)
    spread_fraction: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        label = self.network.label
        digest = hashlib.blake2b(f"{self.template.flow_id}|{label}".encode(), digest_size=8)
        object.__setattr__(self, "key", (self.template.flow_id, label))
        object.__setattr__(self, "spread_fraction", int.from_bytes(digest.digest(), "big") / 2**64)

    @property
    def flow_id(self) -> str:
        """The flow swept."""
        return self.template.flow_id

    @property
    def check(self) -> str:
        """The check run on every host."""
        return self.template.check

    @property
    def interval(self) -> float:
        """Seconds between the starts of two sweeps."""
        return self.template.interval

    @property
    def timeout(self) -> float:
        """Each host's check timeout."""
        return self.template.timeout

    def job(self, host: str) -> Job:
        """The pair of one host of the network (for its per-host series and details)."""
        return self.template.job(Target(host, self.port))


@dataclass(frozen=True, slots=True)
class Config:
    """A validated config resolved into jobs; immutable, swapped whole on reload."""

    file: ConfigFile
    origin: str
    jobs: tuple[Job, ...]
    warnings: tuple[str, ...] = ()
    skipped_flows: Mapping[str, str] = field(default_factory=dict)
    templates: Mapping[str, FlowTemplate] = field(default_factory=dict)
    sweeps: tuple[Sweep, ...] = ()
    # The jobs by key, built with the config (on the loader's thread for a reload), so that
    # the scheduler and the store take it over on the event loop without building it there.
    by_key: Mapping[tuple[str, str], Job] = field(init=False, repr=False, compare=False)
    sweeps_by_key: Mapping[tuple[str, str], Sweep] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_key", {job.key: job for job in self.jobs})
        object.__setattr__(self, "sweeps_by_key", {sweep.key: sweep for sweep in self.sweeps})

    @property
    def source(self) -> VantagePoint:
        """The vantage point this exporter stands on (the `source` label)."""
        return self.file.source

    def check_template(self, check: str) -> FlowTemplate:
        """A bare check with default settings, for `/probe?module=<check id>`."""
        spec = CHECKS[check]
        defaults = self.file.defaults
        return FlowTemplate(
            flow_id=check,
            check=check,
            spec=spec,
            settings=spec.settings_model(),
            port=None,
            interval=defaults.interval,
            timeout=defaults.timeout,
            catalogue_flow=None,
        )


def default_config_text() -> str:
    """The embedded default: this host's loopback in every destination role."""
    return resources.files("exporter").joinpath("default.yaml").read_text(encoding="utf-8")


def load_config(path: str | Path | None, *, shard: Shard | None = None) -> Config:
    """Load and resolve a config file, or the embedded default when `path` is None.

    Whatever the file holds, this returns or raises `ConfigError` within bounded time and
    memory: the read never blocks, and the YAML is bounded before anything is built from it.
    `shard` (the command line's `--shard`) takes the place of `scheduler.shard`.
    """
    if path is None:
        return parse_config(default_config_text(), EMBEDDED_DEFAULT, shard=shard)
    origin = str(path)
    text = read_config_text(origin)
    try:
        return parse_config(text, origin, shard=shard)
    except (RecursionError, MemoryError) as exc:
        # Last resort: the caps above should make these unreachable. `from None`: a traceback
        # of either would be thousands of lines and says nothing an operator can act on.
        what = "too deeply nested" if isinstance(exc, RecursionError) else "too large"
        problem = ConfigProblem(origin, None, "", f"the document is {what} to load")
        raise ConfigError([problem]) from None


def read_config_text(path: str, max_bytes: int = MAX_CONFIG_BYTES, what: str = "config") -> str:
    """A config-like file's text: a regular file, read without blocking, bounded, UTF-8."""
    try:
        _, data = read_regular_file(path, max_bytes, what)
    except FileRefused as exc:
        raise ConfigError([ConfigProblem(path, None, "", str(exc))]) from None
    return _decode_utf8(data, path)


def parse_yaml(text: str, origin: str) -> tuple[Any, _LineMap]:
    """The data of a YAML text, bounded before anything is built, with its line numbers."""
    try:
        node, raw = _load_yaml(text, origin)
    except yaml.YAMLError as exc:
        # `from None`: the error's marks hold the whole text, and a snippet of it in their repr.
        raise ConfigError([_yaml_problem(exc, text, origin)]) from None
    return raw, _LineMap(node, origin)


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


ModelT = TypeVar("ModelT", bound=BaseModel)


def validate_document(
    model: type[ModelT], raw: object, lines: _LineMap
) -> tuple[ModelT, list[ConfigProblem]]:
    """A parsed document's top level validated as `model`, and its duplicate keys as problems.

    Raises `ConfigError` listing every problem the model finds, located by `lines`. The error is
    raised outside the `except`, so it chains nothing: a `ValidationError` quotes every input it
    refused, inline secrets included.
    """
    if not isinstance(raw, dict):
        raise ConfigError([ConfigProblem(lines.origin, 1, "", "the top level must be a mapping")])
    problems = list(lines.duplicates)
    try:
        return model.model_validate(raw), problems
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, lines, ()))
    raise ConfigError(problems)


def parse_config(text: str, origin: str, *, shard: Shard | None = None) -> Config:
    """Validate YAML text into a `Config`; raise `ConfigError` listing every problem."""
    raw, lines = parse_yaml(text, origin)
    if raw is None:
        message = "the file is empty (or holds only comments); a config needs at least one setting"
        raise ConfigError([ConfigProblem(origin, 1, "", message)])
    config_file, problems = validate_document(ConfigFile, raw, lines)
    if shard is not None:
        scheduler = config_file.scheduler.model_copy(update={"shard": shard})
        config_file = config_file.model_copy(update={"scheduler": scheduler})
    resolver = _Resolver(config_file, lines)
    jobs = resolver.resolve()
    problems.extend(resolver.problems)
    if problems:
        raise ConfigError(problems)
    return Config(
        config_file,
        origin,
        tuple(jobs),
        tuple(resolver.warnings),
        resolver.skipped,
        resolver.templates,
        tuple(resolver.sweeps),
    )


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
    exc: ValidationError,
    lines: _LineMap,
    prefix: tuple[str | int, ...],
    unknown_key: Callable[[str], str] | None = None,
) -> Iterator[ConfigProblem]:
    """Located problems; `unknown_key` words the message for an unknown key at the top level."""
    for error in exc.errors():
        path = (*prefix, *(part for part in error["loc"] if not _is_internal(part)))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            top = len(path) == len(prefix) + 1
            message = unknown_key(str(path[-1])) if unknown_key and top else "unknown field"
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
        self.templates: dict[str, FlowTemplate] = {}
        self.sweeps: list[Sweep] = []
        self.pairs = 0  # counted before each flow's jobs are built
        # Networks already reported as too large, by where they are written: a role's network
        # is used by every flow to that role and reported once.
        self.reported_networks: set[tuple[str | int, ...]] = set()
        self.over_limit_at: tuple[str | int, ...] | None = None

    def resolve(self) -> list[Job]:
        jobs: list[Job] = []
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
        self._check_probe_modules(seen_ids)
        if self.over_limit_at is not None:
            limit = self.config.scheduler.max_pairs
            self.problems.append(
                self.lines.problem(
                    self.over_limit_at,
                    f"the config resolves to {self.pairs} (flow, target) pairs, more than "
                    f"scheduler.max_pairs ({limit}); this flow crosses the limit (pairs are "
                    "counted as written, before duplicate pairs are dropped)",
                )
            )
        return jobs

    def _check_probe_modules(self, extra_ids: set[str]) -> None:
        """A `probe.modules` key must name a module `/probe` knows: a typo allows nothing."""
        for module in self.config.probe.modules:
            if module not in FLOWS_BY_ID and module not in extra_ids and module not in CHECKS:
                self.problems.append(
                    self.lines.problem(
                        ("probe", "modules", module),
                        f"unknown module {module!r}: give a flow id (catalogue or extra_flows) "
                        f"or a check id ({', '.join(sorted(CHECKS))})",
                    )
                )

    def _catalogue_jobs(self, flow: Flow) -> list[Job]:
        override = self.config.flows.get(flow.id, FlowOverride())
        path: tuple[str | int, ...] = ("flows", flow.id)
        check = flow.check
        settings = self._settings(override, path, check, dict(flow.settings))
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
        if settings is None:
            return []
        endpoints = override.targets
        endpoints_path: tuple[str | int, ...] = (*path, "targets")
        if endpoints is None:
            endpoints = self.config.targets.get(flow.destination, [])
            endpoints_path = ("targets", flow.destination.value)
        if not endpoints:
            self.skipped[flow.id] = f"no targets for role {flow.destination.value}"
        return self._jobs(
            flow.id,
            check,
            override=override,
            settings=settings,
            endpoints=endpoints,
            endpoints_path=endpoints_path,
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
        settings = self._settings(extra, path, extra.check)
        if not extra.enabled:
            self.skipped[extra.id] = "disabled in the config"
            return []
        if not extra.targets:
            self.problems.append(
                self.lines.problem((*path, "targets"), "needs at least one target")
            )
            return []
        if settings is None:
            return []
        return self._jobs(
            extra.id,
            extra.check,
            override=extra,
            settings=settings,
            endpoints=extra.targets,
            endpoints_path=(*path, "targets"),
            path=path,
            flow=None,
            default_port=None,
        )

    def _settings(
        self,
        block: FlowOverride,
        path: tuple[str | int, ...],
        check: str,
        flow_defaults: Mapping[str, object] | None = None,
    ) -> CheckSettings | None:
        """The block's check settings, validated whole before anything decides to skip the flow.

        A mistake in a disabled flow, a flow without targets or one measured from another
        vantage point is still a mistake, and a misspelt `enabled` must never leave a flow
        running. None, with the problems recorded, when the block is invalid. `flow_defaults`
        are the catalogue flow's own settings (the global catalog of `ldaps_gc`), which the
        block may override.
        """
        model = CHECKS[check].settings_model
        allowed = [*type(block).model_fields, *model.model_fields]
        if isinstance(block, ExtraFlow):
            allowed.append("target")
        known = len(self.problems)
        settings: CheckSettings | None = None
        try:
            given = dict(block.model_extra or {})
            defaults = flow_defaults or {}
            settings = model.model_validate({**defaults, **given})
        except ValidationError as exc:
            self.problems.extend(
                _pydantic_problems(exc, self.lines, path, lambda key: _unknown_key(key, allowed))
            )
        if not CHECKS[check].uses_port:
            if block.port is not None:
                self.problems.append(
                    self.lines.problem((*path, "port"), f"check {check} takes no port")
                )
            for index, endpoint in enumerate(block.targets or []):
                if endpoint.port is not None:
                    self.problems.append(
                        self.lines.problem(
                            (*path, "targets", index),
                            f"check {check} takes no port: write the host or network alone",
                        )
                    )
        if settings is not None:
            written = [((*path, "port"), block.port)] + [
                ((*path, "targets", index), endpoint.port)
                for index, endpoint in enumerate(block.targets or [])
            ]
            self._check_ports(CHECKS[check], settings, written)
        interval = block.interval or self.config.defaults.interval
        timeout = block.timeout or self.config.defaults.timeout
        if timeout > interval and (block.timeout is not None or block.interval is not None):
            key = "timeout" if block.timeout is not None else "interval"
            self.problems.append(
                self.lines.problem((*path, key), "timeout must not exceed the interval")
            )
        return settings if len(self.problems) == known else None

    def _check_ports(
        self,
        spec: AnyCheckSpec,
        settings: CheckSettings,
        written: list[tuple[tuple[str | int, ...], int | None]],
    ) -> None:
        """Ports written for a check with a port range (SAP's 32NN), or beside a setting that
        names the port itself (an SAP instance), must agree with it; one problem each."""
        named = spec.settings_port(settings) if spec.settings_port is not None else None
        for where, port in written:
            if port is None:
                continue
            if spec.port_range is not None and not spec.port_range[0] <= port <= spec.port_range[1]:
                low, high = spec.port_range
                self.problems.append(
                    self.lines.problem(
                        where, f"check {spec.name} takes ports {low}-{high}, not {port}"
                    )
                )
            elif named is not None and port != named:
                self.problems.append(
                    self.lines.problem(
                        where,
                        f"port {port} contradicts the settings, which name port {named} "
                        "(write one or the other)",
                    )
                )

    def _jobs(
        self,
        flow_id: str,
        check: str,
        *,
        override: FlowOverride,
        settings: CheckSettings,
        endpoints: list[Endpoint],
        endpoints_path: tuple[str | int, ...],
        path: tuple[str | int, ...],
        flow: Flow | None,
        default_port: int | None,
    ) -> list[Job]:
        spec = CHECKS[check]
        for where, message in unreadable_secrets(settings):
            self.problems.append(self.lines.problem((*path, *where), message))
        self.warnings.extend(f"flow {flow_id}: {warning}" for warning in settings.load_warnings())
        if override.targets is None:  # the role's targets; the flow's own were checked already
            self._check_ports(
                spec,
                settings,
                [
                    ((*endpoints_path, index), endpoint.port)
                    for index, endpoint in enumerate(endpoints)
                ],
            )
        named = spec.settings_port(settings) if spec.settings_port is not None else None
        port = override.port or named or default_port
        interval = override.interval or self.config.defaults.interval
        timeout = override.timeout or self.config.defaults.timeout
        if timeout > interval:
            return []  # the defaults are at fault, reported once by resolve()
        severity = override.severity or (flow.severity if flow is not None else "warning")
        template = FlowTemplate(
            flow_id,
            check,
            spec,
            settings,
            port,
            interval,
            timeout,
            flow,
            tuple(endpoints),
            severity,
            override.histograms,
            override.description if isinstance(override, ExtraFlow) else "",
        )
        self.templates[flow_id] = template
        sweeping = self._sweeps_networks(override, flow)
        sweeps = self._sweeps(
            template,
            override,
            sweeping=sweeping,
            endpoints=endpoints,
            endpoints_path=endpoints_path,
            path=path,
        )
        singles = [endpoint for endpoint in endpoints if not sweeping or endpoint.hosts_of is None]
        scheduler = self.config.scheduler
        self.pairs += sum(_pair_count(endpoint, scheduler) for endpoint in singles)
        self.pairs += sum(
            1 + (min(sweep.network.host_count, sweep.max_per_host_series) if sweep.per_host else 0)
            for sweep in sweeps
        )
        if self.pairs > scheduler.max_pairs:
            # Counted, never built: a small file of large networks must not cost minutes.
            self.over_limit_at = self.over_limit_at or path
            return []
        self.sweeps.extend(sweeps)
        jobs = [template.job(target) for target in self._targets(template, singles, path)]
        # Overlapping targets (`host` beside `host:22` on port 22, a host inside two networks)
        # give the same pair twice: it is checked once. Jobs of one key are equal, so keeping
        # the last of each in the place of the first is keeping the first.
        unique = {job.key: job for job in jobs}
        if len(unique) == len(jobs):
            return jobs
        seen: set[tuple[str, str]] = set()
        example = ""
        for job in jobs:
            if job.key in seen:
                example = job.key[1]
                break
            seen.add(job.key)
        self.warnings.append(
            f"flow {flow_id}: {len(jobs) - len(unique)} duplicate (flow, target) pairs dropped, "
            f"such as {example} (a target written twice, with and without the flow's port, or "
            "inside two networks); each pair is checked once"
        )
        return list(unique.values())

    @staticmethod
    def _sweeps_networks(override: FlowOverride, flow: Flow | None) -> bool:
        """Whether a flow sweeps its networks: as `sweep` says, else when it goes to the
        endpoint networks (where a /16 is normal and per-host series are not affordable)."""
        if override.sweep is not None:
            return override.sweep
        return flow is not None and flow.destination is Role.ENDPOINT_NETWORKS

    def _sweeps(
        self,
        template: FlowTemplate,
        override: FlowOverride,
        *,
        sweeping: bool,
        endpoints: list[Endpoint],
        endpoints_path: tuple[str | int, ...],
        path: tuple[str | int, ...],
    ) -> list[Sweep]:
        """The flow's sweeps, one per distinct network; the size limits checked where written."""
        scheduler = self.config.scheduler
        limit_name, limit = (
            ("max_hosts_per_sweep", scheduler.max_hosts_per_sweep)
            if sweeping
            else ("max_hosts_per_network", scheduler.max_hosts_per_network)
        )
        networks: dict[str, Network] = {}
        for index, endpoint in enumerate(endpoints):
            network = endpoint.hosts_of
            if network is None:
                continue
            if network.host_count > limit:
                where = (*endpoints_path, index)
                if where not in self.reported_networks:
                    self.reported_networks.add(where)
                    self.problems.append(
                        self.lines.problem(
                            where,
                            f"network {network.label} has {network.host_count} hosts, more "
                            f"than scheduler.{limit_name} ({limit})",
                        )
                    )
                continue
            networks.setdefault(network.label, network)
        shaping = {"per_host", "max_per_host_series", "presence"} & override.model_fields_set
        if not sweeping or not networks:
            if shaping or override.sweep:
                reason = "sweeps no network" if sweeping else "does not sweep its networks"
                given = ", ".join(sorted(shaping | ({"sweep"} if override.sweep else set())))
                self.warnings.append(
                    f"flow {template.flow_id}: {given} has no effect: the flow {reason}"
                )
            return []
        if "presence" in shaping and template.check == PRESENCE_CHECK:
            self.warnings.append(
                f"flow {template.flow_id}: presence has no effect: the flow's own check is the "
                "ICMP echo that tells present hosts"
            )
        port = template.port_for(None)
        if template.spec.uses_port and port is None:
            self.problems.append(
                self.lines.problem(
                    (*path, "port"), f"check {template.check} needs a port to sweep a network"
                )
            )
            return []
        return [
            Sweep(
                template,
                network,
                port,
                per_host=override.per_host,
                max_per_host_series=override.max_per_host_series,
                presence=override.presence == "icmp",
                shard=scheduler.shard,
            )
            for network in networks.values()
        ]

    def _targets(
        self,
        template: FlowTemplate,
        endpoints: list[Endpoint],
        path: tuple[str | int, ...],
    ) -> Iterator[Target]:
        limit = self.config.scheduler.max_hosts_per_network
        for endpoint in endpoints:
            try:
                target = template.target(endpoint.host, endpoint.port)
            except ValueError as exc:
                self.problems.append(self.lines.problem((*path, "port"), str(exc)))
                return
            network = endpoint.hosts_of
            if network is None:
                yield target
                continue
            if network.host_count > limit:
                continue  # reported once by _sweeps
            for address in network.hosts():
                yield Target(address, target.port)


def _unknown_key(key: str, allowed: Collection[str]) -> str:
    """The message for an unknown key, naming the closest allowed key if one is close."""
    close = difflib.get_close_matches(key, allowed, n=1)
    return f"unknown field; did you mean {close[0]!r}?" if close else "unknown field"


def _pair_count(endpoint: Endpoint, scheduler: SchedulerSettings) -> int:
    """Pairs an endpoint yields, by arithmetic: what `network.hosts()` would give.

    Counted as written, before duplicate pairs are dropped (a host written twice, or inside
    two networks, counts twice), so the sum is an upper bound of the jobs built.
    """
    network = endpoint.hosts_of
    if network is None:
        return 1
    count = network.host_count
    return 0 if count > scheduler.max_hosts_per_network else count  # too large: reported once
