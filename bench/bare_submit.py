"""The baseline of P3: a bare FastAPI app that validates a submit body and does one RQ enqueue.

``POST /api/submit`` takes the real submit body (``orchestrator.schemas.JobCreate``: the same
fields and validators as the orchestrator's), makes a uuid4 job id, enqueues it once on the
``pedi-screen-bare`` queue of the Redis at ``REDIS_URL`` and answers 202 with the id. No auth,
no database, no middleware: the floor the real submit path is compared with.

Run it as one uvicorn process, as the real API::

    REDIS_URL=redis://127.0.0.1:6390/0 .venv/bin/uvicorn bench.bare_submit:app \\
        --port 9100 --no-access-log --log-level warning

    wrk -t2 -c32 -d10s -s bench/... http://127.0.0.1:9100/api/submit   # a POST script, see
    # docs/benchmarks/submit-path.md

Nothing is connected at import: the Redis connection and the queue are built on the first
request (one per process) and reused.
"""

from __future__ import annotations

import os
import uuid
from functools import cache

import redis
from fastapi import FastAPI
from pydantic import BaseModel
from rq import Queue

from orchestrator.schemas import JobCreate

QUEUE_NAME = "pedi-screen-bare"
"""Not ``pedi-screen``: nothing consumes these jobs, and no real worker must see them."""
JOB_FUNC = "bench.noop.noop"


class Accepted(BaseModel):
    job_id: uuid.UUID
    status: str


@cache
def queue() -> Queue:
    """The bare queue on ``REDIS_URL`` (default: a local Redis), built once per process."""
    connection = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    return Queue(QUEUE_NAME, connection=connection)


app = FastAPI(title="bare submit (bench baseline)")


@app.post("/api/submit", status_code=202, response_model=Accepted)
def submit(body: JobCreate) -> Accepted:
    """Validate, enqueue one job id, answer 202."""
    job_id = str(uuid.uuid4())
    queue().enqueue(JOB_FUNC, job_id, job_id=job_id)
    return Accepted(job_id=job_id, status="queued")
