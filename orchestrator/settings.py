"""The one settings object, read from the environment once and validated at start.

Every variable is documented in docs/configuration.md. ``get_settings()`` builds the object on
first use and caches it; nothing is read at import time. A malformed value raises
``ConfigError`` with a message that names the variable. A variable that looks like ours (one of
``OWN_PREFIXES``) but is not a known setting is refused too, with a suggestion: a typo in
``ROUTING_TIMEOUT_SECONDS`` must not silently fall back to the default.
"""

from __future__ import annotations

import difflib
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from orchestrator.constants import RQ_JOB_TIMEOUT_SECONDS
from orchestrator.errors import ConfigError
from orchestrator.principals import (
    Principal,
    PrincipalSpec,
    legacy_principals,
    merge,
    principals_from_specs,
    specs_from_file,
)
from orchestrator.url_policy import parse_entry

OWN_PREFIXES = ("ROUTING_", "WORKER_", "RECONCILER_", "JOB_", "HEDGE_", "CIRCUIT_", "PEDI_")
"""Environment prefixes that belong to this project alone; unknown names under them are typos."""

SECRET_FIELDS = frozenset({"api_key", "api_keys_json", "database_url", "migration_database_url", "redis_url"})
"""Fields whose value must never be echoed back in an error message (keys, passwords in URLs)."""


