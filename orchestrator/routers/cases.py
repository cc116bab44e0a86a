"""Cases: erase one (withdrawn consent, a record entered by mistake) and export one (a right of
access request). Both are for the case's own tenant or an administrator; another tenant's case
answers 404, as one that does not exist. See docs/security.md "PHI lifecycle"."""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter

from orchestrator import lifecycle
from orchestrator.app.auth import ReadDep, SubmitDep
from orchestrator.app.deps import SessionDep
from orchestrator.models import utcnow
from orchestrator.schemas import CaseErased, CaseExport, ErrorBody

log = logging.getLogger(__name__)

ERRORS = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}

router = APIRouter(prefix="/api/cases", tags=["cases"], responses=ERRORS)


@router.delete("/{case_id}", response_model=CaseErased, summary="Erase a case's PHI")
def erase(case_id: uuid.UUID, session: SessionDep, principal: SubmitDep) -> CaseErased:
    """Erase the observations, embeddings and results of every job of the case (set to null);
    ids, times, targets, latencies, costs and routing decisions stay. Jobs still queued or
    running are ended first (``failed``, error kind ``erased``). Each erased job gets an
    ``erased`` audit row. Idempotent: a second call answers 200, listing the jobs already erased."""
    done = lifecycle.erase_case(session, case_id, principal, now=utcnow())
    log.info(
        "case erased",
        extra={"case_id": str(case_id), "erased": len(done.erased_job_ids), "cancelled": len(done.cancelled_job_ids)},
    )
    return CaseErased(
        case_id=done.case_id,
        erased_job_ids=done.erased_job_ids,
        already_erased_job_ids=done.already_erased_job_ids,
        cancelled_job_ids=done.cancelled_job_ids,
    )


@router.get("/{case_id}/export", response_model=CaseExport, summary="Export everything stored about a case")
def export(case_id: uuid.UUID, session: SessionDep, principal: ReadDep) -> CaseExport:
    """The case, every job (inputs, results, routing decisions, times, costs) and every audit row
    of its jobs, as one JSON document. For a ``read`` key of the case's tenant, or ``admin``;
    operators of other tenants get 404. Each exported job gets an ``exported`` audit row."""
    return CaseExport(**lifecycle.export_case(session, case_id, principal, now=utcnow()))
