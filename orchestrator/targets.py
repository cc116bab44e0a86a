"""The catalogue of model servers: from environment URLs, an optional targets file, and (at run
time) agents registered through the API.

Names: a server given by ``EDGE_MODEL_URL`` is target ``edge`` (inference contract, POST /infer);
one given by ``EDGE_AGENT_URL`` is ``edge-agent`` (runner contract, POST /run); likewise
``cloud``/``cloud-runner`` and ``gpu``/``gpu-runner``. A targets file (``TARGETS_FILE``, YAML
or JSON) can override the options of those or add more; see docs/configuration.md.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.errors import ConfigError
from orchestrator.metrics import TARGET_LABELS
from orchestrator.models import JobKind, RegisteredTarget
from orchestrator.routing.types import Target
from orchestrator.settings import Settings

TIERS = ("edge", "cloud", "gpu")


class TierDefaults(BaseModel):
    cost_per_call_usd: float
    capacity: int
    prior_latency_ms: float


TIER_DEFAULTS: dict[str, TierDefaults] = {
    # An on-prem edge box: nearly free per call, but one small CPU serves two calls at once.
    "edge": TierDefaults(cost_per_call_usd=0.0002, capacity=2, prior_latency_ms=150.0),
    # A managed cloud endpoint: mid price, network round trips, scales out wide.
    "cloud": TierDefaults(cost_per_call_usd=0.0010, capacity=64, prior_latency_ms=400.0),
    # A GPU server: fastest and priciest, a handful of batches at once.
    "gpu": TierDefaults(cost_per_call_usd=0.0040, capacity=8, prior_latency_ms=80.0),
}

ENV_TARGETS = (
    ("edge", "edge_model_url", "edge", "infer"),
    ("cloud", "cloud_model_url", "cloud", "infer"),
    ("gpu", "gpu_model_url", "gpu", "infer"),
    ("edge-agent", "edge_agent_url", "edge", "run"),
    ("cloud-runner", "cloud_runner_url", "cloud", "run"),
    ("gpu-runner", "gpu_runner_url", "gpu", "run"),
)
"""(target name, settings field, tier, contract) for every URL variable."""


class TargetSpec(BaseModel):
    """One entry of the targets file. Only ``name`` is required to override an env target."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    tier: Literal["edge", "cloud", "gpu"] | None = None
    url: str | None = Field(None, pattern=r"^https?://")
    contract: Literal["infer", "run"] | None = None
    cost_per_call_usd: float | None = Field(None, ge=0)
    capacity: int | None = Field(None, ge=1)
    prior_latency_ms: float | None = Field(None, gt=0)
    timeout_seconds: float | None = Field(None, gt=0)
    enabled: bool | None = None


class TargetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: list[TargetSpec] = []


def make_target(name: str, tier: str, url: str, contract: str = "infer", **options) -> Target:
    """A Target with the tier's defaults for every option not given (None means not given)."""
    defaults = TIER_DEFAULTS[tier]
    given = {k: v for k, v in options.items() if v is not None}
    return Target(
        name=name,
        tier=tier,
        url=url.rstrip("/"),
        contract=contract,
        cost_per_call_usd=given.get("cost_per_call_usd", defaults.cost_per_call_usd),
        capacity=given.get("capacity", defaults.capacity),
        prior_latency_ms=given.get("prior_latency_ms", defaults.prior_latency_ms),
        timeout_seconds=given.get("timeout_seconds"),
        enabled=given.get("enabled", True),
    )


def load_targets_file(path: Path) -> TargetsFile:
    """Parse and validate a targets file; errors name the file and the offending entry."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"Invalid configuration: TARGETS_FILE {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Invalid configuration: TARGETS_FILE {path}: not valid YAML/JSON ({exc})") from None
    try:
        return TargetsFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"Invalid configuration: TARGETS_FILE {path}: {problems}") from None


def configured_targets(settings: Settings) -> list[Target]:
    """Targets from the environment and the targets file, in a stable order. Read once per
    settings object (settings are immutable), so the file is parsed at start, not per request."""
    return list(_configured(settings))


@lru_cache(maxsize=8)
def _configured(settings: Settings) -> tuple[Target, ...]:
    targets: dict[str, Target] = {}
    for name, field_name, tier, contract in ENV_TARGETS:
        url = getattr(settings, field_name)
        if url:
            targets[name] = make_target(name, tier, url, contract)
    if settings.targets_file is not None:
        for spec in load_targets_file(settings.targets_file).targets:
            targets[spec.name] = _apply_spec(targets.get(spec.name), spec, settings.targets_file)
    # /metrics: configured names are always label values; registered ones up to the cap.
    TARGET_LABELS.configure([*targets, *TIERS], room=settings.max_registered_targets)
    return tuple(targets.values())


def _apply_spec(existing: Target | None, spec: TargetSpec, path: Path) -> Target:
    options = spec.model_dump(exclude={"name", "tier", "url", "contract"}, exclude_none=True)
    if existing is not None:
        changes = {k: v for k, v in spec.model_dump(exclude={"name"}, exclude_none=True).items()}
        return replace(existing, **changes)
    if spec.tier is None or spec.url is None:
        raise ConfigError(
            f"Invalid configuration: TARGETS_FILE {path}: target {spec.name!r} is not set by an "
            "environment URL, so it needs both 'tier' and 'url'"
        )
    return make_target(spec.name, spec.tier, spec.url, spec.contract or "infer", **options)


def registered_targets(session: Session) -> list[Target]:
    """Targets registered at run time through POST /register_agent, by name."""
    rows = session.scalars(select(RegisteredTarget).order_by(RegisteredTarget.name)).all()
    return [
        make_target(
            row.name,
            row.tier,
            row.url,
            row.contract,
            cost_per_call_usd=row.cost_per_call_usd,
            capacity=row.capacity,
            prior_latency_ms=row.prior_latency_ms,
            enabled=row.enabled,
        )
        for row in rows
    ]


def configured_names(settings: Settings) -> frozenset[str]:
    """Names set by the environment or TARGETS_FILE (simulated tiers too, when simulating): a
    registration may replace or disable one of these only with ``override``."""
    names = {t.name for t in configured_targets(settings)}
    return frozenset(names | set(TIERS)) if settings.worker_simulate else frozenset(names)


def merge_targets(static: list[Target], registered: list[Target]) -> list[Target]:
    """The full catalogue: a registered target replaces a configured one of the same name."""
    by_name = {t.name: t for t in static}
    by_name.update({t.name: t for t in registered})
    return list(by_name.values())


def targets_for(kind: str, targets: list[Target]) -> list[Target]:
    """The targets that can serve a job of ``kind``. A generic task needs the runner contract
    (POST /run takes any task_type and payload); the inference contract (POST /infer) only
    screens, so sending it a task would be a certain 4xx that also counts against its health.
    A screening case can go to either contract."""
    if kind == JobKind.TASK.value:
        return [t for t in targets if t.contract == "run"]
    return list(targets)
