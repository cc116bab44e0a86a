"""The worker's job transitions on Postgres, one statement each, built once at import.

Each is a data-modifying CTE, as intake's submit (``orchestrator.intake``): the conditional
UPDATE decides, and the audit rows of the transition are inserted with what it returned, so
they exist only if it won. On the worker's autocommit connection the statement is also its own
transaction: no BEGIN, no COMMIT round trip.

Audit rows travel as one JSONB parameter (``rows``: a list of ``audit.row`` dicts, see
``rows_param``), unpacked by ``jsonb_to_recordset`` and inserted in list order, so any number of
rows is the same statement. A row marked ``always`` is a fact that does not depend on who owns
the job (the outcome of a model call that was made): it is written whether or not the UPDATE
wins, and at most once, so a statement sent again after a commit whose answer was lost does
not write it twice.

    CLAIM       queued -> running, RETURNING the job, + its ``claimed`` row
    START_CALL  a call's ``call_started`` row, after the rows not yet written (the ``routed``
                row, earlier calls' ``attempt`` rows), all ``always`` [START_CALL_DECIDED: + the
                decision]
    FINISH      active -> completed | failed (columns given; NULL leaves one), + its rows: the
                ``always`` ones (its calls' ``attempt`` rows) even when another write ended the
                job first, the others (``routed``, the terminal row) only if it wins
    GIVE_UP     queued, or running under this worker -> failed, + its ``failed`` row
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Integer,
    Interval,
    String,
    and_,
    bindparam,
    cast,
    column,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from orchestrator.models import ACTIVE_STATUSES, Audit, Job, JobStatus

JOBS, AUDIT = Job.__table__, Audit.__table__
AUDIT_COLUMNS = ["job_id", "event", "actor", "at", "target", "outcome", "latency_ms", "details"]
JSON_PARAM = JSONB(none_as_null=True)
"""A JSON parameter whose None is SQL NULL (not JSON ``null``), so COALESCE keeps the column."""
FINISH_COLUMNS = (
    *("error_kind", "error", "target", "result", "latency_ms", "cost_usd", "attempts", "sla_met"),
    *("decision", "predicted_ms", "predicted_p95_ms"),
)
"""The columns a terminal write may set; a NULL parameter leaves the column as it is.

