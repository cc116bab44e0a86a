"""modelreasoner.bootstrap: which job context a process gets, and that none crosses a fork."""

from __future__ import annotations

import json
import os

from modelreasoner import bootstrap
from tests.unit.test_worker_logic import ScriptedClient, make_runtime


def test_an_installed_context_is_the_one_this_process_gets(sqlite_engine, fake_redis, monkeypatch):
    monkeypatch.setattr(bootstrap, "_contexts", {})
    rt = make_runtime(sqlite_engine, fake_redis, ScriptedClient())
    bootstrap.install(rt)
    assert bootstrap.job_context() is rt


def test_a_job_process_adopts_the_forking_parents_context_with_its_own_identity(sqlite_engine, fake_redis, monkeypatch):
    prepared = make_runtime(sqlite_engine, fake_redis, ScriptedClient())
    monkeypatch.setattr(bootstrap, "_contexts", {})
    monkeypatch.setattr(bootstrap, "_prepared", prepared)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the job process: report what it got, then leave without running pytest's exit
        try:
            rt = bootstrap.job_context()
            seen = {
                "same_settings": rt.settings is prepared.settings,
                "same_engine": rt.engine is prepared.engine,
                "own_worker_id": rt.worker_id != prepared.worker_id,
                "own_leases": rt.leases is not prepared.leases,
                "own_lock": rt._lock is not prepared._lock,
                "again_the_same": bootstrap.job_context() is rt,
            }
            os.write(write, json.dumps(seen).encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as answer:
        seen = json.loads(answer.read())
    assert os.waitstatus_to_exitcode(status) == 0
    assert seen == {
        "same_settings": True,
        "same_engine": True,
        "own_worker_id": True,
        "own_leases": True,
        "own_lock": True,
        "again_the_same": True,
    }
    # the parent itself never adopted (nor used) the prepared context
    assert bootstrap._contexts == {}


def test_without_a_prepared_or_installed_context_one_is_built_for_this_process(monkeypatch, fake_redis):
    built = []

    def build(settings, concurrency=None):
        built.append(settings)
        return object()

    monkeypatch.setattr(bootstrap, "_contexts", {})
    monkeypatch.setattr(bootstrap, "_prepared", None)
    monkeypatch.setattr(bootstrap, "build_runtime", build)
    first = bootstrap.job_context()
    assert bootstrap.job_context() is first and len(built) == 1
