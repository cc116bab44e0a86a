"""The target catalogue: list it with live stats, register model servers or agents, remove them."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from orchestrator import catalogue
from orchestrator.app.auth import AdminDep, OperateDep
from orchestrator.app.deps import RouterDep, SessionDep, SettingsDep
from orchestrator.models import utcnow
from orchestrator.schemas import ErrorBody, TargetList, TargetRegister, TargetRegistered, TargetRemoved
from orchestrator.url_policy import UrlPolicy, policy_for

ERRORS = {401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 503: {"model": ErrorBody}}

router = APIRouter(tags=["targets"], responses=ERRORS)


def url_policy(request: Request) -> UrlPolicy:
    """The app's target URL policy, built once from its settings."""
    state = request.app.state
    policy = getattr(state, "url_policy", None)
    if policy is None:
        policy = state.url_policy = policy_for(state.services.settings)
    return policy


@router.get("/api/targets", response_model=TargetList, summary="Targets with live stats and circuit state")
def list_targets(session: SessionDep, settings: SettingsDep, routing: RouterDep, _: OperateDep) -> TargetList:
    """Every target routing may use (configured and registered), its predicted latency, error
    rate, calls in flight, circuit state and latest pushed telemetry."""
    entries = catalogue.entries(session, settings)
    now = time.time()
    stats = routing.stats([e.target for e in entries], now)
    return TargetList(targets=[catalogue.describe(e, stats[e.target.name], now) for e in entries])


REGISTER = {
    "response_model": TargetRegistered,
    "status_code": 201,
    "responses": {
        200: {"model": TargetRegistered, "description": "Updated (same name)"},
        409: {"model": ErrorBody, "description": "A configured name without override, or too many registered"},
        422: {"model": ErrorBody, "description": "Invalid, or the URL is refused by the target URL policy"},
    },
}


@router.post("/register_agent", summary="Register a model server or agent (admin)", **REGISTER)
@router.post("/api/agents", summary="Register a model server or agent (same as /register_agent)", **REGISTER)
def register_agent(
    body: TargetRegister,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    routing: RouterDep,
    principal: AdminDep,
) -> TargetRegistered:
    """Add a target (201) or replace the registered one of the same name (200). Persisted; every
    worker routes to it within a few seconds, without a restart. Audited as ``registered``, with
    what it replaced. The URL must pass the target URL policy (TARGET_URL_ALLOWLIST; never
    link-local or cloud metadata; no loopback in production). A name configured by env or
    TARGETS_FILE is replaced or disabled only with ``"override": true`` (409 without)."""
    registration = catalogue.register(
        session, body, settings, url_policy(request), actor=principal.key_id, now=utcnow()
    )
    response.status_code = 201 if registration.created else 200
    name = registration.target.name
    entry = catalogue.find(catalogue.entries(session, settings), name)
    now = time.time()
    public = catalogue.describe(entry, routing.stats([entry.target], now)[name], now)
    return TargetRegistered(**public.model_dump(), replaced=registration.replaced)


TargetName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


@router.delete(
    "/api/targets/{name}",
    response_model=TargetRemoved,
    responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}},
    summary="Remove a registered target (admin)",
)
def remove_target(name: TargetName, session: SessionDep, settings: SettingsDep, principal: AdminDep) -> TargetRemoved:
    """Delete a target registered through the API; audited as ``unregistered``. A configured target
    of the same name (one it overrode) is in use again (``restored``). 404 when no target of that
    name is registered: configured targets change in their configuration."""
    return catalogue.remove(session, settings, name, actor=principal.key_id, now=utcnow())
