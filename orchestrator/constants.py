"""Names, keys, TTLs and timeouts shared by the API, the worker and the reconciler.

Every value carries its unit and the reason for it. Redis keys all start with ``pedi:`` (ours)
or ``rq:`` (RQ's own), so an operator can tell at a glance what a key belongs to.
"""

# --- queue -------------------------------------------------------------------------------
QUEUE_NAME = "pedi-screen"
"""The RQ queue every job travels on. Part of the user contract (`rq worker pedi-screen`)."""

PROCESS_JOB_FUNC = "modelreasoner.worker.process_job"
"""Dotted path RQ imports in the worker. Its only argument is the job id: no PHI in Redis."""

RQ_JOB_TIMEOUT_SECONDS = 300
"""Hard ceiling RQ enforces on one execution (s). The worker bounds its own calls far below
this (ROUTING_TIMEOUT_SECONDS per attempt); this only stops a wedged thread for good."""

RQ_RESULT_TTL_SECONDS = 3600
"""How long RQ keeps the (PHI-free) return value (s). Postgres holds the real result."""

RQ_FAILURE_TTL_SECONDS = 7 * 24 * 3600
"""How long RQ keeps failed-job records (s), long enough for an on-call week."""

# --- redis keys (ours) ---------------------------------------------------------------------
REDIS_PREFIX = "pedi:"
STATS_KEY = REDIS_PREFIX + "stats:{target}"
"""JSON snapshot of one target's learned latency/error statistics and circuit state."""
INFLIGHT_KEY = REDIS_PREFIX + "inflight:{target}"
"""Sorted set of in-flight call ids scored by start time (epoch s), shared by all workers."""
SLO_CLASS_KEY = REDIS_PREFIX + "slo:{label}"
"""JSON record of how one SLA class is doing fleet-wide (recent miss rate), for its objective."""
INFLIGHT_STALE_SECONDS = 120.0
"""An in-flight entry older than this (s) is ignored: its worker died without removing it."""
HEDGE_CALLS_KEY = REDIS_PREFIX + "hedge:calls"
"""Hash of model calls started per epoch second (field), shared by all workers: the hedge budget's base."""
HEDGE_HEDGES_KEY = REDIS_PREFIX + "hedge:hedges"
"""Hash of hedged (backup) calls started per epoch second: at most HEDGE_MAX_SHARE of the calls."""
RECONCILER_LOCK_KEY = REDIS_PREFIX + "reconciler:lock"
"""Held by whichever process runs a reconciliation pass, so passes never overlap."""
RECONCILER_LAST_PASS_KEY = REDIS_PREFIX + "reconciler:last_pass"
"""Epoch seconds at which the last reconciliation pass (any process) finished: its liveness,
exported by the API as pedi_reconciler_last_pass_age_seconds."""

# --- job lifecycle -------------------------------------------------------------------------
MIN_CALL_TIMEOUT_SECONDS = 0.5
"""Floor for a model call's timeout (s) when a non-strict job is already near or past its
deadline: a late answer is still worth more to the child than no answer."""

IDEMPOTENCY_KEY_MAX_LENGTH = 200
"""Longest accepted Idempotency-Key header (characters)."""

# --- limits --------------------------------------------------------------------------------
AGE_MONTHS_MAX = 216
"""18 years: the oldest age the pediatric service accepts (months)."""
OBSERVATIONS_MAX_CHARS = 4000
EMBEDDING_MAX_VALUES = 4096
JOBS_PAGE_MAX = 200
"""Largest page GET /api/jobs returns."""

# --- HTTP ----------------------------------------------------------------------------------
API_KEY_HEADER = "x-api-key"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRY_AFTER_SECONDS = 2
"""Retry-After (s) sent with a 503 when Postgres or Redis is unreachable."""
