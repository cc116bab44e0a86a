"""Hedged requests end to end: real model servers (one slow by emulation, one fast), the API,
a threaded worker, Postgres and Redis."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from orchestrator.models import Audit
from tests.support.env import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

OBSERVATIONS = "Walks well, says a few words, points to show things."
SLOW_MS = 4000
"""The slow server answers after 4 s: long after a 2 s job must be hedged."""


def attempt_rows(pg_url: str, job_id: str) -> list[Audit]:
    engine = create_engine(pg_url)
    with Session(engine) as session:
        rows = session.scalars(
            select(Audit).where(Audit.job_id == uuid.UUID(job_id), Audit.event == "attempt").order_by(Audit.id)
        ).all()
    engine.dispose()
    return list(rows)


def hedges_metric(metrics_url: str, target: str) -> float:
    text = httpx.get(metrics_url, timeout=5).text
    for line in text.splitlines():
        if line.startswith(f'pedi_hedges_total{{target="{target}"}}'):
            return float(line.split()[-1])
    return 0.0


def start(stack, **worker_env: str):
    stack.model_server("edge", tier="edge", latency_ms=SLOW_MS, jitter=0, capacity=16)
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
    api = stack.api()
    metrics_port = free_port()
    stack.worker(concurrency=8, METRICS_PORT=str(metrics_port), **worker_env)
    return api, f"http://127.0.0.1:{metrics_port}/metrics"


def test_a_late_call_is_hedged_and_the_first_answer_wins(stack, pg_url):
    api, metrics = start(stack, HEDGE_MAX_SHARE="0.5")
    # the edge box is cheapest and asked for: the worker calls it first and must hedge
    job = api.submit(observations=OBSERVATIONS, preferred_target="edge", sla_ms=2000)
    done = api.wait(job["job_id"])
    assert done["status"] == "completed" and done["target"] == "gpu" and done["sla_met"] is True, done
    assert [(a["target"], a["outcome"], a["hedge"]) for a in done["attempts"]] == [
        ("edge", "cancelled", False),
        ("gpu", "ok", True),
    ]
    rows = attempt_rows(pg_url, job["job_id"])
    assert [(r.target, r.details["hedge"]) for r in rows] == [("edge", False), ("gpu", True)]
    assert "lost the hedge race" in rows[0].details["error"]
    assert done["cost_usd"] == pytest.approx(0.0002 + 0.004)  # the abandoned call is still billed
    assert hedges_metric(metrics, "gpu") == 1.0


def test_the_hedge_budget_caps_extra_calls(stack, pg_url):
    api, metrics = start(stack, HEDGE_MAX_SHARE="0.2")
    jobs = [api.submit(observations=OBSERVATIONS, preferred_target="edge", sla_ms=2000) for _ in range(8)]
    finished = [api.wait(j["job_id"], timeout=60) for j in jobs]
    assert all(f["status"] == "completed" for f in finished)
    attempts = [a for f in finished for a in f["attempts"]]
    hedges = [a for a in attempts if a["hedge"]]
    assert 1 <= len(hedges) <= 0.2 * len(attempts), attempts
    assert len(hedges) < len(jobs)  # every job wanted one
    unhedged = [f for f in finished if not any(a["hedge"] for a in f["attempts"])]
    assert all([a["outcome"] for a in f["attempts"]] == ["timeout", "ok"] for f in unhedged)
    assert hedges_metric(metrics, "gpu") == len(hedges)
