"""Screening jobs: submit, status, list, and the audit trail of one job.

Every read is limited to the caller's tenant (operators and admins: every tenant); another
tenant's job answers 404, as one that does not exist. An operator reading another tenant's job
gets it without its result (model output about a child); see Principal.sees_results_of.
"""

from __future__ import annotations

import uuid
from functools import cache
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from orchestrator import audit, catalogue, intake, jobs, lifecycle
from orchestrator.app.auth import ReadDep
from orchestrator.app.deps import ServicesDep, SessionDep
from orchestrator.constants import IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_MAX_LENGTH, JOBS_PAGE_MAX
from orchestrator.db import session_scope
from orchestrator.metrics import JOBS_SUBMITTED
from orchestrator.models import Audit, Job, JobKind
from orchestrator.principals import Principal
from orchestrator.queue_rq import enqueue_after_commit
from orchestrator.quotas import QuotaDep, in_flight_cap
from orchestrator.schemas import (
    AttemptPublic,
    AuditPublic,
    ErrorBody,
    JobAccepted,
    JobCreate,
    JobPage,
    JobPublic,
    JobSummary,
    QueryInstant,
    StatusName,
)
from orchestrator.targets import TIERS

ROUTE_TIERS = frozenset({"auto", *TIERS})
"""The preferred targets that need no catalogue lookup: ``auto`` and a tier name."""

ERRORS = {401: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}

router = APIRouter(prefix="/api", tags=["jobs"], responses=ERRORS)


def status_url(services, job_id: uuid.UUID) -> str:
    return f"{services.settings.public_url.rstrip('/')}/api/status/{job_id}"


@router.post(
    "/submit",
    status_code=202,
    response_model=JobAccepted,
    responses={409: {"model": ErrorBody}, 413: {"model": ErrorBody}, 429: {"model": ErrorBody}},
    summary="Submit a screening case",
)
def submit(
    body: JobCreate,
    response: Response,
    services: ServicesDep,
    principal: QuotaDep,
    idempotency_key: Annotated[
        str | None, Header(alias=IDEMPOTENCY_HEADER, min_length=1, max_length=IDEMPOTENCY_KEY_MAX_LENGTH)
    ] = None,
) -> JobAccepted:
    """Store the case as a queued job, then queue its id. Answers 202 with where to poll.

    The same ``Idempotency-Key`` with the same body returns the same job (header
    ``Idempotent-Replayed: true``); with a different body it answers 409.
    """
    with session_scope(services.intake_sessions) as session:  # returned to the pool before the enqueue
        if body.preferred_target not in ROUTE_TIERS:  # a target name: it must exist (rare path)
            entries = catalogue.entries(session, services.settings)
            catalogue.check_preference(body.preferred_target, catalogue.routable(entries, JobKind.SCREENING.value))
        submitted = intake.submit_screening(
            session,
            body,
            actor=principal.key_id,
            default_sla_ms=services.settings.default_sla_ms,
            idempotency_key=idempotency_key,
            tenant=principal.tenant,
            max_in_flight=in_flight_cap(principal, services.settings),
        )
    job = accept(submitted, services, response)
    return JobAccepted(job_id=job.id, status=job.status, status_url=status_url(services, job.id))


def accept(submitted: intake.Submitted, services, response: Response) -> intake.JobRef:
    """After the commit: queue a new job's id (a Redis outage leaves it to the reconciler), or
    mark an Idempotency-Key replay. Shared by every endpoint that creates jobs."""
    job = submitted.job
    if submitted.created:
        submitted_counter(job.kind).inc()
        enqueue_after_commit(services.queue, str(job.id))
    else:
        response.headers["Idempotent-Replayed"] = "true"
    return job


@cache
def submitted_counter(kind: str):
    """The ``pedi_jobs_submitted_total`` child of ``kind``, looked up once per kind."""
    return JOBS_SUBMITTED.labels(kind)


