"""The HTTP side: `/metrics`, `/probe`, health, reload and the status page at `/`.

`make_app` is the factory; the scheduler is a background task owned by the app's cleanup
context, cancelled and awaited on shutdown. Nothing here knows a protocol: `/probe` finds a
check through the registry and renders its result with the same collector as `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import signal
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from exporter import __version__
from exporter.blocking import BlockingPool
from exporter.catalogue import FLOWS_BY_ID
from exporter.checks import CHECKS
from exporter.collector import (
    CONTENT_TYPE,
    PAIR_FAMILIES,
    number,
    render_catalogue,
    render_pair,
)
from exporter.config import EMBEDDED_DEFAULT, Config, FlowTemplate, Job, load_config, parse_endpoint
from exporter.errors import ConfigError, ConfigProblem
from exporter.networks import Shard
from exporter.probe_policy import refusal
from exporter.remediation import remediate_pair
from exporter.result import Result
from exporter.runner import RunOutcome, run_check
from exporter.scheduler import Scheduler
from exporter.selfmetrics import ExporterMetrics
from exporter.statuspage import status_page_parts
from exporter.store import ResultStore
from exporter.webauth import BasicAuth, WebSecurity, exposure_warnings, secure_app
from exporter.webconfig import WebConfig

logger = logging.getLogger(__name__)

DEFAULT_PORT = 10163
GZIP_LEVEL = 1  # scrapes are large and repetitive: the fastest level already shrinks them ~10x
# A part (1,000 pairs, a few MB) is compressed in pieces of this size, so that the client never
# waits for a whole part's compression, nor for the interpreter lock that long.
GZIP_PIECE_BYTES = 256 * 1024
PROBE_TIMEOUT_OFFSET = 0.5  # seconds kept back from Prometheus's scrape timeout, as blackbox does
# Descriptors beyond the check slots: listening sockets, scrape and probe request connections,
# the event loop, log files and resolver threads.
FD_MARGIN = 128
# key=value like every other log line; aiohttp's atoms: %a peer, %r request line, %s status, ...
ACCESS_LOG_FORMAT = (
    'remote=%a request="%r" status=%s bytes=%b seconds=%Tf user_agent="%{User-Agent}i"'
)
# A reload that has not loaded its file by then fails and frees the reload lock. The read never
# blocks, so this is a backstop: the slowest supported file (100,000 one-line extra flows) loads
# in about 15 s on a small host.
RELOAD_DEADLINE_S = 60.0
# Applying a new config on the event loop pauses after this many pairs, so that a scrape never
# waits for more than a few milliseconds of it.
APPLY_STEP_PAIRS = 5_000
# On SIGTERM, requests still running (a reload waiting for its file, a slow probe) get this long.
SHUTDOWN_GRACE_S = 5.0


LoadedT = TypeVar("LoadedT")


class _LoaderThread:
    """Loads config files for reloads, one at a time, on a daemon thread of its own.

    Not the loop's default executor, which `/metrics` uses for gzip: a slow load must never
    queue a scrape behind it. Not a `ThreadPoolExecutor` either: the interpreter joins its
    workers at exit, so a load still running would hold up SIGTERM; a daemon thread does not.

    The cyclic garbage collector is off while a file loads, and what exists once a config has
    loaded is then frozen out of its reach (`gc.freeze`). A config of 100,000 pairs is about a
    million objects; each counts towards the next collection, and a collection walks every
    object it covers in one go, holding the interpreter lock: the event loop (scrapes, SIGTERM)
    waited up to seconds during a load, and 400 ms at the first full collection after one.
    A config holds no reference cycles (reference counting frees an old one all the same);
    only cyclic garbage that exists at that moment is never collected.
    """

    def __init__(self) -> None:
        self._idle = threading.Event()  # set by the thread itself once its load has ended
        self._idle.set()

    async def load(self, origin: str, load: Callable[[], LoadedT]) -> LoadedT:
        """Run `load` on the thread; a load still running from a timed-out reload is refused."""
        if not self._idle.is_set():
            message = "the previous reload is still loading the file, past its deadline"
            raise ConfigError([ConfigProblem(origin, None, "", message)])
        loop = asyncio.get_running_loop()
        future: asyncio.Future[LoadedT] = loop.create_future()

        def settle(outcome: LoadedT | Exception) -> None:
            if future.done():  # the reload gave up at its deadline
                return
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        def work() -> None:
            outcome: LoadedT | Exception
            collecting = gc.isenabled()
            gc.disable()  # see the class docstring
            try:
                outcome = load()
                gc.freeze()
            except Exception as exc:  # noqa: BLE001 - handed to the awaiting reload, which reports it
                outcome = exc
            finally:
                if collecting:
                    gc.enable()
                self._idle.set()
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(settle, outcome)

        self._idle.clear()
        try:
            threading.Thread(target=work, name="config-reload", daemon=True).start()
        except BaseException:
            self._idle.set()  # no thread started: the next reload must not wait for one
            raise
        return await future


@dataclass
class ExporterState:
    """Everything the routes share; the config is replaced whole on reload."""

    config: Config
    config_path: str | None
    store: ResultStore
    metrics: ExporterMetrics = field(default_factory=ExporterMetrics)
    scheduler: Scheduler | None = None
    catalogue: bytes = field(default_factory=render_catalogue)
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    probes_running: int = 0
    loader: _LoaderThread = field(default_factory=_LoaderThread)
    web: WebSecurity | None = None  # set when serving with a web config, which reloads too
    reloads: set[asyncio.Task[ConfigError | None]] = field(default_factory=set)
    blocking: BlockingPool | None = None  # owned by _blocking_context
    shard: Shard | None = None  # from --shard: wins over scheduler.shard, on reloads too

    async def reload(self) -> ConfigError | None:
        """Load the config file again; a bad file is rejected and the running config kept.

        Loading runs on the loader's thread under RELOAD_DEADLINE_S; any failure, expected or
        not, is one `ConfigError`, one ERROR line that never holds the file's content, and
        `config_last_reload_successful` 0. The new config is then applied in steps of
        APPLY_STEP_PAIRS so that the event loop serves scrapes in between.
        """
        origin = self.config_path or EMBEDDED_DEFAULT
        logger.info("config reload started origin=%s", origin)
        try:
            async with asyncio.timeout(RELOAD_DEADLINE_S):
                config, web = await self.loader.load(origin, self._load_files)
            if self.web is not None and web is not None:
                self.web.apply(*web)  # first: a web config that cannot apply keeps both files
        except ConfigError as exc:
            return self._reject(exc)
        except TimeoutError:
            message = f"not loaded within the reload deadline of {RELOAD_DEADLINE_S:g} s"
            return self._reject(ConfigError([ConfigProblem(origin, None, "", message)]))
        except Exception as exc:  # noqa: BLE001 - any failure must keep the running config
            # Only the type: an exception's text may quote the file (as UnicodeDecodeError does).
            message = f"could not be loaded: unexpected {type(exc).__name__}"
            return self._reject(ConfigError([ConfigProblem(origin, None, "", message)]))
        self.config = config
        if self.scheduler is not None:  # first, so that no removed pair is recorded again
            for _ in self.scheduler.replace_config_in_steps(config, APPLY_STEP_PAIRS):
                await asyncio.sleep(0)
        for _ in self.store.retain_in_steps(config.by_key, config.source.value, APPLY_STEP_PAIRS):
            await asyncio.sleep(0)
        self.store.retain_sweeps(config.sweeps_by_key, config.source.value)
        self.store.describe_flows(config)
        self.metrics.reload_success.set(1)
        self.metrics.reload_timestamp.set(time.time())
        logger.info("config reloaded origin=%s pairs=%d", config.origin, len(config.jobs))
        return None

    def _load_files(self) -> tuple[Config, tuple[WebConfig, BasicAuth | None] | None]:
        """Both files of a reload, loaded on the loader's thread; every problem of both at once."""
        problems: list[ConfigProblem] = []
        try:
            config = load_config(self.config_path, shard=self.shard)
        except ConfigError as exc:
            problems += exc.problems
        web = None
        if self.web is not None:
            try:
                web = WebSecurity.prepare(self.web.config.origin)
            except ConfigError as exc:
                problems += exc.problems
        if problems:
            raise ConfigError(problems)
        return config, web

    def _reject(self, error: ConfigError) -> ConfigError:
        self.metrics.reload_success.set(0)
        problems = "; ".join(str(problem) for problem in error.problems)
        logger.error("config reload rejected, keeping the running config: %s", problems)
        return error


