"""The worker's database retry: one database step (never a model call) run again while
Postgres is unreachable, DB_RETRY_ATTEMPTS tries with jittered exponential backoff.

Only DB steps are wrapped: a claim, a ``call_started`` row (with the decision or an earlier
call's ``attempt`` row), the terminal write. A blip after a model call therefore re-runs the
write, never the call (issue 11, defect 4).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from orchestrator.db import is_connection_error
from orchestrator.errors import DatabaseUnavailable
from orchestrator.metrics import DB_ERRORS
from orchestrator.settings import Settings

log = logging.getLogger("modelreasoner.worker")

T = TypeVar("T")

BACKOFF_MULTIPLIER_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 5.0
"""Longest pause between two tries (s)."""


def database_down(exc: BaseException) -> bool:
    return isinstance(exc, DatabaseUnavailable) or is_connection_error(exc)


def with_db_retry(settings: Settings, fn: Callable[[], T]) -> T:
    """Run ``fn`` (database work only) retrying while Postgres is unreachable."""

    def note(state) -> None:
        DB_ERRORS.labels("worker").inc()
        log.warning("database unavailable; retrying", extra={"attempt": state.attempt_number})

    return retry(
        retry=retry_if_exception(database_down),
        stop=stop_after_attempt(settings.db_retry_attempts),
        wait=wait_exponential_jitter(multiplier=BACKOFF_MULTIPLIER_SECONDS, max=BACKOFF_MAX_SECONDS),
        before_sleep=note,
        reraise=True,
    )(fn)()


def retry_budget_seconds(settings: Settings) -> float:
    """An upper bound on how long one retried step waits between its tries (s): every pause is
    capped at BACKOFF_MAX_SECONDS, jitter included."""
    return BACKOFF_MAX_SECONDS * (settings.db_retry_attempts - 1)
