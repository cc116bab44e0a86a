"""The key flood, against real processes (two uvicorn API replicas, a worker, a model server,
Postgres, Redis): a key over its rate, its jobs in flight or its daily budget is answered 429 with
Retry-After and a body naming the limit, nothing is written, other keys are unaffected, and the
replicas share the rate through Redis. With Redis down the limiter fails open, counted."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from orchestrator.models import Audit, Job
from orchestrator.principals import Principal, Quota, Scope, digest_of, key_id_for_digest
from orchestrator.quotas import limits_of
from orchestrator.settings import load_settings
from tests.support.env import free_port
from tests.support.keys import keys_env, principal

pytestmark = [pytest.mark.security, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

FLOOD, CALM, SLOW, THRIFTY = "flood-key-0001", "calm-key-0002", "slow-key-0003", "thrifty-key-0004"
RPM = 5
BODY = {"age_months": 30, "observations": "QUOTA-MARKER-8d1c runs and climbs", "sla_ms": 60_000}


def quota_principal(key: str, **limits) -> dict:
    return {**principal(key, "submit"), **limits}


def key_id(key: str) -> str:
    return key_id_for_digest(digest_of(key))


def wait(client: httpx.Client, job_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    view: dict = {}
    while time.monotonic() < deadline:
        view = client.get(f"/api/status/{job_id}").json()
        if view["status"] in ("completed", "failed"):
            return view
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {view}")


def stored(pg_url: str, key: str) -> tuple[int, int]:
    """(jobs, 'submitted' audit rows) of ``key`` in Postgres."""
    engine = create_engine(pg_url)
    try:
        with Session(engine) as session:
            jobs = session.scalar(select(func.count()).select_from(Job).where(Job.actor == key_id(key)))
            audits = session.scalar(
                select(func.count()).select_from(Audit).where(Audit.event == "submitted", Audit.actor == key_id(key))
            )
            return jobs, audits
    finally:
        engine.dispose()


def metric(api, name: str, **labels: str) -> float:
    text = httpx.get(f"{api.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def assert_quota_refusal(response: httpx.Response, limit: str, most_seconds: int) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert (error["code"], error["limit"]) == ("quota_exceeded", limit)
    assert limit in error["message"] and "QUOTA-MARKER" not in response.text
    assert re.fullmatch(r"\d+", response.headers["Retry-After"])
    assert 1 <= int(response.headers["Retry-After"]) <= most_seconds


def test_the_key_flood_is_limited_across_replicas_and_other_keys_are_unaffected(stack, pg_url, redis_url):
    env = keys_env(quota_principal(FLOOD, rpm=RPM), principal(CALM, "submit"))
    replicas = [stack.api(**env, QUOTA_RPM="1000"), stack.api(**env, QUOTA_RPM="1000")]
    flood = [api.as_key(FLOOD) for api in replicas]
    answers = [flood[i % 2].post("/api/submit", json=BODY) for i in range(RPM)]
    assert [a.status_code for a in answers] == [202] * RPM
    queued = redis.Redis.from_url(redis_url).llen("rq:queue:pedi-screen")

    over = [flood[i % 2].post("/api/submit", json=BODY) for i in range(4)]  # both replicas refuse
    for response in over:
        assert_quota_refusal(response, "rpm", 60)
    task = flood[0].post("/route_task", json={"task_type": "t", "payload": {}, "consent": True})
    assert task.status_code == 429 and task.json()["error"]["limit"] == "rpm"
    assert stored(pg_url, FLOOD) == (RPM, RPM), "a refused submission wrote something"
    assert redis.Redis.from_url(redis_url).llen("rq:queue:pedi-screen") == queued

    calm = [api.as_key(CALM) for api in replicas]
    assert [calm[i % 2].post("/api/submit", json=BODY).status_code for i in range(RPM + 2)] == [202] * (RPM + 2)
    rejected = sum(metric(api, "pedi_quota_rejections_total", key_id=key_id(FLOOD), limit="rpm") for api in replicas)
    assert rejected == len(over) + 1
    assert metric(replicas[0], "pedi_quota_rejections_total", key_id=key_id(CALM)) == 0


def test_jobs_in_flight_are_limited_until_they_finish(stack, pg_url):
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
    api = stack.api(**keys_env(quota_principal(SLOW, max_in_flight=2), principal(CALM, "submit")))
    slow = api.as_key(SLOW)
    accepted = [slow.post("/api/submit", json=BODY) for _ in range(2)]
    assert [a.status_code for a in accepted] == [202, 202]
    assert_quota_refusal(slow.post("/api/submit", json=BODY), "max_in_flight", 60)
    assert stored(pg_url, SLOW) == (2, 2)
    assert api.as_key(CALM).post("/api/submit", json=BODY).status_code == 202

    stack.worker(concurrency=2)  # the two jobs finish; the key may submit again
    for answer in accepted:
        assert wait(slow, answer.json()["job_id"])["status"] == "completed"
    assert slow.post("/api/submit", json=BODY).status_code == 202


def test_a_spent_daily_budget_stops_new_work_until_tomorrow(stack, pg_url):
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)  # 0.004 USD a call (tier default)
    api = stack.api(**keys_env(quota_principal(THRIFTY, daily_budget_usd=0.003)))
    stack.worker(concurrency=1)
    thrifty = api.as_key(THRIFTY)
    first = thrifty.post("/api/submit", json=BODY)
    assert first.status_code == 202
    done = wait(thrifty, first.json()["job_id"])
    assert done["status"] == "completed" and done["cost_usd"] > 0.003, done
    assert_quota_refusal(thrifty.post("/api/submit", json=BODY), "daily_budget_usd", 86_400)
    assert stored(pg_url, THRIFTY) == (1, 1)


def test_with_redis_down_the_rate_limiter_fails_open_and_counts_it(stack, pg_url):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    api = stack.api(**keys_env(quota_principal(FLOOD, rpm=1)), REDIS_URL=dead_redis, RECONCILER_ENABLED="false")
    flood = api.as_key(FLOOD)
    assert [flood.post("/api/submit", json=BODY).status_code for _ in range(3)] == [202] * 3
    assert metric(api, "pedi_redis_errors_total", component="quota") == 3
    assert metric(api, "pedi_quota_rejections_total") == 0
    assert stored(pg_url, FLOOD) == (3, 3)


def test_a_key_s_own_limits_win_over_the_global_defaults(monkeypatch):
    monkeypatch.setenv("QUOTA_RPM", "100")
    monkeypatch.setenv("QUOTA_MAX_IN_FLIGHT", "50")
    settings = load_settings()
    own = Principal("key-a", "default", frozenset({Scope.SUBMIT}), Quota(rpm=7, daily_budget_usd=1.5))
    plain = Principal("key-b", "default", frozenset({Scope.SUBMIT}))
    assert limits_of(own, settings) == limits_of(own, settings).__class__(7, 50, 1.5)
    assert (limits_of(plain, settings).rpm, limits_of(plain, settings).daily_budget_usd) == (100, None)


@pytest.mark.parametrize("bad", [{"rpm": 0}, {"max_in_flight": -1}, {"daily_budget_usd": "nan"}, {"burst": 3}])
def test_bad_quota_fields_stop_the_start_naming_the_variable(monkeypatch, bad):
    from orchestrator.errors import ConfigError

    monkeypatch.setenv("API_KEYS_JSON", keys_env(quota_principal(FLOOD, **bad))["API_KEYS_JSON"])
    with pytest.raises(ConfigError, match="API_KEYS_JSON"):
        load_settings()


RACE_CAP, RACERS = 5, 40


def test_concurrent_submits_of_one_key_never_exceed_its_jobs_in_flight(stack, pg_url):
    """The attacker fires 40 submissions of one key at once (distinct bodies, no worker running):
    exactly max_in_flight are accepted, every other one is a 429 with Retry-After, and exactly
    max_in_flight jobs (and audit rows) exist. A count-then-insert without a per-key lock lets
    racing requests pass the same count and overshoots the cap."""
    api = stack.api(**keys_env(quota_principal(SLOW, max_in_flight=RACE_CAP)))
    barrier = threading.Barrier(RACERS)

    def fire(i: int) -> httpx.Response:
        with httpx.Client(base_url=api.url, headers={"x-api-key": SLOW}, timeout=30) as client:
            barrier.wait()
            return client.post("/api/submit", json={**BODY, "observations": f"QUOTA-MARKER-8d1c racer {i}"})

    with ThreadPoolExecutor(RACERS) as pool:
        answers = list(pool.map(fire, range(RACERS)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] * RACE_CAP + [429] * (RACERS - RACE_CAP), f"202: {codes.count(202)}, 429: {codes.count(429)}"
    for refused in (a for a in answers if a.status_code == 429):
        assert_quota_refusal(refused, "max_in_flight", 60)
    assert stored(pg_url, SLOW) == (RACE_CAP, RACE_CAP)
    accepted = {a.json()["job_id"] for a in answers if a.status_code == 202}
    assert len(accepted) == RACE_CAP


def test_an_idempotent_replay_at_the_cap_returns_the_job_not_429(stack, pg_url):
    api = stack.api(**keys_env(quota_principal(SLOW, max_in_flight=2)))
    slow = api.as_key(SLOW)
    first = slow.post("/api/submit", json=BODY, headers={"Idempotency-Key": "replay-1"})
    second = slow.post("/api/submit", json={**BODY, "age_months": 31})
    assert (first.status_code, second.status_code) == (202, 202)
    assert_quota_refusal(slow.post("/api/submit", json={**BODY, "age_months": 32}), "max_in_flight", 60)
    replay = slow.post("/api/submit", json=BODY, headers={"Idempotency-Key": "replay-1"})
    assert replay.status_code == 202, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["job_id"] == first.json()["job_id"]
    conflict = slow.post("/api/submit", json={**BODY, "age_months": 33}, headers={"Idempotency-Key": "replay-1"})
    assert conflict.status_code == 409, conflict.text
    assert stored(pg_url, SLOW) == (2, 2)