@router.get("/status/{job_id}", response_model=JobPublic, responses={404: {"model": ErrorBody}})
def status(job_id: uuid.UUID, session: SessionDep, principal: ReadDep) -> JobPublic:
    """Status, result, routing explanation, error, times and measured latency of one job."""
    job = jobs.get_job(session, job_id, tenant=principal.reads_tenant)
    return to_public(job, audit.trail(session, job_id), principal)


@router.get("/jobs", response_model=JobPage)
def list_jobs(
    session: SessionDep,
    principal: ReadDep,
    limit: Annotated[int, Query(ge=1, le=JOBS_PAGE_MAX)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    status: StatusName | None = None,
    target: Annotated[str | None, Query(max_length=64)] = None,
    kind: Annotated[str | None, Query(pattern="^(screening|task)$")] = None,
    since: QueryInstant | None = None,
    until: QueryInstant | None = None,
) -> JobPage:
    """The caller's tenant's jobs (operators: every tenant's), newest first. Pass
    ``next_cursor`` back as ``cursor`` for the next page. Times are ISO 8601; without a zone they
    are taken as UTC."""
    where = jobs.JobFilter(
        tenant=principal.reads_tenant, status=status, target=target, since=since, until=until, kind=kind
    )
    page, next_cursor = jobs.list_jobs(session, limit=limit, cursor=cursor, where=where)
    return JobPage(items=[to_summary(j) for j in page], next_cursor=next_cursor)


@router.get("/jobs/{job_id}/events", response_model=list[AuditPublic], responses={404: {"model": ErrorBody}})
def job_events(job_id: uuid.UUID, session: SessionDep, principal: ReadDep) -> list[AuditPublic]:
    """The audit trail of one job, oldest first: its timeline."""
    jobs.get_job(session, job_id, tenant=principal.reads_tenant)
    return [to_event(row) for row in audit.trail(session, job_id)]


def to_event(row: Audit) -> AuditPublic:
    return AuditPublic(
        event=row.event,
        at=row.at,
        actor=row.actor,
        target=row.target,
        outcome=row.outcome,
        latency_ms=row.latency_ms,
        details=row.details,
    )


def to_summary(job: Job) -> JobSummary:
    return JobSummary(
        job_id=job.id,
        case_id=job.case_id,
        kind=job.kind,
        status=job.status,
        target=job.target,
        sla_ms=job.sla_ms,
        sla_met=job.sla_met,
        error_kind=job.error_kind,
        created_at=job.created_at,
        finished_at=job.finished_at,
        latency_ms=job.latency_ms,
    )


def to_public(job: Job, trail: list[Audit], reader: Principal) -> JobPublic:
    """The job as ``reader`` may see it: without its result unless ``reader`` sees the results
    of the job's tenant."""
    attempts = [
        AttemptPublic(
            target=row.target,
            outcome=row.outcome,
            latency_ms=row.latency_ms,
            at=row.at,
            error_kind=(row.details or {}).get("error_kind"),
            hedge=bool((row.details or {}).get("hedge")),
        )
        for row in audit.attempt_rows(trail)  # a call started but never ended shows as "started"
    ]
    total_ms = (job.finished_at - job.created_at).total_seconds() * 1000 if job.finished_at else None
    return JobPublic(
        job_id=job.id,
        case_id=job.case_id,
        kind=job.kind,
        status=job.status,
        result=job.result if reader.sees_results_of(job.tenant) else None,
        target=job.target,
        routing=job.decision,
        error=job.error,
        error_kind=job.error_kind,
        preferred_target=job.preferred_target,
        tenant=job.tenant,
        sla_ms=job.sla_ms,
        sla_met=job.sla_met,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        latency_ms=job.latency_ms,
        total_ms=total_ms,
        cost_usd=job.cost_usd,
        attempts=attempts,
        erased=lifecycle.is_erased(job),
    )
