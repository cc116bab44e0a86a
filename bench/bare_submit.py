"""The baseline of P3 in bench.e2e: a bare FastAPI app that validates the same body as
``POST /api/submit`` and does one RQ enqueue, nothing else (no auth, no Postgres).

    REDIS_URL=redis://127.0.0.1:6379/0 uvicorn bench.bare_submit:app

Minimal stand-in written by the bench.e2e harness's author to test the harness.
"""

from __future__ import annotations

import os
import uuid

import redis
from fastapi import FastAPI
from rq import Queue

from orchestrator.schemas import JobCreate

app = FastAPI()
queue = Queue("bench-bare", connection=redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")))


@app.post("/api/submit", status_code=202)
def submit(body: JobCreate) -> dict:
    job_id = str(uuid.uuid4())
    queue.enqueue("bench.noop.noop", job_id=job_id, result_ttl=600)
    return {"job_id": job_id, "status": "queued"}