class Settings(BaseSettings):
    """Configuration shared by the API, the worker, the reconciler, Alembic and scripts."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True, use_attribute_docstrings=True)

    env: Literal["development", "production"] = "development"
    """``production`` refuses to start the API without API keys (API_KEY, API_KEYS_JSON or
    API_KEYS_FILE) and refuses model-server URLs on loopback unless TARGET_URL_ALLOWLIST covers
    them. ``development`` allows dev mode: no keys, every caller an anonymous administrator, said
    loudly in the log, in /readyz and in the console."""

    # --- stores ----------------------------------------------------------------------------
    database_url: str = "sqlite:///./orchestrator_dev.db"
    """Where jobs live: ``postgresql://user:pass@host:5432/db`` in production, SQLite for dev. The
    API, worker and reconciler connect with it: in production, as the least-privilege runtime role
    of migrations/roles.sql (rows only; the audit trail append-only), never as the schema owner."""
    migration_database_url: str | None = None
    """Alembic's connection (``alembic upgrade head``): the schema owner role of
    migrations/roles.sql. Only the migration step needs it; unset: DATABASE_URL."""
    redis_url: str = "redis://localhost:6379/0"
    """The RQ transport and the routers' shared stats. Carries job ids only, never PHI."""
    db_connect_timeout_seconds: float = Field(3.0, gt=0, le=60)
    """Longest opening one Postgres connection may take, every try included (s): a dead or hung
    Postgres turns into a quick 503, not a hung request. Enforced by the client."""
    db_pool_size: int = Field(10, ge=1, le=200)
    """Connections per pool of an API process, which has two: the submit routes' autocommit pool
    and the rest (the worker sizes its own pool to its concurrency)."""
    db_pool_timeout_seconds: float = Field(1.0, gt=0, le=60)
    """How long a caller waits for a free pooled connection (s); then the API answers 503
    database_unavailable + Retry-After instead of queueing behind a stuck pool."""
    db_statement_timeout_seconds: float = Field(5.0, gt=0, le=3600)
    """Longest one SQL statement may run (s): Postgres ``statement_timeout`` on every connection.
    The client itself gives up 1 s later and closes the connection, so a hung (stopped,
    partitioned) Postgres cannot hold any process longer either."""
    db_lock_timeout_seconds: float = Field(2.0, gt=0, le=3600)
    """Longest one statement waits for a lock (s): Postgres ``lock_timeout``. At most
    DB_STATEMENT_TIMEOUT_SECONDS."""
    db_keepalive_idle_seconds: int = Field(30, ge=1, le=7200)
    """TCP keepalive on every Postgres connection: an idle one is probed after this (s), then every
    10 s, 3 times, so a vanished database host is noticed within about this + 30 s."""
    db_request_budget_seconds: float = Field(4.0, gt=0, le=300)
    """Longest one API request may wait on Postgres in all (s): pool checkout, connecting and every
    statement. Past it the connection is closed and the request answers 503 database_unavailable +
    Retry-After (docs/reliability.md, "API under a hung dependency")."""
    redis_socket_timeout_seconds: float = Field(2.0, gt=0, le=60)
    """Longest one Redis command may wait for its answer (s); longer counts as Redis being down
    (RQ raises its own workers' timeout above their blocking dequeue)."""
    redis_connect_timeout_seconds: float = Field(1.0, gt=0, le=60)
    """Longest opening one Redis connection may take (s)."""

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
    job_max_requeues: int = Field(5, ge=1, le=100)
    """A queued job the reconciler had to put back on the queue this many times since its last
    claim (every delivery failed before a worker could claim it) ends ``failed``
    (``undeliverable``) instead of looping; pedi_jobs_undeliverable_total counts it."""
    worker_hostname: str | None = Field(None, min_length=1, max_length=253)
    """Host name in the worker id ``<host>:<pid>:<hex>`` (default: the machine's; a pod sets its
    own). An id longer than the audit's actor column is cut and suffixed with a digest."""
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
    max_clock_skew_seconds: float = Field(1.0, ge=0, le=600)
    """The largest clock difference expected between hosts (s). Leases run on the database's
    clock; the reconciler's other checks (a job's age since its enqueue) compare hosts' clocks,
    so RECONCILER_GRACE_SECONDS must exceed this."""
    redis_retry_attempts: int = Field(3, ge=1, le=20)
    """Tries of one Redis command whose connection dropped (API and worker; 50-500 ms jittered
    backoff). A Redis that stays down gives 503 in the API and leaves jobs to the reconciler."""
    db_connect_attempts: int = Field(3, ge=1, le=20)
    """Tries to open one database connection (every process; 50-500 ms jittered backoff, within
    DB_CONNECT_TIMEOUT_SECONDS in all): a Postgres restart is ridden out, a dead one gives a quick
    503 + Retry-After in the API."""

    # --- API -----------------------------------------------------------------------------------
    api_key: SecretStr | None = None
    """Comma-separated list of accepted API keys (several, for rotation). Each is a principal of
    tenant ``default`` with scopes ``submit`` and ``read``. Unset (and no API_KEYS_JSON): dev mode."""
    api_keys_json: tuple[PrincipalSpec, ...] | None = None
    """Principals as JSON: ``[{"sha256": "<hex digest of the key>", "tenant": "clinic-a",
    "scopes": ["submit"], "name": "intake app"}]``. Scopes: submit, read, operate, admin. Keys are
    given only as sha256 digests; unknown fields and a digest listed twice are refused. Optional
    per-key quotas: ``rpm``, ``max_in_flight``, ``daily_budget_usd`` (else the QUOTA_* settings)."""
    api_keys_file: Path | None = None
    """A YAML file listing principals, the same entries as API_KEYS_JSON (docs/api.md); read by
    the API at start. ``python -m orchestrator.keys generate`` makes a key and its entry."""
    max_body_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024)
    """Largest request body the API reads (bytes); more is answered 413 before parsing."""
    public_url: str = ""
    """Base URL put in front of ``status_url`` (e.g. https://pedi.example.org); empty: relative."""

    # --- target registration (docs/api.md "Registering targets") --------------------------------
    target_url_allowlist: Annotated[tuple[str, ...], NoDecode] = ()
    """Comma-separated hosts (``gpu.internal``), domains (``.models.example.org``) and CIDRs
    (``10.20.0.0/16``) model-server URLs may point at; empty: any host the other rules allow.
    Link-local and cloud-metadata addresses are refused whatever it says."""
    target_url_resolve_timeout_seconds: float = Field(2.0, gt=0, le=30)
    """Longest a target URL's host name may take to resolve when it is checked (s); slower is refused."""
    max_registered_targets: int = Field(32, ge=0, le=256)
    """Most targets that may be registered through the API at once (configured ones do not count)."""

    # --- quotas (per principal; docs/api.md "Quotas") ------------------------------------------
    quota_rpm: int | None = Field(None, ge=1, le=100_000)
    """Submissions (POST /api/submit, /route_task) a key may make per minute, unless its
    API_KEYS_JSON entry sets ``rpm``; unset: no limit. Shared by every API replica through Redis."""
    quota_max_in_flight: int | None = Field(None, ge=1, le=10_000_000)
    """Jobs a key may have queued or running at once, unless its entry sets ``max_in_flight``;
    unset: no limit."""
    quota_daily_budget_usd: float | None = Field(None, gt=0, le=1_000_000, allow_inf_nan=False)
    """Model-call cost (USD) a key's jobs may run up per UTC day, unless its entry sets
    ``daily_budget_usd``; unset: no budget."""

    # --- telemetry ---------------------------------------------------------------------------
    telemetry_retention_hours: float = Field(24.0, gt=0, le=24 * 366)
    """How long telemetry pushed to POST /api/telemetry is kept (h). A sample already older is
    dropped on arrival; stored ones are pruned in bounded batches as their target sends more."""

    # --- PHI lifecycle (docs/security.md "PHI lifecycle") ---------------------------------------
    phi_retention_days: float | None = Field(None, gt=0, le=36500, allow_inf_nan=False)
    """Days after a job finishes before its PHI (observations, embedding, payload, result) is
    erased by ``python -m orchestrator.retention``; unset: kept until its case is erased."""
    phi_retention_batch_size: int = Field(500, ge=1, le=100_000)
    """Jobs erased per transaction by a retention pass; a pass repeats batches until none is left
    or ``--max-batches`` is reached, and the next pass resumes with the oldest left."""

    # --- observability -----------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """Log threshold of every process (JSON lines on stdout)."""
    metrics_port: int | None = Field(None, ge=1, le=65535)
    """Port on which the worker serves Prometheus metrics; unset: not served."""
    otel_collector_url: str | None = None
    """Base URL of an OpenTelemetry collector's OTLP/HTTP receiver (e.g. http://otel-collector:4318);
    spans go to ``<url>/v1/traces``. Unset (and no OTEL_EXPORTER_OTLP_ENDPOINT): no tracing."""

    _principals: dict[str, Principal] | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Refuse settings that contradict each other (each message names the variables)."""
        problems = []
        if self.job_lease_seconds < self.routing_timeout_seconds:
            problems.append(
                f"JOB_LEASE_SECONDS ({self.job_lease_seconds:g}) must be at least ROUTING_TIMEOUT_SECONDS "
                f"({self.routing_timeout_seconds:g}): a lease shorter than the longest call"
            )
        if self.routing_timeout_seconds > RQ_JOB_TIMEOUT_SECONDS:
            problems.append(
                f"ROUTING_TIMEOUT_SECONDS ({self.routing_timeout_seconds:g}) must not exceed RQ's job timeout "
                f"({RQ_JOB_TIMEOUT_SECONDS} s)"
            )
        if self.default_sla_ms / 1000.0 > RQ_JOB_TIMEOUT_SECONDS:
            problems.append(
                f"DEFAULT_SLA_MS ({self.default_sla_ms}) must not exceed RQ's job timeout ({RQ_JOB_TIMEOUT_SECONDS} s)"
            )
        if self.reconciler_grace_seconds <= self.max_clock_skew_seconds:
            problems.append(
                f"RECONCILER_GRACE_SECONDS ({self.reconciler_grace_seconds:g}) must exceed MAX_CLOCK_SKEW_SECONDS "
                f"({self.max_clock_skew_seconds:g})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("env", mode="before")
    @classmethod
    def _lower_env(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

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

    @field_validator("db_lock_timeout_seconds", mode="after")
    @classmethod
    def _lock_within_statement(cls, value: float, info: ValidationInfo) -> float:
        statement = info.data.get("db_statement_timeout_seconds")
        if statement is not None and value > statement:
            raise ValueError(f"must be at most DB_STATEMENT_TIMEOUT_SECONDS ({statement} s)")
        return value

    @field_validator("target_url_allowlist", mode="before")
    @classmethod
    def _allowlist(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(entry.strip() for entry in value.split(",") if entry.strip())
        for entry in value or ():
            parse_entry(entry)  # ValueError names the entry
        return value

    @field_validator("database_url", "migration_database_url", mode="after")
    @classmethod
    def _postgres_driver(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value and info.field_name == "migration_database_url":  # unset or empty: DATABASE_URL
            return None
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

    @model_validator(mode="after")
    def _one_principal_per_key(self) -> Settings:
        try:
            self._from_environment()  # so that a key configured twice stops the start
        except ValueError as exc:
            raise ValueError(f"API_KEY / API_KEYS_JSON: {exc}") from None
        return self

    @property
    def principals(self) -> dict[str, Principal]:
        """sha256 hex digest -> principal, for every accepted key (API_KEY, API_KEYS_JSON and
        API_KEYS_FILE). The keys themselves are not kept. The file is read on first use (the API
        does so at start; the worker never needs it); a bad file raises ConfigError naming
        API_KEYS_FILE."""
        if self._principals is None:
            from_file: dict[str, Principal] = {}
            if self.api_keys_file is not None:
                try:
                    from_file = principals_from_specs(specs_from_file(self.api_keys_file))
                except ValueError as exc:
                    raise ConfigError(f"Invalid configuration:\n  API_KEYS_FILE: {exc}") from None
            try:
                self._principals = merge(self._from_environment(), from_file)
            except ValueError as exc:
                raise ConfigError(f"Invalid configuration:\n  API_KEY / API_KEYS_JSON / API_KEYS_FILE: {exc}") from None
        return self._principals

    def _from_environment(self) -> dict[str, Principal]:
        legacy = {}
        if self.api_key is not None:
            legacy = legacy_principals([key.strip() for key in self.api_key.get_secret_value().split(",")])
        return merge(legacy, principals_from_specs(self.api_keys_json or ()))

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")


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
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # a check across settings names its variables itself
            lines.append(f"  {message}")
            continue
        field = str(item["loc"][0])
        if field not in SECRET_FIELDS and "input" in item and not isinstance(item["input"], dict):
            message += f" (got {item['input']!r})"
        inner = ".".join(str(part) for part in item["loc"][1:])  # e.g. API_KEYS_JSON entry 0.scopes
        if inner:
            message = f"entry {inner}: {message}"
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
