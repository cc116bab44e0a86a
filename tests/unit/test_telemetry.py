"""Telemetry ingestion in-process (SQLite + fakeredis): every unit form normalizes to ms, 0-1 and
UTC; bad values are a 422 naming the field; odd timestamps are handled; samples are stored,
pruned after the retention, and blended into the shared routing stats."""

from __future__ import annotations

import importlib.util
import random
import sys
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.models import TelemetrySample
from orchestrator.routing import RedisStatsStore
from orchestrator.telemetry import MAX_SAMPLES_PER_BATCH, normalize, parse_body, prune
from tests.support.app import in_process_app
from tests.support.env import ROOT
from tests.support.keys import keys_env, principal

TARGET_ENV = {"EDGE_MODEL_URL": "http://127.0.0.1:18001", "GPU_MODEL_URL": "http://127.0.0.1:18002"}


def make_client(sqlite_engine, fake_redis, monkeypatch, **env: str) -> TestClient:
    return TestClient(in_process_app(sqlite_engine, fake_redis, monkeypatch, **{**TARGET_ENV, **env}))


@pytest.fixture
def client(sqlite_engine, fake_redis, monkeypatch):
    with make_client(sqlite_engine, fake_redis, monkeypatch) as test_client:
        yield test_client


def rows(engine) -> list[TelemetrySample]:
    with Session(engine) as session:
        return list(session.scalars(select(TelemetrySample).order_by(TelemetrySample.id)))


def post_one(client, **sample):
    sample.setdefault("target", "gpu")
    return client.post("/api/telemetry", json=sample)


@pytest.mark.parametrize(
    ("form", "expected_ms"),
    [
        ({"latency_ms": 80}, 80.0),
        ({"latency_ms": 80.5}, 80.5),
        ({"latency_s": 0.08}, 80.0),
        ({"latency_s": 2}, 2000.0),
        ({"latency": "80ms"}, 80.0),
        ({"latency": "80 ms"}, 80.0),
        ({"latency": "0.08s"}, 80.0),
        ({"latency": "0.08 S"}, 80.0),
        ({"latency": "500us"}, 0.5),
        ({"latency": "250µs"}, 0.25),
        ({"latency": "1.5e2ms"}, 150.0),
        ({"latency": ".5s"}, 500.0),
    ],
)
def test_every_latency_form_is_stored_in_milliseconds(client, sqlite_engine, form, expected_ms):
    response = post_one(client, **form)
    assert response.status_code == 202 and response.json() == {"accepted": 1, "dropped": 0}
    assert rows(sqlite_engine)[0].latency_ms == pytest.approx(expected_ms)


@pytest.mark.parametrize(
    ("given", "fraction"),
    [(0.42, 0.42), (0, 0.0), (1, 1.0), (42, 0.42), (100, 1.0), (1.5, 0.015), ("42%", 0.42), ("7.5 %", 0.075)],
)
def test_every_utilization_form_is_stored_as_a_fraction(client, sqlite_engine, given, fraction):
    assert post_one(client, utilization=given).status_code == 202
    assert rows(sqlite_engine)[0].utilization == pytest.approx(fraction)


def recent(seconds_ago: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds_ago)


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda at: at.timestamp(), id="epoch-s"),
        pytest.param(lambda at: int(at.timestamp()), id="epoch-s-int"),
        pytest.param(lambda at: at.timestamp() * 1000, id="epoch-ms"),
        pytest.param(lambda at: str(at.timestamp()), id="epoch-s-string"),
        pytest.param(lambda at: at.isoformat(), id="iso-offset"),
        pytest.param(lambda at: at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), id="iso-z"),
        pytest.param(lambda at: at.astimezone(UTC).replace(tzinfo=None).isoformat(), id="iso-naive-is-utc"),
        pytest.param(lambda at: at.astimezone(timezone(timedelta(hours=2))).isoformat(), id="iso-plus-2h"),
    ],
)
def test_every_timestamp_form_is_stored_as_the_same_utc_instant(client, sqlite_engine, encode):
    at = recent(90).replace(microsecond=0)
    assert post_one(client, latency_ms=50, timestamp=encode(at)).status_code == 202
    stored = rows(sqlite_engine)[0].at
    assert abs((stored - at).total_seconds()) < 0.01