A parameter named after a column of ``jobs`` that the UPDATE does not set would be added to its
SET clause by SQLAlchemy: the others are named ``job_id``, ``audit_actor``, ``me``, ``now``..."""


def rows_param(rows: list[dict[str, Any]], *, always: Collection[int] = ()) -> list[dict[str, Any]]:
    """``audit.row`` dicts as the ``rows`` parameter: numbered in order, times as ISO text.
    ``always``: the positions of the rows a transition writes even if its UPDATE loses (in
    START_CALL, every row is)."""
    return [
        {
            **row,
            "n": n,
            "always": n in always,
            "at": row["at"].isoformat() if isinstance(row["at"], datetime) else row["at"],
        }
        for n, row in enumerate(rows)
    ]


def _param(name: str, type_) -> Any:
    # INSERT ... SELECT does not coerce an untyped parameter to the column's type: cast it.
    return cast(bindparam(name, type_=type_), type_)


def _rows() -> Any:
    """The ``rows`` parameter as a table ``r``."""
    return (
        func.jsonb_to_recordset(bindparam("rows", type_=JSONB))
        .table_valued(
            column("n", Integer),
            column("always", Boolean),
            column("event", String),
            column("actor", String),
            column("at", DateTime(timezone=True)),
            column("target", String),
            column("outcome", String),
            column("latency_ms", Float),
            column("details", JSONB),
        )
        .render_derived(name="r", with_types=True)
    )


def _not_written(rows, job_id) -> Any:
    """No audit row of ``job_id`` is this one already (same event, actor, time to the
    microsecond and target): the statement was sent again after a commit whose answer was lost."""
    same = (
        select(AUDIT.c.id)
        .where(AUDIT.c.job_id == job_id, AUDIT.c.at == rows.c.at, AUDIT.c.event == rows.c.event)
        .where(AUDIT.c.actor == rows.c.actor, AUDIT.c.target.is_not_distinct_from(rows.c.target))
    )
    return ~same.exists()


def _insert_rows(done=None) -> Any:
    """INSERT the ``rows`` parameter's audit rows of the ``job_id`` parameter in list order (ids,
    and so the trail's order among equal times, follow it). Without ``done``, every row, once;
    with ``done`` (the UPDATE's RETURNING, empty when it lost), the ``always`` rows once, and
    the others only if ``done`` holds the job."""
    job_id = _param("job_id", JOBS.c.id.type)
    rows = _rows()
    chosen = select(job_id, *(rows.c[name] for name in AUDIT_COLUMNS[1:]))
    if done is None:
        chosen = chosen.select_from(rows).where(_not_written(rows, job_id))
    else:
        won = done.c.id.is_not(None)
        chosen = chosen.select_from(rows.outerjoin(done, true()))
        chosen = chosen.where(or_(and_(rows.c.always, _not_written(rows, job_id)), and_(~rows.c.always, won)))
    return insert(AUDIT).from_select(AUDIT_COLUMNS, chosen.order_by(rows.c.n))


def _winner_writes(changed) -> Any:
    """``WITH done AS (<changed> RETURNING id), trail AS (INSERT rows LEFT JOIN done) SELECT id
    FROM done``: the ``always`` rows are written whoever wins, the others only if the UPDATE
    changed the job. The INSERT reads ``done``, so it runs after the UPDATE settled: when
    another transaction holds the job's row, after that one commits and the UPDATE re-checks."""
    done = changed.returning(JOBS.c.id).cte("done")
    return select(done.c.id).add_cte(_insert_rows(done).cte("trail"))


def _claim() -> Any:
    claimed = (
        update(JOBS)
        .where(JOBS.c.id == bindparam("job_id"), JOBS.c.status == JobStatus.QUEUED.value)
        .values(
            status=JobStatus.RUNNING.value,
            started_at=bindparam("now"),
            claim_count=JOBS.c.claim_count + 1,
            lease_expires_at=func.clock_timestamp() + bindparam("lease", type_=Interval),
            worker_id=bindparam("worker_id"),
        )
        .returning(*JOBS.c)
        .cte("claimed")
    )
    row = select(
        claimed.c.id,
        literal_column("'claimed'"),
        _param("audit_actor", AUDIT.c.actor.type),
        _param("now", AUDIT.c.at.type),
        func.jsonb_build_object("claim", claimed.c.claim_count),
    )
    audit_row = insert(AUDIT).from_select(["job_id", "event", "actor", "at", "details"], row).cte("claimed_audit")
    return select(*claimed.c).add_cte(audit_row)


def _start_call(decided: bool) -> Any:
    rows = _insert_rows()
    if not decided:
        return rows
    decision = (
        update(JOBS)
        .where(
            JOBS.c.id == bindparam("job_id"),
            JOBS.c.status == JobStatus.RUNNING.value,
            JOBS.c.worker_id == bindparam("claim_worker"),
        )
        .values(
            decision=bindparam("decision", type_=JSON_PARAM),
            predicted_ms=bindparam("predicted_ms"),
            predicted_p95_ms=bindparam("predicted_p95_ms"),
        )
        .returning(JOBS.c.id)
        .cte("decided")
    )
    return rows.add_cte(decision)


def _finish() -> Any:
    def given(name: str):
        type_ = JSON_PARAM if name in ("result", "decision") else JOBS.c[name].type
        return func.coalesce(bindparam(name, type_=type_), JOBS.c[name])

    changed = (
        update(JOBS)
        .where(JOBS.c.id == bindparam("job_id"), or_(*(JOBS.c.status == s.value for s in ACTIVE_STATUSES)))
        .values(
            status=bindparam("status"),
            finished_at=bindparam("now"),
            lease_expires_at=None,
            **{name: given(name) for name in FINISH_COLUMNS},
        )
    )
    return _winner_writes(changed)


def _give_up() -> Any:
    mine = or_(
        JOBS.c.status == JobStatus.QUEUED.value,
        and_(JOBS.c.status == JobStatus.RUNNING.value, JOBS.c.worker_id == bindparam("me")),
    )
    changed = (
        update(JOBS)
        .where(JOBS.c.id == bindparam("job_id"), mine)
        .values(
            status=JobStatus.FAILED.value,
            finished_at=bindparam("now"),
            lease_expires_at=None,
            error_kind=bindparam("error_kind"),
            error=bindparam("error"),
        )
    )
    return _winner_writes(changed)


CLAIM = _claim()
START_CALL = _start_call(decided=False)
START_CALL_DECIDED = _start_call(decided=True)
FINISH = _finish()
GIVE_UP = _give_up()
