"""Every place we touch RQ's private parts (pinned: rq==3.0.0), and what RQ records when a job
fails: an RQ failure for every job that ends ``failed``, and never the text of an exception that
could quote the job's data.

RQ private members used, all here and pinned by tests/unit/test_rq_shape.py, which fails loudly
when the installed RQ changes their shape:

* ``Worker._finalize_failure(job, queue, execution, exc_info)`` (``ScrubbedFailures``);
* ``Worker._shutdown()``, RQ's warm-shutdown hook called by its signal handler
  (``WarmShutdownHook``);
* ``Worker._stop_requested`` and ``Worker._state``, the attributes behind RQ's stop flag and the
  state ``set_state`` last wrote (``stop_requested``, ``request_stop``, ``last_state``).

The public members ``ThreadedWorker`` overrides (``heartbeat``, ``set_state``,
``dequeue_job_and_maintain_ttl``, ``execute_job``, ...) are pinned by the same test.

RQ keeps a failed job's exception in Redis (the job hash's ``exc_info``, the results stream,
both compressed), logs it, and hands it to exception handlers. An exception's text is not ours to
trust: a Postgres error quotes the failing row ("Failing row contains (..., <observations>,
...)"), a validation error may quote a model's answer. So:

* ``process_job`` ends a job that is ``failed`` in Postgres by raising ``JobFailed(error_kind)``:
  ``rq info``, rq-dashboard and RQ's FailedJobRegistry show it, with the error kind as its only
  text. The orchestrator enqueues without ``Retry``, so RQ never runs it again by itself; the
  reconciler only re-enqueues jobs Postgres still holds as queued or running.
* Any other exception leaving ``process_job`` is replaced by ``JobCrashed`` naming only its type
  (``crashed``). That covers every worker, stock ``rq worker pedi-screen`` included.
* Our worker classes add ``ScrubbedFailures``: whatever exception reaches RQ's failure path
  (one raised outside ``process_job``), RQ records and logs a PHI-free stand-in.

"""

from __future__ import annotations

import re
import traceback
from types import TracebackType

from rq.timeouts import JobTimeoutException

from orchestrator.error_kinds import ErrorKind

ERROR_KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
"""An error kind as the worker writes them (``all_targets_failed``); anything else is ``unknown``."""
STACK_FRAMES_KEPT = 12
"""Innermost frames kept in a crash summary: file, line and function only."""


class JobFailed(Exception):
    """The job ended ``failed`` in Postgres; raised so that RQ records an RQ failure too. Its text
    is the error kind, nothing else: ``job failed: all_targets_failed``."""

    phi_free_message = True  # orchestrator.logs logs its text

    def __init__(self, error_kind: str | None) -> None:
        kind = error_kind if error_kind and ERROR_KIND_PATTERN.fullmatch(error_kind) else "unknown"
        super().__init__(f"job failed: {kind}")
        self.kind = kind  # tracing reads ``kind`` as the span's error type


class JobCrashed(Exception):
    """``process_job`` raised: a stand-in naming the exception's type, never its text."""

    phi_free_message = True

    def __init__(self, original: BaseException | type[BaseException] | None) -> None:
        name = (original if isinstance(original, type) else type(original)).__name__
        super().__init__(f"worker error ({name}); the job's state is in Postgres")
        self.kind = ErrorKind.INTERNAL_ERROR


SAFE_EXCEPTIONS = (JobFailed, JobCrashed, JobTimeoutException)
"""Exceptions whose text we write ourselves (RQ's timeout: "Task exceeded maximum timeout value")."""


def crashed(exc: BaseException) -> BaseException:
    """What RQ may record for ``exc``: itself when its text is ours (SAFE_EXCEPTIONS, e.g. RQ's
    timeout), else a JobCrashed naming its type. Raise it ``from None``: nothing chained."""
    return exc if isinstance(exc, SAFE_EXCEPTIONS) else JobCrashed(exc)


def stack_summary(exc: BaseException) -> list[str]:
    """Where ``exc`` was raised, as ``file:line in function`` lines: no message, no locals."""
    frames = traceback.extract_tb(exc.__traceback__)[-STACK_FRAMES_KEPT:]
    return [f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in frames]


ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]


def safe_exc_info(exc_info: ExcInfo) -> ExcInfo:
    """``exc_info`` if its exception is one of SAFE_EXCEPTIONS (chained exceptions dropped), else
    a JobCrashed naming its type, without traceback."""
    exc_type, exc, tb = exc_info
    if isinstance(exc, SAFE_EXCEPTIONS):
        exc.__cause__ = exc.__context__ = None
        return exc_type, exc, tb
    stand_in = JobCrashed(exc if exc is not None else exc_type)
    return JobCrashed, stand_in, None


class ScrubbedFailures:
    """Worker mixin: RQ stores, logs and hands to exception handlers only PHI-free failures."""

    def _finalize_failure(self, job, queue, execution, exc_info: ExcInfo) -> None:
        super()._finalize_failure(job, queue, execution, safe_exc_info(exc_info))

    def handle_exception(self, job, *exc_info) -> None:
        super().handle_exception(job, *safe_exc_info(exc_info))


class WarmShutdownHook:
    """Worker mixin: RQ's signal handler calls the private ``_shutdown`` on the first SIGTERM or
    SIGINT; this routes it to the worker's public ``warm_shutdown``."""

    def _shutdown(self) -> None:
        self.warm_shutdown()

    def warm_shutdown(self) -> None:
        raise NotImplementedError


def stop_requested(worker) -> bool:
    """Whether RQ's work loop has been asked to stop (it ends after the current iteration)."""
    return worker._stop_requested


def request_stop(worker) -> None:
    """Ask RQ's work loop to stop, and record when (``rq info`` shows it)."""
    worker._stop_requested = True
    worker.set_shutdown_requested_date()


def last_state(worker) -> str | None:
    """The state ``set_state`` last wrote for this worker."""
    return worker._state
