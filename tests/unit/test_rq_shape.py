"""The RQ members our workers override or read, as the pinned RQ has them.

modelreasoner/rq_adapter.py and modelreasoner/threaded_worker.py override and read these. If an
RQ upgrade renames one, changes its parameters or stops calling it, these tests fail here, by
name, instead of the workers silently losing a guarantee (a PHI-free failure record, a warm
shutdown that strands nothing, a heartbeat that rides out a Redis restart).
"""

from __future__ import annotations

import inspect
import re
from datetime import UTC, datetime
from pathlib import Path

import fakeredis
import pytest
import rq
from rq import SimpleWorker, Worker
from rq.timeouts import BaseDeathPenalty
from rq.worker_registration import REDIS_WORKER_KEYS

from modelreasoner import rq_adapter
from modelreasoner.threaded_worker import ThreadedWorker
from modelreasoner.worker import ForkingMetricsWorker, ScrubbedThreadedWorker

ROOT = Path(__file__).resolve().parents[2]

OVERRIDDEN = {
    # member: its parameters (after self), as RQ 3.0.0 declares them
    "_finalize_failure": ["job", "queue", "execution", "exc_info"],
    "_shutdown": [],
    "handle_exception": ["job", "*exc_info"],
    "heartbeat": ["timeout=None", "pipeline=None"],
    "set_state": ["state", "pipeline=None"],
    "dequeue_job_and_maintain_ttl": ["timeout", "max_idle_time=None"],
    "execute_job": ["job", "queue"],
    "prepare_execution": ["job"],
    "perform_job": ["job", "queue", "execution"],
    "check_for_suspension": ["burst"],
    "run_maintenance_tasks": [],
    "teardown": [],
    "register_birth": [],
    "set_shutdown_requested_date": [],
}


def parameters(function) -> list[str]:
    shown = []
    for parameter in list(inspect.signature(function).parameters.values())[1:]:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            shown.append(f"*{parameter.name}")
        elif parameter.default is inspect.Parameter.empty:
            shown.append(parameter.name)
        else:
            shown.append(f"{parameter.name}={parameter.default!r}")
    return shown


def test_the_installed_rq_is_the_pinned_one():
    pinned = re.search(r"^rq==([\w.]+)$", (ROOT / "requirements-orchestrator.txt").read_text(), re.M)
    assert pinned is not None, "rq is not pinned in requirements-orchestrator.txt"
    assert rq.__version__ == pinned.group(1)


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_every_member_we_override_has_the_shape_we_override(name):
    member = getattr(SimpleWorker, name, None)
    assert member is not None, f"RQ's worker no longer has {name}"
    assert parameters(member) == OVERRIDDEN[name], f"RQ's {name} changed its parameters"


def test_rq_calls_the_private_hooks_we_override():
    """Overriding a method RQ no longer calls would do nothing, silently."""
    assert "self._shutdown()" in inspect.getsource(Worker.request_stop)
    assert "self._finalize_failure(" in inspect.getsource(Worker.perform_job)


def test_the_private_attributes_we_read_exist_and_mean_what_we_think():
    worker = SimpleWorker(["q"], connection=fakeredis.FakeRedis())
    worker._shutdown_requested_date = datetime.now(UTC)  # what RQ's signal handler sets first
    assert rq_adapter.stop_requested(worker) is False
    worker.set_state("busy")
    assert rq_adapter.last_state(worker) == "busy"
    rq_adapter.request_stop(worker)
    assert rq_adapter.stop_requested(worker) is True
    assert isinstance(worker.executions, dict)
    assert REDIS_WORKER_KEYS == "rq:workers"


def test_our_death_penalty_overrides_rqs_hooks():
    for name in ("setup_death_penalty", "cancel_death_penalty"):
        assert parameters(getattr(BaseDeathPenalty, name)) == []


def test_our_workers_put_the_hooks_where_rq_looks_for_them():
    for worker_class in (ThreadedWorker, ScrubbedThreadedWorker):
        assert worker_class._shutdown is rq_adapter.WarmShutdownHook._shutdown
    for worker_class in (ForkingMetricsWorker, ScrubbedThreadedWorker):
        assert worker_class._finalize_failure is rq_adapter.ScrubbedFailures._finalize_failure
