"""RQ settings module for the stock forking worker: ``rq worker -c modelreasoner.rq_settings``, or
``RQ_CONFIG=modelreasoner.rq_settings rq worker pedi-screen`` (the worker image sets it).

RQ imports this module once, in the worker's parent process, before its first fork. Importing
it does there what each job process would otherwise do for itself on every job: import the
worker (SQLAlchemy, httpx, the router, OpenTelemetry, ...), read and validate the settings, set
up JSON logs and tracing, and build the job context without opening a connection
(modelreasoner.bootstrap). A job process inherits all of it through the fork and opens its own
database and Redis connections. Without this module, ``rq worker pedi-screen`` still works; each
job just pays that set-up again.

Invalid settings stop the worker at start, naming the variable, instead of failing every job.
"""

from __future__ import annotations

from modelreasoner import bootstrap, worker
from orchestrator import constants
from orchestrator.errors import ConfigError

_job_function = worker.process_job  # imported here, once, not again in each job process
try:
    _settings = bootstrap.prepare_forking_parent()
except ConfigError as exc:
    raise SystemExit(f"worker: {exc.message}") from None

QUEUES = [constants.QUEUE_NAME]
"""The queue ``rq worker`` listens on when none is named."""
REDIS_URL = _settings.redis_url
"""RQ's own connection, unless ``--url`` names another."""
