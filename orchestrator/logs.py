"""JSON logging for every process: one object per line with timestamp, level, logger, message,
job_id, trace_id and span_id.

Never log observations, embeddings, request bodies or API keys: log ids, targets, outcomes and
numbers. RQ's job-description logging is turned off in the worker (descriptions carry only the
job id anyway).
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pythonjsonlogger.json import JsonFormatter

current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_job_id", default=None)

FORMAT = "%(timestamp)s %(levelname)s %(name)s %(message)s"
RENAMED = {"levelname": "level", "name": "logger"}
THIRD_PARTY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "rq.worker", "rq", "alembic")


class ContextFilter(logging.Filter):
    """Adds job_id, trace_id and span_id to every record (null when there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id") or record.job_id is None:
            record.job_id = current_job_id.get()
        trace_id, span_id = _trace_ids()
        record.trace_id = getattr(record, "trace_id", None) or trace_id
        record.span_id = getattr(record, "span_id", None) or span_id
        return True


def _trace_ids() -> tuple[str | None, str | None]:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - opentelemetry is a pinned dependency
        return None, None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def configure_logging(level: str = "INFO") -> None:
    """Route every logger (ours, uvicorn's, RQ's) to one JSON handler on stdout. Idempotent."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(FORMAT, rename_fields=RENAMED, timestamp=True))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tag every log line emitted inside the block with ``job_id``."""
    token = current_job_id.set(job_id)
    try:
        yield
    finally:
        current_job_id.reset(token)
