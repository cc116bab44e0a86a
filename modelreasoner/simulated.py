"""Simulated targets for demos: the worker calls these in-process instead of model servers.

Chosen explicitly (``--simulate`` or ``WORKER_SIMULATE=1``), never as a silent fallback. Each
tier sleeps a log-normal latency, fails now and then, and answers with the real reference
screening logic, so the whole pipeline (routing, failover, audit) behaves as with servers.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time

from modelreasoner.client import CallInput, CallResult
from orchestrator.error_kinds import ErrorKind
from orchestrator.errors import ModelCallError
from orchestrator.routing.types import Target
from orchestrator.targets import TIERS, make_target

PROFILES = {
    # tier: (median latency ms, log-space sigma, failure probability)
    "edge": (120.0, 0.35, 0.002),
    "cloud": (350.0, 0.5, 0.01),
    "gpu": (60.0, 0.25, 0.002),
}


def simulated_targets() -> list[Target]:
    return [make_target(tier, tier, f"sim://{tier}") for tier in TIERS]


class SimulatedClient:
    """Same ``call`` contract as ``ModelClient``, served in-process."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._lock = threading.Lock()

    def call(self, target: Target, job: CallInput, timeout_s: float) -> CallResult:
        median, sigma, fail = PROFILES.get(target.tier, PROFILES["cloud"])
        with self._lock:
            latency_ms = median * math.exp(self._rng.gauss(0.0, sigma))
            fails = self._rng.random() < fail
        if latency_ms / 1000.0 > timeout_s:
            time.sleep(timeout_s)
            raise ModelCallError(ErrorKind.TIMEOUT, f"no answer within {timeout_s * 1000:.0f} ms")
        time.sleep(latency_ms / 1000.0)
        if fails:
            raise ModelCallError(ErrorKind.HTTP_5XX, "HTTP 503 (simulated)", status=503)
        return CallResult(result=_answer(job), latency_ms=latency_ms, cost_usd=target.cost_per_call_usd)


def _answer(job: CallInput) -> dict:
    if job.task_type != "screening":
        digest = hashlib.sha256(json.dumps(job.payload, sort_keys=True).encode()).hexdigest()
        return {"task_type": job.task_type, "payload_sha256": digest}
    from modelreasoner.server.screening import screen

    return screen(job.age_months or 0, job.observations or "").to_dict()
