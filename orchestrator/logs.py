"""JSON logging for every process: one object per line with timestamp, level, logger, message,
job_id, trace_id and span_id.

Never log observations, embeddings, request bodies or API keys: log ids, targets, outcomes and
numbers. RQ's job-description logging is turned off in both workers (descriptions carry only the
job id anyway). Third-party loggers that would print request data at DEBUG (SQLAlchemy's SQL
with its parameters, httpx/httpcore request traces) are held at WARNING whatever LOG_LEVEL says.
Python warnings and uncaught exceptions go through the same JSON handler, so every line a
process writes is one JSON object.

A logged exception keeps its traceback (files, lines, functions, code) but not its message,
unless its type is one whose text we write ourselves (``PHI_FREE_MESSAGES``): a database error
quotes the row it could not store, a validation error the value it refused.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from orchestrator.errors import OrchestratorError

current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_job_id", default=None)

FORMAT = "%(timestamp)s %(levelname)s %(name)s %(message)s"
RENAMED = {"levelname": "level", "name": "logger"}
THIRD_PARTY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "rq.worker", "rq.job", "rq", "alembic")
HELD_AT_WARNING = ("sqlalchemy.engine", "sqlalchemy.pool", "httpx", "httpcore")
"""Never below WARNING, even with LOG_LEVEL=DEBUG: SQLAlchemy's engine logs statements and their
parameters (observations) once its loggers reach INFO (it starts them at WARN itself; this keeps
a logging config from lowering them), httpx and httpcore log request traces at DEBUG."""
DROPPED_FIELDS = ("color_message",)
"""uvicorn's ANSI-coloured copy of the message."""
PHI_FREE_MESSAGES: tuple[type[BaseException], ...] = (
    OrchestratorError,
    OSError,
    redis.ConnectionError,
    redis.TimeoutError,
)
"""Exception types whose message is logged: ours (their messages never carry PHI, by contract)
and connection failures. An exception class may also opt in with ``phi_free_message = True``."""
WITHHELD = "<message withheld: it may quote data>"


def phi_safe_traceback(exc: BaseException) -> str:
    """``exc`` and its chain as a traceback, each message replaced by WITHHELD unless its type
    is in PHI_FREE_MESSAGES (or says ``phi_free_message = True``)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    parts = []
    for link in reversed(chain):
        kind = type(link)
        safe = isinstance(link, PHI_FREE_MESSAGES) or getattr(link, "phi_free_message", False)
        frames = "".join(traceback.format_list(traceback.extract_tb(link.__traceback__)))
        parts.append(
            f"Traceback (most recent call last):\n{frames}{kind.__module__}.{kind.__qualname__}: "
            f"{str(link) if safe else WITHHELD}"
        )
    return "\n\nThe above exception led to the next one:\n\n".join(parts)


class PhiSafeJsonFormatter(JsonFormatter):
    """The JSON formatter, with exception messages withheld (``phi_safe_traceback``)."""

    def formatException(self, ei) -> str:
        exc = ei[1] if isinstance(ei, tuple) else ei
        if exc is None:
            return super().formatException(ei)
        return phi_safe_traceback(exc)


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
    formatter = PhiSafeJsonFormatter(
        FORMAT, rename_fields=RENAMED, timestamp=True, reserved_attrs=[*RESERVED_ATTRS, *DROPPED_FIELDS]
    )
    handler.setFormatter(formatter)
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
    for name in HELD_AT_WARNING:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    # Only over the interpreter's defaults: a host that installed its own hooks (pytest) keeps them.
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _log_uncaught
    if threading.excepthook is threading.__excepthook__:
        threading.excepthook = _log_uncaught_in_thread


def ensure_logging(level: str = "INFO") -> None:
    """Configure JSON logging unless this process already has a root handler: a job forked by a
    bare ``rq worker`` inherits only RQ's own text handlers, and its lines would be lost."""
    if not logging.getLogger().handlers:
        configure_logging(level)


def _log_uncaught(exc_type, exc, tb) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("uncaught").critical("uncaught exception", exc_info=(exc_type, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("uncaught").critical(
        "uncaught exception in a thread",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        extra={"thread": getattr(args.thread, "name", None)},
    )


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tag every log line emitted inside the block with ``job_id``."""
    token = current_job_id.set(job_id)
    try:
        yield
    finally:
        current_job_id.reset(token)
