"""PHI retention: erase the PHI of terminal jobs older than PHI_RETENTION_DAYS.

A pass erases, in batches of PHI_RETENTION_BATCH_SIZE jobs (one transaction each), every
terminal job that finished before ``now - PHI_RETENTION_DAYS`` and still holds PHI, oldest
first, exactly as a case erasure does (orchestrator.lifecycle): PHI columns set to NULL, one
``erased`` audit row per job with reason ``retention``. A pass is bounded (``max_batches``) and
resumable: it keeps no state, the next one starts from the oldest job left.

Run it from cron or the Helm chart's CronJob: ``python -m orchestrator.retention --once``. It
prints what it did as JSON, including ``overdue_seconds``: how far past the period the oldest
unexpired PHI is (0: up to date); the API exports the same as pedi_phi_retention_overdue_seconds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import click
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import lifecycle
from orchestrator.db import make_engine, make_session_factory, session_scope
from orchestrator.models import utcnow
from orchestrator.startup import start_command

log = logging.getLogger(__name__)

ACTOR = "retention"
"""The audit actor of an erasure by retention."""
DEFAULT_MAX_BATCHES = 100
"""Batches one ``--once`` pass runs at most (with the default batch size: 50,000 jobs)."""


@dataclass(frozen=True)
class RetentionReport:
    erased: int
    batches: int
    complete: bool
    """False when the pass stopped at ``max_batches`` with expired PHI left (the next resumes)."""
    overdue_seconds: float


def cutoff(now: datetime, days: float) -> datetime:
    return now - timedelta(days=days)


def overdue_seconds(session: Session, *, now: datetime, days: float) -> float:
    """How long past the retention period the oldest PHI that should be gone has been kept (s);
    0 when retention is up to date."""
    limit = cutoff(now, days)
    oldest = lifecycle.oldest_expired_finish(session, cutoff=limit)
    return max(0.0, (limit - oldest).total_seconds()) if oldest is not None else 0.0


def run_pass(
    sessions: sessionmaker[Session],
    *,
    days: float,
    batch_size: int,
    now: datetime | None = None,
    max_batches: int = DEFAULT_MAX_BATCHES,
) -> RetentionReport:
    """One bounded retention pass at ``now`` (the clock is injectable for tests)."""
    moment = now or utcnow()
    limit = cutoff(moment, days)
    erased = batches = 0
    complete = False
    while batches < max_batches:
        with session_scope(sessions) as session:
            ids = lifecycle.expired_job_ids(session, cutoff=limit, limit=batch_size)
            if not ids:
                complete = True
                break
            erased += len(lifecycle.erase_jobs(session, ids, actor=ACTOR, now=moment, reason=lifecycle.RETENTION))
            session.commit()
        batches += 1
    with session_scope(sessions) as session:
        overdue = overdue_seconds(session, now=moment, days=days)
        complete = complete or overdue == 0.0
    log.info("retention pass", extra={"erased": erased, "batches": batches, "complete": complete})
    return RetentionReport(erased, batches, complete, overdue)


def retention_overdue_probe(sessions: sessionmaker[Session], days: float):
    """A metrics probe (the API's state collector): ``overdue_seconds`` now."""

    def phi_retention_overdue() -> float:
        with session_scope(sessions) as session:
            return overdue_seconds(session, now=utcnow(), days=days)

    return phi_retention_overdue


@click.command()
@click.option("--once", is_flag=True, required=True, help="Run one bounded pass now, print it as JSON, and exit.")
@click.option(
    "--max-batches",
    type=click.IntRange(1, 1_000_000),
    default=DEFAULT_MAX_BATCHES,
    show_default=True,
    help="Most batches of PHI_RETENTION_BATCH_SIZE jobs this pass erases.",
)
def main(once: bool, max_batches: int) -> None:
    """Erase the PHI of jobs that finished more than PHI_RETENTION_DAYS ago (docs/security.md)."""
    settings = start_command("retention")
    if settings.phi_retention_days is None:
        click.echo("retention: PHI_RETENTION_DAYS is not set; nothing to do", err=True)
        click.echo(json.dumps({"enabled": False}))
        return
    engine = make_engine(settings, pool_size=1)
    try:
        report = run_pass(
            make_session_factory(engine),
            days=settings.phi_retention_days,
            batch_size=settings.phi_retention_batch_size,
            max_batches=max_batches,
        )
    finally:
        engine.dispose()
    click.echo(json.dumps({"enabled": True, **asdict(report)}))


if __name__ == "__main__":
    main()
