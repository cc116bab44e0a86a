"""What the jobs table says about routing quality: SLA violations and prediction accuracy.

Aggregates are computed by the database (Postgres in production, SQLite in unit tests); only
time bucketing differs by dialect. Both reads use the jobs the worker finished: a job's
``latency_ms`` is its measured model-call latency, ``predicted_ms``/``predicted_p95_ms`` the
router's prediction for the candidate it chose first, and ``sla_met`` whether submit-to-finish
fit the SLA.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, case, func, literal_column, select
from sqlalchemy.orm import Session

from orchestrator.models import Job, JobStatus
from orchestrator.schemas import ModelMetrics, ModelPoint, SlaCount, SlaEvent, SlaEvents, TargetModelMetrics

BUCKETS = ("minute", "hour")
SQLITE_BUCKET_FORMATS = {"minute": "%Y-%m-%d %H:%M:00", "hour": "%Y-%m-%d %H:00:00"}


@dataclass(frozen=True)
class SlaQuery:
    since: datetime
    limit: int = 50
    target: str | None = None
    bucket: str = "minute"


def _bucket(session: Session, column, bucket: str) -> ColumnElement:
    """``column`` truncated to the start of its UTC minute or hour, by the database."""
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {BUCKETS}")
    if session.get_bind().dialect.name == "postgresql":
        # Literal SQL (from the fixed set above), so GROUP BY repeats the very same expression.
        utc = func.timezone(literal_column("'UTC'"), column)
        return func.date_trunc(literal_column(f"'{bucket}'"), utc)
    return func.strftime(literal_column(f"'{SQLITE_BUCKET_FORMATS[bucket]}'"), column)


def _as_utc(value: datetime | str) -> datetime:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def sla_events(session: Session, query: SlaQuery) -> SlaEvents:
    """Completed jobs that finished after their SLA, newest first, and violations per target
    per time bucket since ``query.since``."""
    where = [
        Job.status == JobStatus.COMPLETED.value,
        Job.sla_met.is_(False),
        Job.finished_at >= query.since,
    ]
    if query.target:
        where.append(Job.target == query.target)
    rows = session.execute(
        select(Job.id, Job.kind, Job.target, Job.sla_ms, Job.created_at, Job.finished_at)
        .where(*where)
        .order_by(Job.finished_at.desc(), Job.id.desc())
        .limit(query.limit)
    ).all()
    items = []
    for row in rows:
        total_ms = (row.finished_at - row.created_at).total_seconds() * 1000.0
        items.append(
            SlaEvent(
                job_id=row.id,
                kind=row.kind,
                target=row.target,
                sla_ms=row.sla_ms,
                total_ms=round(total_ms, 1),
                margin_ms=round(total_ms - row.sla_ms, 1),
                finished_at=row.finished_at,
            )
        )
    bucket = _bucket(session, Job.finished_at, query.bucket).label("bucket_start")
    counted = session.execute(
        select(Job.target, bucket, func.count().label("violations"))
        .where(*where)
        .group_by(Job.target, bucket)
        .order_by(bucket.desc(), Job.target)
    ).all()
    counts = [SlaCount(target=r.target, bucket_start=_as_utc(r.bucket_start), violations=r.violations) for r in counted]
    return SlaEvents(items=items, counts=counts)


def model_metrics(session: Session, *, since: datetime, points: int) -> ModelMetrics:
    """Per target, over completed jobs since ``since`` that it served as the router's first
    choice: mean absolute error and bias of the predicted median, share of actual latencies
    under the predicted p95, mean cost, and the last ``points`` (prediction, actual) pairs,
    oldest first."""
    where = [
        Job.status == JobStatus.COMPLETED.value,
        Job.finished_at >= since,
        Job.predicted_ms.is_not(None),
        Job.latency_ms.is_not(None),
        Job.target.is_not(None),
        # A failover's actual latency is another target's: compare like with like.
        Job.decision["chosen"].as_string() == Job.target,
    ]
    error = Job.predicted_ms - Job.latency_ms
    under_p95 = case(
        (Job.predicted_p95_ms.is_(None), None),
        (Job.latency_ms <= Job.predicted_p95_ms, 1.0),
        else_=0.0,
    )
    aggregates = session.execute(
        select(
            Job.target,
            func.count().label("jobs"),
            func.avg(func.abs(error)).label("mae_ms"),
            func.avg(error).label("bias_ms"),
            func.avg(under_p95).label("p95_calibration"),
            func.avg(Job.cost_usd).label("cost_per_job_usd"),
        )
        .where(*where)
        .group_by(Job.target)
        .order_by(Job.target)
    ).all()
    series = _recent_points(session, where, points)
    return ModelMetrics(
        targets=[
            TargetModelMetrics(
                target=row.target,
                jobs=row.jobs,
                mae_ms=round(float(row.mae_ms), 2),
                bias_ms=round(float(row.bias_ms), 2),
                p95_calibration=None if row.p95_calibration is None else round(float(row.p95_calibration), 4),
                cost_per_job_usd=None if row.cost_per_job_usd is None else round(float(row.cost_per_job_usd), 6),
                points=series.get(row.target, []),
            )
            for row in aggregates
        ]
    )


def _recent_points(session: Session, where: list, points: int) -> dict[str, list[ModelPoint]]:
    rank = (
        func.row_number()
        .over(partition_by=Job.target, order_by=(Job.finished_at.desc(), Job.id.desc()))
        .label("recency")
    )
    recent = (
        select(Job.target, Job.finished_at, Job.predicted_ms, Job.predicted_p95_ms, Job.latency_ms, rank)
        .where(*where)
        .subquery()
    )
    rows = session.execute(
        select(recent).where(recent.c.recency <= points).order_by(recent.c.target, recent.c.recency.desc())
    ).all()
    series: dict[str, list[ModelPoint]] = {}
    for row in rows:
        series.setdefault(row.target, []).append(
            ModelPoint(
                at=_as_utc(row.finished_at),
                predicted_ms=row.predicted_ms,
                predicted_p95_ms=row.predicted_p95_ms,
                actual_ms=row.latency_ms,
            )
        )
    return series
