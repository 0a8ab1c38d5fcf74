"""Runs one check under its hard deadline and turns every outcome into a `CheckResult`.

This is the boundary where a check's exceptions stop: the scheduler, `/probe` and the CLI all
call `run_check` and never see an exception from a protocol module.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from exporter.blocking import BlockingPool
from exporter.checks import AnyCheckSpec, CheckContext, CheckSettings, Target
from exporter.classify import classify, is_expected
from exporter.result import CheckResult, Result

logger = logging.getLogger(__name__)
# (check id, exception type) pairs already logged with a traceback: a defect is logged once,
# not on every run of every pair. Bounded by the checks and the exception types they raise.
_LOGGED_DEFECTS: set[tuple[str, str]] = set()


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """A result plus the run's debug lines (only collected when asked for).

    `defect` is True when the check raised an exception that neither its own mapping nor the
    generic one knows: a fault of the check, counted by the caller.
    """

    result: CheckResult
    log_lines: tuple[str, ...]
    defect: bool = False


async def run_check(
    spec: AnyCheckSpec,
    target: Target,
    settings: CheckSettings,
    timeout_seconds: float,
    *,
    capture_log: bool = False,
    blocking: BlockingPool | None = None,
) -> RunOutcome:
    """Run `spec` against `target`; never raises except on cancellation."""
    context = CheckContext(timeout_seconds, capture_log=capture_log, blocking=blocking)
    context.debug("start", check=spec.name, target=target, timeout=timeout_seconds)
    deadline = asyncio.timeout(timeout_seconds)
    defect = False
    try:
        async with deadline:
            result = await spec.run(target, settings, context)
    except Exception as exc:  # noqa: BLE001 - the boundary: every error becomes a result
        phase = context.current_phase
        if isinstance(exc, TimeoutError) and deadline.expired():
            where = f" during {phase.value}" if phase is not None else ""
            detail = context.timeout_detail or f"no answer within {timeout_seconds:g}s{where}"
            result = context.failure(Result.TIMEOUT, detail)
        else:  # a timeout of the check's own (a socket's, a library's) is classified too
            outcome, detail = classify(exc, phase, spec.classify)
            defect = not is_expected(exc, spec.classify, phase)
            if defect:
                _log_defect(spec.name, target, exc)
            result = context.failure(outcome, detail)
    return RunOutcome(result, tuple(context.log_lines or ()), defect)


def _log_defect(check: str, target: Target, exc: Exception) -> None:
    """Log a defect with its traceback once per check id and exception type."""
    key = (check, f"{type(exc).__module__}.{type(exc).__qualname__}")
    if key in _LOGGED_DEFECTS:
        return
    _LOGGED_DEFECTS.add(key)
    logger.error(
        "check raised an unexpected error check=%s target=%s error=%s (logged once per check "
        "and error type; every occurrence counts in certero_flow_exporter_check_defects_total)",
        check,
        target,
        key[1],
        exc_info=exc,
    )