STATE = web.AppKey("state", ExporterState)


def make_app(
    state: ExporterState, *, run_scheduler: bool = True, web_config: WebConfig | None = None
) -> web.Application:
    """Build the aiohttp application around a loaded config (and web config, if any)."""
    app = web.Application()
    app[STATE] = state
    state.store.describe_flows(state.config)
    if web_config is not None:
        state.web = secure_app(app, web_config)
    app.router.add_get("/", landing_page)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/probe", probe)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    app.cleanup_ctx.append(_blocking_context)  # first: the scheduler's checks use it
    if run_scheduler:
        app.cleanup_ctx.append(_scheduler_context)
    app.on_shutdown.append(_cancel_reloads)
    return app


async def _blocking_context(app: web.Application) -> AsyncIterator[None]:
    """The worker pool of blocking checks lives as long as the app, for scheduler and /probe."""
    state = app[STATE]
    state.blocking = BlockingPool(state.config.file.scheduler.blocking_workers)
    state.metrics.watch_blocking_pool(state.blocking)
    yield
    state.blocking.shutdown()


async def _scheduler_context(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state.metrics.reload_success.set(1)
    state.metrics.reload_timestamp.set(time.time())
    state.scheduler = Scheduler(state.config, state.store, state.metrics, blocking=state.blocking)
    task = asyncio.create_task(state.scheduler.run(), name="scheduler")
    loop = asyncio.get_running_loop()
    hup = getattr(signal, "SIGHUP", None)
    if hup is not None:
        try:
            loop.add_signal_handler(hup, lambda: _start_reload(state))
        except (NotImplementedError, RuntimeError):  # not on Windows' proactor loop
            hup = None
    yield
    if hup is not None:
        loop.remove_signal_handler(hup)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _start_reload(state: ExporterState) -> asyncio.Task[ConfigError | None]:
    """Run a reload as a task of its own, so that shutting down can cancel it."""
    task = asyncio.create_task(_reload_locked(state), name="config reload")
    state.reloads.add(task)
    task.add_done_callback(state.reloads.discard)
    return task


async def _cancel_reloads(app: web.Application) -> None:
    """On shutdown, before the server waits for open requests: a reload still loading its file
    would otherwise hold `POST /-/reload` (and so the exit) for the whole grace period."""
    tasks = list(app[STATE].reloads)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _reload_locked(state: ExporterState) -> ConfigError | None:
    async with state.reload_lock:
        return await state.reload()


async def metrics(request: web.Request) -> web.StreamResponse:
    """Cached results of every pair plus the exporter's own metrics; never waits on a check.

    The body is sent family by family so the event loop keeps running checks between parts,
    and gzip-compressed (in a worker thread) when the client accepts it, as Prometheus does.
    """
    state = request.app[STATE]
    response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
    compressor = None
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        response.headers["Content-Encoding"] = "gzip"
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    parts = itertools.chain(state.store.render_parts(), (state.catalogue, state.metrics.render()))
    for part in parts:
        if compressor is None:
            await response.write(part)
            await asyncio.sleep(0)  # a write into a free socket buffer does not yield by itself
        else:
            view = memoryview(part)
            for start in range(0, len(view), GZIP_PIECE_BYTES):
                piece = view[start : start + GZIP_PIECE_BYTES]
                await response.write(await loop.run_in_executor(None, compressor.compress, piece))
    if compressor is not None:
        await response.write(compressor.flush())
    await response.write_eof()
    return response


async def healthy(request: web.Request) -> web.Response:
    """The process is up."""
    return web.Response(text="Healthy\n")


async def ready(request: web.Request) -> web.Response:
    """A config is loaded and the scheduler runs."""
    state = request.app[STATE]
    if state.scheduler is None or not state.scheduler.started:
        return web.Response(status=503, text="Not ready: scheduler not started\n")
    return web.Response(text="Ready\n")


async def reload(request: web.Request) -> web.Response:
    """Reload the config file; 500 with every problem when the new file is rejected."""
    # Shielded: a client that disconnects must not cancel a reload half applied.
    error = await asyncio.shield(_start_reload(request.app[STATE]))
    if error is not None:
        return web.Response(status=500, text=f"config rejected, previous config kept:\n{error}\n")
    return web.Response(text="Reloaded\n")


class ProbeRefused(Exception):
    """The allow-list refuses this (module, target): answered 403 with the rule's words."""


def probe_job(config: Config, module: str, target_text: str) -> Job:
    """Build the job `/probe` runs: `module` is a flow id (catalogue or custom) or a check id.

    A flow runs exactly as the scheduler runs it (its port, path, TLS and other settings);
    raises `ProbeRefused` before anything is sent when the allow-list does not cover the target.
    """
    endpoint = parse_endpoint(target_text)
    if endpoint.network is not None:
        raise ValueError("target must be a single host, not a network")
    template = _template(config, module)
    try:
        target = template.target(endpoint.host, endpoint.port)
    except ValueError as exc:
        raise ValueError(f"module {module} needs a port in the target (host:port)") from exc
    is_flow = module in config.templates
    reason = refusal(config.file.probe, module, template if is_flow else None, target)
    if reason is not None:
        raise ProbeRefused(reason)
    return template.job(target)


def _template(config: Config, module: str) -> FlowTemplate:
    template = config.templates.get(module)
    if template is not None:
        return template
    flow = FLOWS_BY_ID.get(module)
    if flow is not None:
        if flow.source is not config.source:
            raise ValueError(
                f"flow {module} is measured from {flow.source.value}; "
                f"this exporter stands on {config.source.value}"
            )
        reason = config.skipped_flows.get(module, "not runnable here")
        raise ValueError(f"flow {module} cannot be probed: {reason}")
    if module in CHECKS:
        return config.check_template(module)
    raise ValueError(f"unknown module {module!r}: give a flow id or one of {', '.join(CHECKS)}")


async def _run_limited(
    state: ExporterState, job: Job, deadline_seconds: float, *, debug: bool
) -> RunOutcome:
    """Run a probe within `probe.concurrency`, apart from the scheduler's slots.

    A full limit answers 503 at once rather than queueing: Prometheus retries at the next
    scrape, while queued probes would only outlive its scrape timeout. A run the exporter
    itself could not make (`exporter_error`) is a 503 too: the scrape fails, the target is
    not blamed.
    """
    limit = state.config.file.probe.concurrency
    if state.probes_running >= limit:
        state.metrics.probe_rejected.labels("concurrency").inc()
        raise web.HTTPServiceUnavailable(
            text=f"probe refused: {limit} probes already running (probe.concurrency)\n"
        )
    state.probes_running += 1
    try:
        outcome = await run_check(
            job.spec,
            job.target,
            job.settings,
            deadline_seconds,
            capture_log=debug,
            blocking=state.blocking,
        )
    finally:
        state.probes_running -= 1
    if outcome.defect:
        state.metrics.check_defects.labels(job.check).inc()
    if outcome.result.result is Result.EXPORTER_ERROR:
        state.metrics.probe_rejected.labels("exporter_error").inc()
        raise web.HTTPServiceUnavailable(text=f"{outcome.result.detail}\n")
    return outcome


async def probe(request: web.Request) -> web.Response:
    """One check now, answered in blackbox_exporter's shape plus its certero_flow_ series."""
    state = request.app[STATE]
    target = request.query.get("target", "")
    module = request.query.get("module", "")
    if not target or not module:
        return web.Response(status=400, text="target and module parameters are required\n")
    try:
        job = probe_job(state.config, module, target)
    except ProbeRefused as exc:
        state.metrics.probe_rejected.labels("policy").inc()
        return web.Response(status=403, text=f"probe refused: {exc}\n")
    except ValueError as exc:
        return web.Response(status=400, text=f"{exc}\n")
    timeout = job.timeout
    scrape_timeout = request.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
    if scrape_timeout:
        try:
            timeout = min(timeout, max(float(scrape_timeout) - PROBE_TIMEOUT_OFFSET, 0.1))
        except ValueError:
            return web.Response(status=400, text="invalid X-Prometheus-Scrape-Timeout-Seconds\n")
    debug = request.query.get("debug", "").lower() in ("true", "1")
    outcome = await _run_limited(state, job, timeout, debug=debug)
    result = outcome.result
    lines = [
        "# HELP probe_success Displays whether or not the probe was a success\n",
        "# TYPE probe_success gauge\n",
        f"probe_success {1 if result.ok else 0}\n",
        "# HELP probe_duration_seconds Returns how long the probe took to complete in seconds\n",
        "# TYPE probe_duration_seconds gauge\n",
        f"probe_duration_seconds {number(result.duration_seconds)}\n",
    ]
    if result.tls_chain_expiry_seconds is not None:  # as blackbox: the presented chain's earliest
        lines += [
            "# HELP probe_ssl_earliest_cert_expiry Returns last SSL chain expiry in unixtime\n",
            "# TYPE probe_ssl_earliest_cert_expiry gauge\n",
            f"probe_ssl_earliest_cert_expiry {number(result.tls_chain_expiry_seconds)}\n",
        ]
    labels = state.store.labels(job)
    chunks = render_pair(labels, result, time.time(), None)
    for family, chunk in zip(PAIR_FAMILIES, chunks, strict=True):
        if chunk:
            lines.append(family.header(from_cache=False).decode())
            lines.append(chunk.decode())
    body = "".join(lines)
    if debug:
        log_lines = list(outcome.log_lines)
        if not result.ok:
            log_lines.append(f"remediation: {remediate_pair(state.config, job, result).summary}")
        log = "\n".join(log_lines)
        text = f"Logs for the probe:\n{log}\n\nMetrics that would have been returned:\n{body}"
        return web.Response(text=text)
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})