def test_a_sample_without_timestamp_is_taken_now_and_source_defaults_to_the_caller(
    sqlite_engine, fake_redis, monkeypatch
):
    with make_client(
        sqlite_engine, fake_redis, monkeypatch, **keys_env(principal("telemetry-key-1", "operate"))
    ) as client:
        response = client.post(
            "/api/telemetry", json={"target": "gpu", "up": True}, headers={"x-api-key": "telemetry-key-1"}
        )
        assert response.status_code == 202
        named = client.post(
            "/api/telemetry",
            json={"target": "gpu", "up": True, "source": "gpu-agent-1"},
            headers={"x-api-key": "telemetry-key-1"},
        )
        assert named.status_code == 202
    first, second = rows(sqlite_engine)
    assert abs((first.at - datetime.now(UTC)).total_seconds()) < 5
    assert first.source.startswith("key-") and "telemetry-key-1" not in first.source
    assert second.source == "gpu-agent-1"


@pytest.mark.parametrize(
    ("sample", "field"),
    [
        ({"latency": 80}, "latency"),
        ({"latency": "fast"}, "latency"),
        ({"latency": "80 minutes"}, "latency"),
        ({"latency": "-5ms"}, "latency"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"latency_ms": 4_000_000}, "latency_ms"),
        ({"latency_ms": "eighty"}, "latency_ms"),
        ({"latency_s": 7200}, "latency_s"),
        ({"utilization": 142}, "utilization"),
        ({"utilization": -0.1}, "utilization"),
        ({"utilization": "abc"}, "utilization"),
        ({"utilization": "120%"}, "utilization"),
        ({"utilization": True}, "utilization"),
        ({"queue_depth": -1}, "queue_depth"),
        ({"queue_depth": 2.5}, "queue_depth"),
        ({"cost_usd": -0.01}, "cost_usd"),
        ({"up": "maybe"}, "up"),
        ({"up": 1}, "up"),
        ({"up": True, "timestamp": "yesterday"}, "timestamp"),
        ({"up": True, "timestamp": -5}, "timestamp"),
        ({"up": True, "timestamp": 1e300}, "timestamp"),
        ({"up": True, "colour": "blue"}, "colour"),
        ({"up": True, "source": "bad source!"}, "source"),
        ({"latency_ms": 80, "latency_s": 0.08}, "latency"),
        ({"latency_ms": 80, "latency": "80ms"}, "latency"),
    ],
)
def test_a_bad_value_anywhere_in_a_batch_is_a_422_naming_it_and_nothing_is_kept(
    client, sqlite_engine, fake_redis, sample, field
):
    good = {"target": "edge", "latency_ms": 10}
    response = client.post("/api/telemetry", json={"samples": [good, {"target": "gpu", **sample}]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["field"] == f"samples.1.{field}", error
    assert f"samples.1.{field}" in error["message"]
    single = post_one(client, **sample)
    assert single.status_code == 422 and single.json()["error"]["field"] == field
    assert rows(sqlite_engine) == []
    assert fake_redis.keys("pedi:stats:*") == [], "a refused batch must not touch the routing stats"


def test_an_unknown_target_is_named_by_its_position(client):
    response = client.post(
        "/api/telemetry", json={"samples": [{"target": "gpu", "up": True}, {"target": "tpu", "up": True}]}
    )
    assert response.status_code == 422 and response.json()["error"]["field"] == "samples.1.target"
    assert post_one(client, target="tpu", up=True).json()["error"]["field"] == "target"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"samples": []}, "samples"),
        ({"samples": [{"target": "gpu", "up": True}] * (MAX_SAMPLES_PER_BATCH + 1)}, "samples"),
        ({"samples": "gpu"}, "samples"),
        ({"target": "gpu"}, "body"),
        ({"samples": [{"target": "gpu", "up": True}, {"target": "gpu", "timestamp": time.time()}]}, "samples.1"),
        ({"latency_ms": 5}, "target"),
    ],
)
def test_malformed_bodies_name_what_is_wrong(client, body, field):
    response = client.post("/api/telemetry", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_a_json_array_body_is_refused(client):
    response = client.post("/api/telemetry", json=[{"target": "gpu", "up": True}])
    assert response.status_code == 422 and response.json()["error"]["field"] == "body"


def test_a_sample_slightly_in_the_future_is_taken_as_now(client, sqlite_engine):
    ahead = time.time() + 60
    assert post_one(client, latency_ms=20, timestamp=ahead).status_code == 202
    stored = rows(sqlite_engine)[0].at
    assert stored.timestamp() < ahead - 50, "clock skew must not push a sample into the future"
    assert abs(stored.timestamp() - time.time()) < 5


def test_a_sample_far_in_the_future_is_refused_naming_the_timestamp(client, sqlite_engine):
    response = client.post(
        "/api/telemetry",
        json={
            "samples": [{"target": "gpu", "up": True}, {"target": "gpu", "up": True, "timestamp": time.time() + 3600}]
        },
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "samples.1.timestamp" and "future" in error["message"]
    assert rows(sqlite_engine) == []


def test_samples_older_than_the_retention_are_dropped_and_counted(client, sqlite_engine):
    old = (datetime.now(UTC) - timedelta(hours=25)).isoformat()
    body = {
        "samples": [
            {"target": "gpu", "latency_ms": 40, "timestamp": old},
            {"target": "gpu", "latency_ms": 41, "timestamp": 0},
            {"target": "gpu", "latency_ms": 42},
        ]
    }
    response = client.post("/api/telemetry", json=body)
    assert response.status_code == 202 and response.json() == {"accepted": 1, "dropped": 2}
    assert [r.latency_ms for r in rows(sqlite_engine)] == [42.0]


def test_a_shorter_retention_drops_what_the_default_would_keep(sqlite_engine, fake_redis, monkeypatch):
    with make_client(sqlite_engine, fake_redis, monkeypatch, TELEMETRY_RETENTION_HOURS="0.5") as client:
        response = post_one(client, up=True, timestamp=time.time() - 3600)
    assert response.json() == {"accepted": 0, "dropped": 1}


def test_samples_are_stored_normalized_and_blended_into_the_shared_stats(client, sqlite_engine, fake_redis):
    at = time.time() - 2
    body = {
        "samples": [
            {"target": "gpu", "latency": "0.09s", "utilization": "65%", "queue_depth": 2, "cost_usd": 0.004,
             "up": True, "timestamp": at - 1},
            {"target": "gpu", "latency_ms": 120, "timestamp": at},
            {"target": "edge", "up": False, "timestamp": at},
        ]
    }  # fmt: skip
    assert client.post("/api/telemetry", json=body).status_code == 202
    stored = rows(sqlite_engine)
    assert [(r.target, r.latency_ms, r.utilization, r.queue_depth, r.cost_usd, r.up) for r in stored] == [
        ("gpu", pytest.approx(90.0), pytest.approx(0.65), 2, 0.004, True),
        ("gpu", 120.0, None, None, None, None),
        ("edge", None, None, None, None, False),
    ]
    gpu = RedisStatsStore(fake_redis).snapshot(["gpu", "edge"], time.time())
    assert gpu["gpu"].telemetry_latency_ms == 120.0, "the newest latency wins"
    assert gpu["gpu"].telemetry_utilization == pytest.approx(0.65) and gpu["gpu"].telemetry_queue_depth == 2
    assert gpu["gpu"].telemetry_at == pytest.approx(at, abs=0.01)
    assert gpu["edge"].telemetry_up is False
    view = {t["name"]: t for t in client.get("/api/targets").json()["targets"]}
    assert view["gpu"]["telemetry"]["latency_ms"] == 120.0 and view["edge"]["telemetry"]["up"] is False


def test_a_batch_sent_out_of_order_is_blended_oldest_first(client, fake_redis):
    now = time.time()
    newer = {"target": "gpu", "latency_ms": 70, "timestamp": now - 1}
    older = {"target": "gpu", "latency_ms": 300, "utilization": 0.9, "timestamp": now - 5}
    assert client.post("/api/telemetry", json={"samples": [newer, older]}).status_code == 202
    stats = RedisStatsStore(fake_redis).snapshot(["gpu"], now)["gpu"]
    assert stats.telemetry_latency_ms == 70.0, "the newest latency wins"
    assert stats.telemetry_utilization == 0.9, "a field only the older sample carries is still blended"


def test_old_rows_of_a_reporting_target_are_pruned_on_insert(client, sqlite_engine):
    old = datetime.now(UTC) - timedelta(hours=30)
    with Session(sqlite_engine) as session:
        for target in ("gpu", "gpu", "edge"):
            session.add(TelemetrySample(target=target, at=old, received_at=old, latency_ms=1.0, source="seed"))
        session.commit()
    assert post_one(client, latency_ms=55).status_code == 202
    left = [(r.target, r.latency_ms) for r in rows(sqlite_engine)]
    assert left == [("edge", 1.0), ("gpu", 55.0)], "gpu's expired rows go; edge's wait until edge reports"


def test_pruning_is_bounded_per_call(sqlite_engine):
    old = datetime.now(UTC) - timedelta(hours=30)
    with Session(sqlite_engine) as session:
        session.add_all(TelemetrySample(target="gpu", at=old, received_at=old, up=True, source="s") for _ in range(5))
        session.add(TelemetrySample(target="gpu", at=datetime.now(UTC), received_at=old, up=True, source="s"))
        session.commit()
        cutoff = datetime.now(UTC) - timedelta(hours=24)
        assert prune(session, cutoff, limit=2) == 2
        assert prune(session, cutoff, targets={"edge"}) == 0
        assert prune(session, cutoff, targets=set()) == 0
        assert prune(session, cutoff) == 3
        session.commit()
    assert len(rows(sqlite_engine)) == 1


def test_telemetry_needs_the_api_key_when_one_is_set(sqlite_engine, fake_redis, monkeypatch):
    with make_client(
        sqlite_engine, fake_redis, monkeypatch, **keys_env(principal("telemetry-key-1", "operate"))
    ) as client:
        response = post_one(client, up=True)
    assert response.status_code == 401
    assert rows(sqlite_engine) == []


def load_simulator(monkeypatch):
    spec = importlib.util.spec_from_file_location("simulate_telemetry", ROOT / "scripts" / "simulate_telemetry.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


def test_the_simulator_mixes_every_unit_form_and_each_sample_normalizes_to_its_truth(monkeypatch):
    sim = load_simulator(monkeypatch)
    rng = random.Random(11)
    targets = [
        {"name": "edge", "tier": "edge", "prior_latency_ms": 150, "capacity": 2, "cost_per_call_usd": 0.0002},
        {"name": "gpu", "tier": "gpu", "prior_latency_ms": 80, "capacity": 8, "cost_per_call_usd": 0.004},
    ]
    states = [sim.initial_state(t, rng) for t in targets]
    now = datetime.now(UTC)
    keys, down, queued = set(), 0, 0
    for _ in range(400):
        for state in states:
            sim.step(state, rng)
            raw = sim.sample(state, rng, now.timestamp())
            keys.update(f"{k}:{type(v).__name__}" for k, v in raw.items())
            [(prefix, parsed)] = parse_body(raw)
            sample = normalize(parsed, prefix, {"edge", "gpu"}, actor="t", now=now, retention=timedelta(hours=1))
            if sample.up is False:
                down += 1
                continue
            assert sample.utilization == pytest.approx(state.utilization, abs=0.001), raw
            assert 0 < sample.latency_ms < 60_000 and sample.queue_depth == state.queue
            queued += state.queue > 0
    assert {"latency_ms:float", "latency_s:float", "latency:str", "utilization:float", "utilization:str",
            "timestamp:float", "timestamp:int", "timestamp:str"} <= keys  # fmt: skip
    assert down > 0 and queued > 0, "outages and queue build-ups both happen in a long run"
