"""Generic task routing: any task_type and JSON payload, over the same queue and workers.

Tasks go only to runner-contract targets (POST /run); see orchestrator.targets.targets_for.
The payload is stored in Postgres only: it is never logged, and no error message echoes it.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Response

from orchestrator import audit, catalogue, intake, jobs
from orchestrator.app.auth import ReadDep
from orchestrator.app.deps import ServicesDep, SessionDep
from orchestrator.constants import IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_MAX_LENGTH
from orchestrator.db import session_scope
from orchestrator.errors import Forbidden, NotFound
from orchestrator.models import JobKind
from orchestrator.quotas import QuotaDep, in_flight_cap
from orchestrator.routers.jobs import accept, to_public
from orchestrator.schemas import ErrorBody, OutcomePublic, TaskAccepted, TaskCreate, TaskPublic

ERRORS = {401: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}

router = APIRouter(tags=["tasks"], responses=ERRORS)

CONSENT_REQUIRED = 'consent is required: send "consent": true to confirm the task may be processed'


def task_url(services, task_id: uuid.UUID) -> str:
    return f"{services.settings.public_url.rstrip('/')}/task/{task_id}"


@router.post(
    "/route_task",
    status_code=202,
    response_model=TaskAccepted,
    responses={
        403: {"model": ErrorBody},
        409: {"model": ErrorBody},
        413: {"model": ErrorBody},
        429: {"model": ErrorBody},
        503: {
            "model": ErrorBody,
            "description": "No enabled runner-contract target can take tasks, or a store is unavailable",
        },
    },
    summary="Submit a generic task",
)
def route_task(
    body: TaskCreate,
    response: Response,
    services: ServicesDep,
    principal: QuotaDep,
    idempotency_key: Annotated[
        str | None, Header(alias=IDEMPOTENCY_HEADER, min_length=1, max_length=IDEMPOTENCY_KEY_MAX_LENGTH)
    ] = None,
) -> TaskAccepted:
    """Store the task as a queued job of kind ``task``, then queue its id. 403 without
    ``"consent": true``; 503 when no runner-contract target is enabled. The same
    ``Idempotency-Key`` with the same body returns the same task; with another body, 409."""
    if body.consent is not True:
        raise Forbidden(CONSENT_REQUIRED)
    with session_scope(services.intake_sessions) as session:  # returned to the pool before the enqueue
        earlier = intake.replayed_task(session, body, idempotency_key, principal.tenant) if idempotency_key else None
        if earlier is not None:
            response.headers["Idempotent-Replayed"] = "true"
            return TaskAccepted(task_id=earlier.id, status=earlier.status, status_url=task_url(services, earlier.id))
        targets = catalogue.routable(catalogue.entries(session, services.settings), JobKind.TASK.value)
        catalogue.require_task_runner(targets)
        catalogue.check_preference(body.preferred_target, targets)
        submitted = intake.submit_task(
            session,
            body,
            actor=principal.key_id,
            default_sla_ms=services.settings.default_sla_ms,
            idempotency_key=idempotency_key,
            tenant=principal.tenant,
            max_in_flight=in_flight_cap(principal, services.settings),
        )
    job = accept(submitted, services, response)
    return TaskAccepted(task_id=job.id, status=job.status, status_url=task_url(services, job.id))


@router.get("/task/{task_id}", response_model=TaskPublic, responses={404: {"model": ErrorBody}})
def task_status(task_id: uuid.UUID, session: SessionDep, principal: ReadDep) -> TaskPublic:
    """Status, result, routing explanation, attempts, times and cost of one task (of the
    caller's tenant; another tenant's task answers 404, as one that does not exist)."""
    try:
        job = jobs.get_job(session, task_id, tenant=principal.reads_tenant)
    except NotFound:
        job = None
    if job is None or job.kind != JobKind.TASK.value:
        raise NotFound(f"No task with id {task_id}")
    public = to_public(job, audit.trail(session, task_id), principal)
    return TaskPublic(
        task_id=job.id,
        task_type=job.task_type,
        **public.model_dump(include=set(OutcomePublic.model_fields)),
    )
