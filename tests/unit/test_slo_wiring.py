"""The operator's SLO objectives reach every router the processes build (worker, API, dry run),
and a finished job feeds its class's fleet-wide record, also through a Redis outage."""

from __future__ import annotations

import redis

from modelreasoner import calls
from modelreasoner.resilient_stats import ResilientStatsStore
from modelreasoner.runtime import build_runtime
from orchestrator.routing import InMemoryStatsStore, Router
from orchestrator.routing.config import config_with_objectives
from orchestrator.settings import load_settings
from tests.support.app import in_process_app


def test_the_worker_and_the_api_route_with_the_configured_objectives(monkeypatch, sqlite_engine, fake_redis):
    monkeypatch.setenv("ROUTING_SLO_OBJECTIVES", "500:0.999,3000:0.99")
    monkeypatch.setenv("ROUTING_SLO_DEFAULT_OBJECTIVE", "0.95")
    monkeypatch.setenv("DATABASE_URL", "sqlite://")
    rt = build_runtime(load_settings(), concurrency=1)
    try:
        assert rt.router.config.slo_objectives == ((500.0, 0.999), (3000.0, 0.99))
        assert rt.router.config.slo_default_objective == 0.95
    finally:
        rt.http.close()
    services = in_process_app(sqlite_engine, fake_redis, monkeypatch).state.services
    assert services.routing_config == rt.router.config


def test_a_finished_job_feeds_its_class_record():
    store = InMemoryStatsStore()
    router = Router(store, config_with_objectives("500:0.99"))

    class Rt:
        stats_writer = None

    rt = Rt()
    rt.router = router
    calls.job_ended(rt, 400, on_time=False)
    calls.job_ended(rt, 400, on_time=True)
    assert store.slo_record("le500ms").jobs > 0
    assert store.slo_record("default").jobs == 0, "the default class keeps no record at objective 1"


def test_a_redis_outage_never_fails_the_class_record():
    class Down:
        def slo_record(self, label):
            raise redis.ConnectionError("down")

        def update_slo(self, label, fn):
            raise redis.ConnectionError("down")

    store = ResilientStatsStore(Down())
    router = Router(store, config_with_objectives("500:0.99"))
    router.record_job(400, on_time=True, at=0.0)
    assert store.slo_record("le500ms").jobs == 0 and store.failures == 2
