"""No PHI outside Postgres, and no API key anywhere, on a real stack at DEBUG log level.

A unique marker goes into the observations of every request, successful or not: jobs that
complete, fail over, fail, replays, conflicts, validation errors, unauthenticated requests. Then
every Redis key is read by type (not DUMPed: RDB compression could hide a string), every log
line of the API and the worker is searched, and so are /metrics and every error body. Postgres
is the positive control: the marker must be there, in the observations column.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
import redis
from sqlalchemy import create_engine, func, select

from orchestrator.models import Audit, Job
from tests.support.env import free_port

pytestmark = [pytest.mark.security, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

MARKER = f"PHI-{uuid.uuid4().hex[:12]}-MARKER"
KEY_A, KEY_B = f"phi-key-a-{uuid.uuid4().hex[:10]}", f"phi-key-b-{uuid.uuid4().hex[:10]}"
SECRETS = (MARKER, KEY_A, KEY_B)


def observation(n: int) -> str:
    return f"At 24 months {MARKER} says {n} words and does not point"


def redis_dump(client: redis.Redis) -> str:
    """Every key and every value of every type, as text."""
    parts = []
    for key in client.scan_iter(count=500):
        kind = client.type(key).decode()
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            raise AssertionError(f"unexpected Redis type {kind} for {key!r}")
        parts.append(f"{key!r} {kind} {value!r}")
    return "\n".join(parts)


def exercise(api_url: str) -> tuple[list[str], list[str]]:
    """Every kind of request, each carrying the marker. Returns (accepted ids, error bodies)."""
    accepted, errors = [], []
    with httpx.Client(base_url=api_url, timeout=10) as client:

        def post(body: dict | None = None, key: str | None = KEY_A, **kwargs) -> httpx.Response:
            headers = {"x-api-key": key} if key else {}
            headers.update(kwargs.pop("headers", {}))
            response = client.post("/api/submit", json=body, headers=headers, **kwargs)
            if response.status_code == 202:
                accepted.append(response.json()["job_id"])
            else:
                errors.append(response.text)
            return response

        for n in range(6):
            assert post({"age_months": 24, "observations": observation(n), "sla_ms": 30_000}).status_code == 202
        assert post({"age_months": 24, "observations": observation(7)}, key=KEY_B).status_code == 202
        edge = {"age_months": 18, "observations": observation(8), "preferred_target": "edge", "sla_ms": 30_000}
        assert post(edge).status_code == 202
        replay = {"age_months": 30, "observations": observation(9)}
        assert post(replay, headers={"Idempotency-Key": "phi-replay"}).status_code == 202
        assert post(replay, headers={"Idempotency-Key": "phi-replay"}).status_code == 202
        conflict = {"age_months": 31, "observations": observation(10)}
        assert post(conflict, headers={"Idempotency-Key": "phi-replay"}).status_code == 409
        assert post({"age_months": 2, "observations": observation(11)}, key=None).status_code == 401
        assert post({"age_months": 2, "observations": observation(12)}, key="wrong-" + MARKER).status_code == 401
        assert post({"age_months": 999, "observations": observation(13)}).status_code == 422
        assert post({"age_months": 2, "observations": observation(14) + "\x00"}).status_code == 422
        assert post({"age_months": 2, "observations": observation(15) * 200}).status_code == 422
        # An unknown field is named in the error (that is how a typo is found), its value never.
        assert post({"age_months": 2, "observations": "ok", "observation": observation(16)}).status_code == 422
        broken = client.post(
            "/api/submit",
            content=f'{{"age_months": 2, "observations": "{MARKER}'.encode(),
            headers={"x-api-key": KEY_A, "content-type": "application/json"},
        )
        assert broken.status_code == 422
        errors.append(broken.text)
    return list(dict.fromkeys(accepted)), errors


def test_no_phi_and_no_key_outside_postgres(stack, pg_url, redis_server):
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0, fail_rate=0)
    stack.model_server("edge", tier="edge", fault="http_500")
    api = stack.api(api_key=f"{KEY_A},{KEY_B}", LOG_LEVEL="DEBUG")
    worker_metrics = free_port()
    stack.worker(concurrency=4, LOG_LEVEL="DEBUG", METRICS_PORT=str(worker_metrics))

    accepted, error_bodies = exercise(api.url)
    statuses = [api.wait(job_id, timeout=30) for job_id in accepted]
    assert {s["status"] for s in statuses} <= {"completed", "failed"}
    assert any(a["outcome"] == "http_5xx" for s in statuses for a in s["attempts"]), "a failover happened"

    client = redis_server.client()
    dumped = redis_dump(client)
    client.close()
    assert "rq:queue:pedi-screen" in dumped or "rq:job:" in dumped, "the dump really read RQ's keys"
    api_metrics = httpx.get(f"{api.url}/metrics", timeout=5).text
    worker_metrics_text = httpx.get(f"http://127.0.0.1:{worker_metrics}/metrics", timeout=5).text
    assert "pedi_jobs_completed_total" in worker_metrics_text
    logs = {p.name: p.log_text() for p in stack.processes if not p.name.startswith("model-")}
    assert any(f"{accepted[0]}" in text for text in logs.values()), "the logs really mention the jobs"
    status_bodies = [str(s) for s in statuses]

    places = {
        "redis": dumped,
        "api /metrics": api_metrics,
        "worker /metrics": worker_metrics_text,
        "error bodies": "\n".join(error_bodies),
        "job status bodies": "\n".join(status_bodies),
        **{f"log of {name}": text for name, text in logs.items()},
    }
    leaks = [f"{secret[:12]}... in {place}" for place, text in places.items() for secret in SECRETS if secret in text]
    assert not leaks, leaks

    engine = create_engine(pg_url)
    with engine.connect() as connection:
        stored = connection.scalar(select(func.count()).where(Job.observations.contains(MARKER)))
        actors = set(connection.scalars(select(Audit.actor).where(Audit.event == "submitted")))
    engine.dispose()
    assert stored == len(accepted), "control: the marker is in Postgres, where it belongs"
    assert actors and all(actor.startswith("key-") for actor in actors) and len(actors) == 2


def test_the_redis_dump_reads_every_type(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.set("s", MARKER)
    client.hset("h", "f", MARKER)
    client.rpush("l", MARKER)
    client.sadd("st", MARKER)
    client.zadd("z", {MARKER: 1})
    client.xadd("x", {"f": MARKER})
    dumped = redis_dump(client)
    client.close()
    assert dumped.count(MARKER) == 6
