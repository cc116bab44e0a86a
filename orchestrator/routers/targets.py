"""The target catalogue: list it with live stats, and register model servers or agents."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response

from orchestrator import catalogue
from orchestrator.app.auth import AdminDep, OperateDep
from orchestrator.app.deps import RouterDep, SessionDep, SettingsDep
from orchestrator.models import utcnow
from orchestrator.schemas import ErrorBody, TargetList, TargetPublic, TargetRegister

ERRORS = {401: {"model": ErrorBody}, 503: {"model": ErrorBody}}

router = APIRouter(tags=["targets"], responses=ERRORS)


@router.get("/api/targets", response_model=TargetList, summary="Targets with live stats and circuit state")
def list_targets(session: SessionDep, settings: SettingsDep, routing: RouterDep, _: OperateDep) -> TargetList:
    """Every target routing may use (configured and registered), its predicted latency, error
    rate, calls in flight, circuit state and latest pushed telemetry."""
    entries = catalogue.entries(session, settings)
    now = time.time()
    stats = routing.stats([e.target for e in entries], now)
    return TargetList(targets=[catalogue.describe(e, stats[e.target.name], now) for e in entries])


REGISTER = {
    "response_model": TargetPublic,
    "status_code": 201,
    "responses": {200: {"model": TargetPublic, "description": "Updated (same name)"}, 422: {"model": ErrorBody}},
}


@router.post("/register_agent", summary="Register a model server or agent", **REGISTER)
@router.post("/api/agents", summary="Register a model server or agent (same as /register_agent)", **REGISTER)
def register_agent(
    body: TargetRegister,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    routing: RouterDep,
    principal: AdminDep,
) -> TargetPublic:
    """Add a target (201) or replace the one of the same name (200). Persisted; every worker
    routes to it within a few seconds, without a restart. Audited as ``registered``. Served as
    POST /register_agent and, the same, as POST /api/agents."""
    target, created = catalogue.register(session, body, actor=principal.key_id, now=utcnow())
    response.status_code = 201 if created else 200
    entry = catalogue.find(catalogue.entries(session, settings), target.name)
    now = time.time()
    return catalogue.describe(entry, routing.stats([entry.target], now)[target.name], now)
