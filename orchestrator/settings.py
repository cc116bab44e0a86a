"""The one settings object, read from the environment once and validated at start.

Every variable is documented in docs/configuration.md. ``get_settings()`` builds the object on
first use and caches it; nothing is read at import time. A malformed value raises
``ConfigError`` with a message that names the variable. A variable that looks like ours (one of
``OWN_PREFIXES``) but is not a known setting is refused too, with a suggestion: a typo in
``ROUTING_TIMEOUT_SECONDS`` must not silently fall back to the default.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.errors import ConfigError

OWN_PREFIXES = ("ROUTING_", "WORKER_", "RECONCILER_", "JOB_", "HEDGE_", "CIRCUIT_", "PEDI_")
"""Environment prefixes that belong to this project alone; unknown names under them are typos."""

SECRET_FIELDS = frozenset({"api_key", "database_url", "redis_url"})
"""Fields whose value must never be echoed back in an error message (keys, passwords in URLs)."""


class Settings(BaseSettings):
    """Configuration shared by the API, the worker, the reconciler, Alembic and scripts."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True, use_attribute_docstrings=True)

    # --- stores ----------------------------------------------------------------------------
    database_url: str = "sqlite:///./orchestrator_dev.db"
    """Where jobs live: ``postgresql://user:pass@host:5432/db`` in production, SQLite for dev."""
    redis_url: str = "redis://localhost:6379/0"
    """The RQ transport and the routers' shared stats. Carries job ids only, never PHI."""
    db_connect_timeout_seconds: float = Field(3.0, gt=0, le=60)
    """A dead Postgres must turn into a quick 503, not a hung request (s)."""
    db_pool_size: int = Field(10, ge=1, le=200)
    """Connections per API process (the worker sizes its own pool to its concurrency)."""

    # --- model servers ----------------------------------------------------------------------
    edge_model_url: str | None = None
    """Edge-tier model server (inference contract, POST /infer): target ``edge``."""
    cloud_model_url: str | None = None
    """Cloud-tier model server (inference contract): target ``cloud``."""
    gpu_model_url: str | None = None
    """GPU-tier model server (inference contract): target ``gpu``."""
    edge_agent_url: str | None = None
    """Edge agent speaking the runner contract (POST /run): target ``edge-agent``."""
    cloud_runner_url: str | None = None
    """Cloud runner (runner contract): target ``cloud-runner``."""
    gpu_runner_url: str | None = None
    """GPU runner (runner contract): target ``gpu-runner``."""
    targets_file: Path | None = None
    """Optional YAML/JSON file with per-target cost and options (docs/configuration.md)."""

    # --- routing -----------------------------------------------------------------------------
    routing_timeout_seconds: float = Field(10.0, gt=0, le=600)
    """Longest one model call may take (s); each call gets min(this, time left to the SLA)."""
    default_sla_ms: int = Field(2000, ge=1, le=3_600_000)
    """Latency SLA (ms) of a job submitted without ``sla_ms``."""
    routing_slo_objectives: str = Field(
        "", pattern=r"^(\d+(\.\d+)?:(0?\.\d+|1(\.0+)?))?" r"(,\d+(\.\d+)?:(0?\.\d+|1(\.0+)?))*$"
    )
    """SLO objective per SLA class, ``MAX_SLA_MS:ATTAINMENT`` pairs, e.g. ``500:0.999,3000:0.99``
    (99.9% of jobs up to 500 ms on time, 99% up to 3 s); empty: every class deadline first."""
    routing_slo_default_objective: float = Field(1.0, gt=0, le=1)
    """Objective of jobs above every bound of ROUTING_SLO_OBJECTIVES; 1 = deadline first (docs/routing.md)."""
    hedge_enabled: bool = True
    """Send a backup call when a job's first call is late and its deadline is at risk (docs/routing.md)."""
    hedge_max_share: float = Field(0.1, ge=0, le=1)
    """Hedged calls may be at most this share of all model calls in the window, fleet-wide."""
    hedge_window_seconds: float = Field(60.0, gt=0, le=3600)
    """The sliding window (s) over which HEDGE_MAX_SHARE holds."""

    # --- worker ------------------------------------------------------------------------------
    worker_concurrency: int = Field(16, ge=1, le=512)
    """Jobs in flight per ``python -m modelreasoner.worker`` process (model calls are I/O waits)."""
    worker_simulate: bool = False
    """Run against in-process simulated targets instead of model servers (demos only)."""
    job_lease_seconds: float = Field(15.0, ge=1, le=3600)
    """A running job whose worker stops renewing this lease is recovered by the reconciler."""
    job_max_claims: int = Field(3, ge=1, le=20)
    """A job is claimed (its model call run) at most this many times before it is failed."""
    db_retry_attempts: int = Field(8, ge=1, le=50)
    """Tries of a worker's database work during an outage, with jittered exponential backoff
    capped at 5 s: 8 tries wait about 16-20 s in all, longer than a Postgres restart. After the
    last try the job is failed with reason ``database_unavailable``."""

    # --- reliability (docs/reliability.md) -------------------------------------------------------
    reconciler_enabled: bool = True
    """Run the reconciler inside every API and ``python -m modelreasoner.worker`` process (one pass
    per interval fleet-wide, under a Redis lock). Turn off only where ``python -m
    orchestrator.reconciler`` runs instead."""
    reconciler_interval_seconds: float = Field(5.0, ge=0.1, le=3600)
    """Time between reconciliation passes (s). A killed worker's job runs again within
    JOB_LEASE_SECONDS + RECONCILER_GRACE_SECONDS + this (25 s by default)."""
    reconciler_grace_seconds: float = Field(5.0, ge=0, le=3600)
    """How long after its last enqueue a queued job may be absent from Redis, and how long a lease
    may be overdue, before the reconciler acts (s): covers the API's commit-then-enqueue gap and
    clock skew between hosts."""
    redis_retry_attempts: int = Field(3, ge=1, le=20)
    """Tries of one Redis command whose connection dropped (API and worker; 50-500 ms jittered
    backoff). A Redis that stays down gives 503 in the API and leaves jobs to the reconciler."""
    db_connect_attempts: int = Field(3, ge=1, le=20)
    """Tries to open one database connection (every process; 50-500 ms jittered backoff, within
    DB_CONNECT_TIMEOUT_SECONDS in all): a Postgres restart is ridden out, a dead one gives a quick
    503 + Retry-After in the API."""

    # --- API -----------------------------------------------------------------------------------
    api_key: SecretStr | None = None
    """Comma-separated list of accepted API keys (several, for rotation). Unset: no auth."""
    max_body_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024)
    """Largest request body the API reads (bytes); more is answered 413 before parsing."""
    public_url: str = ""
    """Base URL put in front of ``status_url`` (e.g. https://pedi.example.org); empty: relative."""

    # --- telemetry ---------------------------------------------------------------------------
    telemetry_retention_hours: float = Field(24.0, gt=0, le=24 * 366)
    """How long telemetry pushed to POST /api/telemetry is kept (h). A sample already older is
    dropped on arrival; stored ones are pruned in bounded batches as their target sends more."""

    # --- observability -----------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """Log threshold of every process (JSON lines on stdout)."""
    metrics_port: int | None = Field(None, ge=1, le=65535)
    """Port on which the worker serves Prometheus metrics; unset: not served."""
    otel_collector_url: str | None = None
    """Base URL of an OpenTelemetry collector's OTLP/HTTP receiver (e.g. http://otel-collector:4318);
    spans go to ``<url>/v1/traces``. Unset (and no OTEL_EXPORTER_OTLP_ENDPOINT): no tracing."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "edge_model_url",
        "cloud_model_url",
        "gpu_model_url",
        "edge_agent_url",
        "cloud_runner_url",
        "gpu_runner_url",
        "otel_collector_url",
        mode="before",
    )
    @classmethod
    def _http_url(cls, value: object) -> object:
        if value is None or value == "":
            return None
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("database_url", mode="after")
    @classmethod
    def _postgres_driver(cls, value: str) -> str:
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the pinned driver is psycopg2.
        for bare in ("postgresql://", "postgres://"):
            if value.startswith(bare):
                return "postgresql+psycopg2://" + value.removeprefix(bare)
        if not value.startswith(("postgresql+", "sqlite")):
            raise ValueError("must be a postgresql:// or sqlite:// URL")
        return value

    @field_validator("api_key", mode="after")
    @classmethod
    def _non_empty_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        keys = [k.strip() for k in value.get_secret_value().split(",")]
        if any(not k for k in keys):
            raise ValueError("contains an empty key between commas")
        if any(len(k) < 8 for k in keys):
            raise ValueError("every key must be at least 8 characters long")
        return value

    @property
    def api_key_hashes(self) -> dict[str, str]:
        """sha256 hex digest -> key id, for every accepted key. The keys themselves are not kept."""
        if self.api_key is None:
            return {}
        hashes = {}
        for key in self.api_key.get_secret_value().split(","):
            digest = hashlib.sha256(key.strip().encode()).hexdigest()
            hashes[digest] = key_id_for_digest(digest)
        return hashes

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")


def key_id_for_digest(digest: str) -> str:
    """The printable id of an API key: safe for audits and logs, useless to an attacker."""
    return "key-" + digest[:10]


def _known_env_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def _check_unknown_variables(environ: dict[str, str]) -> None:
    known = _known_env_names()
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(OWN_PREFIXES) and upper not in known:
            close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.75)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"Invalid configuration: {upper} is not a known setting{hint}")


def _format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        message = item["msg"].removeprefix("Value error, ")
        if field not in SECRET_FIELDS and "input" in item and not isinstance(item["input"], dict):
            message += f" (got {item['input']!r})"
        lines.append(f"  {field.upper()}: {message}")
    return "Invalid configuration:\n" + "\n".join(lines)


def load_settings() -> Settings:
    """Build and validate settings from the process environment."""
    _check_unknown_variables(dict(os.environ))
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests call ``get_settings.cache_clear()``."""
    return load_settings()