async def landing_page(request: web.Request) -> web.StreamResponse:
    """The status page (`exporter.statuspage`): the port table with each pair's history.

    Sent part by part, yielding to the event loop between parts as `/metrics` does, so that
    a large config's page never holds up checks or scrapes for long.
    """
    state = request.app[STATE]
    response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
    await response.prepare(request)
    for part in status_page_parts(state.config, state.store):
        await response.write(part.encode())
        await asyncio.sleep(0)  # a write into a free socket buffer does not yield by itself
    await response.write_eof()
    return response


class _BadRequestFilter(logging.Filter):
    """Keeps requests that aiohttp's HTTP parser rejected out of the ERROR log.

    aiohttp answers such a request 400 and then logs it through `RequestHandler.handle_error`
    on the `aiohttp.server` logger at ERROR with a traceback (web_protocol.py). A port scanner or
    a stray TLS client would fill the log with those. Only records carrying a parser error
    (`HttpProcessingError`) are replaced, by one DEBUG line; a request handler that crashes is
    logged by the same method with its own exception and keeps its ERROR record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        reason = error.message if len(error.message) <= 200 else f"{error.message[:200]}…"
        logger.debug("bad request answered 400 reason=%r", reason)
        return False


_BAD_REQUEST_FILTER = _BadRequestFilter()


def serve(
    config: Config,
    config_path: str | None,
    host: str,
    port: int,
    web_config: WebConfig | None = None,
    *,
    access_log: bool = False,
    shard: Shard | None = None,
) -> None:
    """Run the exporter until interrupted; TLS and basic auth come from `web_config`,
    `access_log` logs every request at INFO, `shard` (from `--shard`) is kept for reloads."""
    state = ExporterState(
        config=config,
        config_path=config_path,
        store=ResultStore(config.source.value),
        shard=shard,
    )
    app = make_app(state, web_config=web_config)
    logging.getLogger("aiohttp.server").addFilter(_BAD_REQUEST_FILTER)
    check_fd_limit(config)
    for warning in exposure_warnings(host, web_config):
        logger.warning("%s", warning)
    ssl_context = web_config.ssl_context if web_config is not None else None
    logger.info(
        "starting version=%s listen=%s:%d pairs=%d origin=%s tls=%s basic_auth=%s",
        __version__,
        host,
        port,
        len(config.jobs),
        config.origin,
        ssl_context is not None,
        bool(web_config is not None and web_config.users),
    )
    web.run_app(
        app,
        host=host,
        port=port,
        ssl_context=ssl_context,
        print=None,
        handle_signals=True,
        shutdown_timeout=SHUTDOWN_GRACE_S,
        loop=_new_loop(),
        access_log=logging.getLogger("exporter.access") if access_log else None,
        access_log_format=ACCESS_LOG_FORMAT,
    )


def check_fd_limit(config: Config) -> None:
    """Raise the soft descriptor limit to the hard one (as Go programs do at start) and warn
    when the configured concurrency could still run out of descriptors.

    Every running check holds at least one socket; a common soft limit of 1,024 would turn a
    burst of checks into "too many open files" although the hard limit allows far more.
    """
    try:
        import resource  # noqa: PLC0415 - POSIX only
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:  # e.g. an unlimited hard limit above fs.nr_open
            logger.warning("cannot raise the open file limit soft=%d hard=%d: %s", soft, hard, exc)
    needed = config.file.scheduler.concurrency + config.file.probe.concurrency + FD_MARGIN
    if soft != resource.RLIM_INFINITY and needed > soft:
        logger.warning(
            "open file limit %d is below scheduler.concurrency + probe.concurrency + %d = %d: "
            "under load checks may end exporter_error (no free file descriptors); raise the "
            "limit (ulimit -n, LimitNOFILE=) or lower the concurrency settings",
            soft,
            FD_MARGIN,
            needed,
        )


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (not on Windows), else the default loop."""
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on Windows
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
