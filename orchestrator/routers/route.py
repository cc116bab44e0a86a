"""The routing dry run: where a hypothetical job would go right now, and why."""

from __future__ import annotations

import math
import random
import time

from fastapi import APIRouter

from orchestrator import catalogue
from orchestrator.app.auth import OperateDep
from orchestrator.app.deps import ServicesDep, SessionDep
from orchestrator.routing import RedisStatsStore, Router, RouteRequest
from orchestrator.schemas import ErrorBody, RouteDryRun, RouteDryRunResult

ERRORS = {401: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}

router = APIRouter(tags=["routing"], responses=ERRORS)

DRY_RUN_JOB_ID = "dry-run"


class NoExploration(random.Random):
    """An exploration draw that never picks a probe: a dry run shows the decision a job gets
    when it is not one of the few (ROUTING probe share) sent to learn about a target, so the
    same question gets the same answer."""

    def random(self) -> float:
        return math.nextafter(1.0, 0.0)


@router.post("/api/route", response_model=RouteDryRunResult, summary="Routing decision for a hypothetical job")
def dry_run(body: RouteDryRun, session: SessionDep, services: ServicesDep, _: OperateDep) -> RouteDryRunResult:
    """The ranked decision, with every candidate's score components and reason, from the live
    shared stats. Nothing is stored or queued, and no stats change."""
    targets = catalogue.routable(catalogue.entries(session, services.settings), body.kind)
    catalogue.check_preference(body.preferred_target, targets)
    now = time.time()
    request = RouteRequest(
        job_id=DRY_RUN_JOB_ID,
        sla_ms=body.sla_ms or services.settings.default_sla_ms,
        submitted_at=now,
        preferred_target=body.preferred_target,
        strict_sla=body.strict_sla,
        budget_usd=body.budget_usd,
    )
    router_ = Router(RedisStatsStore(services.redis), services.routing_config, rng=NoExploration())
    decision = router_.decide(request, targets, now)
    return RouteDryRunResult(decision=decision.to_dict(), targets_considered=len(targets))
