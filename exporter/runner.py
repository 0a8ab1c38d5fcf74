"""Runs one check under its hard deadline and turns every outcome into a `CheckResult`.

This is the boundary where a check's exceptions stop: the scheduler, `/probe`, the CLI and the
Nagios mode all call `run_check` and never see an exception from a protocol module.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from exporter.checks import AnyCheckSpec, CheckContext, CheckSettings, Target
from exporter.classify import classify, is_expected
from exporter.result import CheckResult, Result

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """A result plus the run's debug lines (only collected when asked for)."""

    result: CheckResult
    log_lines: tuple[str, ...]


async def run_check(
    spec: AnyCheckSpec,
    target: Target,
    settings: CheckSettings,
    timeout_seconds: float,
    *,
    capture_log: bool = False,
) -> RunOutcome:
    """Run `spec` against `target`; never raises except on cancellation."""
    context = CheckContext(timeout_seconds, capture_log=capture_log)
    context.debug("start", check=spec.name, target=target, timeout=timeout_seconds)
    try:
        async with asyncio.timeout(timeout_seconds):
            result = await spec.run(target, settings, context)
    except TimeoutError:
        phase = context.current_phase
        where = f" during {phase.value}" if phase is not None else ""
        detail = context.timeout_detail or f"no answer within {timeout_seconds:g}s{where}"
        result = context.failure(Result.TIMEOUT, detail)
    except Exception as exc:
        outcome, detail = classify(exc, context.current_phase)
        if not is_expected(exc):
            logger.exception(
                "check raised an unexpected error check=%s target=%s", spec.name, target
            )
        result = context.failure(outcome, detail)
    return RunOutcome(result, tuple(context.log_lines or ()))
