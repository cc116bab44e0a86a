"""The API's view of the target catalogue: what is configured (environment URLs, the targets
file), what was registered at run time, where each came from, and how each is doing now.

The worker builds the same catalogue (``modelreasoner.runtime.Runtime.targets``) from the same
functions in ``orchestrator.targets``, so the API shows exactly what routing uses: a registered
target replaces a configured one of the same name, and is seen by every worker within
``REGISTERED_TARGETS_TTL_SECONDS`` without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator import audit
from orchestrator.errors import BadRequest, Conflict, NotFound, ServiceUnavailable
from orchestrator.models import RegisteredTarget
from orchestrator.routing import CircuitState, Target, TargetStats, predict_latency
from orchestrator.schemas import (
    CircuitPublic,
    TargetPublic,
    TargetRegister,
    TargetRemoved,
    TargetReplaced,
    TargetStatsPublic,
    TelemetryPublic,
)
from orchestrator.settings import Settings
from orchestrator.targets import (
    ENV_TARGETS,
    TIERS,
    configured_names,
    configured_targets,
    make_target,
    merge_targets,
    registered_targets,
    targets_for,
)
from orchestrator.url_policy import UrlPolicy

SIMULATED_URL = "sim://{tier}"
"""URL of the in-process targets a WORKER_SIMULATE=1 worker uses (modelreasoner.simulated)."""


@dataclass(frozen=True)
class Entry:
    """One target of the catalogue and where it was defined: ``env`` (a *_MODEL_URL/*_AGENT_URL/
    *_RUNNER_URL variable), ``file`` (only in TARGETS_FILE), ``registered`` (POST
    /register_agent) or ``simulated`` (WORKER_SIMULATE=1)."""

    target: Target
    source: str


def entries(session: Session, settings: Settings) -> list[Entry]:
    """The full catalogue in routing order: configured targets, then registered ones."""
    registered = registered_targets(session)
    if settings.worker_simulate:
        # Mirrors modelreasoner.simulated.simulated_targets: a simulating worker ignores the URLs.
        static = [make_target(tier, tier, SIMULATED_URL.format(tier=tier)) for tier in TIERS]
        sources = dict.fromkeys((t.name for t in static), "simulated")
    else:
        static = configured_targets(settings)
        sources = {t.name: _configured_source(settings, t.name) for t in static}
    sources.update(dict.fromkeys((t.name for t in registered), "registered"))
    return [Entry(t, sources[t.name]) for t in merge_targets(static, registered)]


def _configured_source(settings: Settings, name: str) -> str:
    for env_name, field_name, _, _ in ENV_TARGETS:
        if env_name == name and getattr(settings, field_name):
            return "env"
    return "file"


def routable(catalogue: list[Entry], kind: str) -> list[Target]:
    """The targets a job of ``kind`` may be routed to (tasks: runner contract only)."""
    return targets_for(kind, [e.target for e in catalogue])


def require_task_runner(targets: list[Target]) -> None:
    """Refuse a task up front when no enabled runner-contract target exists to take it."""
    if not any(t.enabled for t in targets):
        raise ServiceUnavailable(
            'No enabled runner-contract target (POST /run) can take tasks; register one with contract "run"'
        )


def check_preference(choice: str, targets: list[Target], field: str = "preferred_target") -> None:
    """``choice`` must be ``auto``, a tier, or the name of one of ``targets``."""
    if choice == "auto" or choice in TIERS or any(t.name == choice for t in targets):
        return
    raise BadRequest(f"{field}: no target or tier of that name can take this job", field=field)  # never echo input


@dataclass(frozen=True)
class Registration:
    target: Target
    created: bool
    replaced: TargetReplaced | None
    """The target this name stood for before (configured or registered); None: a new name."""


def register(
    session: Session, body: TargetRegister, settings: Settings, policy: UrlPolicy, *, actor: str, now: datetime
) -> Registration:
    """Insert or replace (by name) a registered target, audit it, and commit. Options left out
    take the tier's defaults (a re-registration replaces every option).

    Refused: a URL the policy does not allow (``UrlRefused``, 422); a name configured by env or
    TARGETS_FILE without ``override`` (409: it would silently take that target's traffic); a new
    name past MAX_REGISTERED_TARGETS (409). The caller has checked the admin scope."""
    policy.check(body.url)
    previous = find(entries(session, settings), body.name)
    if body.name in configured_names(settings) and not body.override:
        raise Conflict(
            f"target {body.name!r} is configured by the {_configured_source(settings, body.name)}; "
            'send "override": true to replace or disable it'
        )
    row = session.get(RegisteredTarget, body.name)
    if row is None:
        _check_room(session, settings)
    target = make_target(
        body.name,
        body.tier,
        body.url,
        body.contract,
        cost_per_call_usd=body.cost_per_call_usd,
        capacity=body.capacity,
        prior_latency_ms=body.prior_latency_ms,
        enabled=body.enabled,
    )
    replaced = snapshot(previous) if previous is not None else None
    created = _store(session, body, target, row, actor=actor, now=now, replaced=replaced)
    return Registration(target, created, replaced)


def _check_room(session: Session, settings: Settings) -> None:
    registered = session.scalar(select(func.count()).select_from(RegisteredTarget)) or 0
    if registered >= settings.max_registered_targets:
        raise Conflict(f"{registered} targets are registered, the most MAX_REGISTERED_TARGETS allows; remove one first")


def _store(session, body, target: Target, row, *, actor: str, now: datetime, replaced) -> bool:
    created = row is None
    values = {
        "tier": target.tier,
        "url": target.url,
        "contract": target.contract,
        "cost_per_call_usd": target.cost_per_call_usd,
        "capacity": body.capacity,
        "prior_latency_ms": body.prior_latency_ms,
        "enabled": target.enabled,
        "registered_by": actor,
        "updated_at": now,
    }
    try:
        if created:
            session.add(RegisteredTarget(name=body.name, created_at=now, **values))
        else:
            for key, value in values.items():
                setattr(row, key, value)
        # The audit INSERT flushes the new row: a racing registration's IntegrityError can
        # surface here as well as at commit.
        audit.record(
            session,
            None,
            "registered",
            actor,
            at=now,
            target=body.name,
            outcome="created" if created else "updated",
            details={
                "tier": target.tier,
                "contract": target.contract,
                "url": target.url,
                "cost_per_call_usd": target.cost_per_call_usd,
                "enabled": target.enabled,
                "override": body.override,
                "replaced": replaced.model_dump() if replaced is not None else None,
            },
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        if not created:
            raise
        # Another request registered the same new name first: replace what it wrote.
        winner = session.get(RegisteredTarget, body.name)
        _store(session, body, target, winner, actor=actor, now=now, replaced=replaced)
        return False
    return created


def remove(session: Session, settings: Settings, name: str, *, actor: str, now: datetime) -> TargetRemoved:
    """Delete a registered target, audit it (``unregistered``) and commit. A configured target of
    the same name is in use again (``restored``). 404 when no target of that name is registered
    (configured targets are changed in their configuration, not through the API)."""
    row = session.get(RegisteredTarget, name)
    if row is None:
        hint = " (it is configured; change its configuration instead)" if name in configured_names(settings) else ""
        raise NotFound(f"No registered target named {name!r}{hint}")
    removed = snapshot(find(entries(session, settings), name))
    session.delete(row)
    session.flush()
    current = find(entries(session, settings), name)
    restored = snapshot(current) if current is not None else None
    audit.record(
        session,
        None,
        "unregistered",
        actor,
        at=now,
        target=name,
        outcome="restored" if restored is not None else "removed",
        details={"removed": removed.model_dump(), "restored": restored.model_dump() if restored else None},
    )
    session.commit()
    return TargetRemoved(name=name, removed=removed, restored=restored)


def snapshot(entry: Entry) -> TargetReplaced:
    """What an audit row and a response may say about a target: no credentials."""
    target = entry.target
    return TargetReplaced(
        source=entry.source,
        url=redact_url(target.url),
        tier=target.tier,
        contract=target.contract,
        cost_per_call_usd=target.cost_per_call_usd,
        enabled=target.enabled,
    )


def describe(entry: Entry, stats: TargetStats, now: float) -> TargetPublic:
    """The public view of one target: configuration, predicted latency, circuit, telemetry."""
    target = entry.target
    p50, p95 = predict_latency(target, stats, now)
    return TargetPublic(
        name=target.name,
        tier=target.tier,
        url=redact_url(target.url),
        contract=target.contract,
        cost_per_call_usd=target.cost_per_call_usd,
        capacity=target.capacity,
        prior_latency_ms=target.prior_latency_ms,
        timeout_seconds=target.timeout_seconds,
        enabled=target.enabled,
        source=entry.source,
        stats=TargetStatsPublic(
            latency_p50_ms=round(p50, 1),
            latency_p95_ms=round(p95, 1),
            error_rate=round(stats.error_rate, 4),
            in_flight=stats.in_flight,
            samples=round(stats.samples, 2),
            calls=stats.calls,
            failures=stats.failures,
        ),
        circuit=CircuitPublic(
            state=stats.circuit.value,
            until=_utc(stats.circuit_until) if stats.circuit is CircuitState.OPEN else None,
            open_count=stats.open_count,
        ),
        telemetry=_telemetry(stats),
    )


def _telemetry(stats: TargetStats) -> TelemetryPublic | None:
    if not stats.telemetry_at:
        return None
    return TelemetryPublic(
        latency_ms=stats.telemetry_latency_ms,
        utilization=stats.telemetry_utilization,
        queue_depth=stats.telemetry_queue_depth,
        up=stats.telemetry_up,
        at=_utc(stats.telemetry_at),
    )


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def redact_url(url: str) -> str:
    """``url`` without any user:password part (a configured URL may carry one)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def find(catalogue: list[Entry], name: str) -> Entry | None:
    return next((e for e in catalogue if e.target.name == name), None)
