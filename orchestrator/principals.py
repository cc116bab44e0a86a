"""Principals: who a caller is (key id), which clinic or app it belongs to (tenant), and what it
may do (scopes).

Scopes, and what each allows:

* ``submit``  submit jobs and tasks; read its own tenant's jobs (implies ``read``);
* ``read``    read-only, its own tenant;
* ``operate`` targets, telemetry, SLA events, model metrics, route dry run; read across tenants
  (without observations) (implies ``read``);
* ``admin``   register, change and remove targets, plus everything else.

Keys are known only by their sha256 digest; a principal's printable id is ``key-<10 hex>`` of that
digest, which is what audits and logs record.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

DEFAULT_TENANT = "default"
"""The tenant of every key given by ``API_KEY`` and of rows created before tenants existed."""

ANONYMOUS = "anonymous"
"""The key id of every caller in dev mode (no keys configured)."""


class Scope(enum.StrEnum):
    SUBMIT = "submit"
    READ = "read"
    OPERATE = "operate"
    ADMIN = "admin"


IMPLIED: dict[Scope, frozenset[Scope]] = {
    Scope.SUBMIT: frozenset({Scope.SUBMIT, Scope.READ}),
    Scope.READ: frozenset({Scope.READ}),
    Scope.OPERATE: frozenset({Scope.OPERATE, Scope.READ}),
    Scope.ADMIN: frozenset(Scope),
}
"""What holding a scope grants, itself included."""


@dataclass(frozen=True)
class Quota:
    """Per-key limits as configured; a None limit falls back to the QUOTA_* setting."""

    rpm: int | None = None
    max_in_flight: int | None = None
    daily_budget_usd: float | None = None


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant: str
    scopes: frozenset[Scope]
    quota: Quota | None = None
    """This key's own limits (API_KEYS_JSON); None, or a None limit in it: the global default."""

    def allows(self, scope: Scope) -> bool:
        return any(scope in IMPLIED[held] for held in self.scopes)

    @property
    def cross_tenant(self) -> bool:
        """Operators and admins see every tenant's jobs."""
        return self.allows(Scope.OPERATE)

    @property
    def reads_tenant(self) -> str | None:
        """The one tenant whose jobs this principal may read; None: every tenant."""
        return None if self.cross_tenant else self.tenant

    def sees_results_of(self, tenant: str) -> bool:
        """Whether a job's result (model output about a child: PHI) is shown to this principal:
        its own tenant's, or any tenant's with ``admin``. An operator reading another tenant's
        job sees its status, routing and timings, not what the model said."""
        return tenant == self.tenant or self.allows(Scope.ADMIN)


DEV_PRINCIPAL = Principal(ANONYMOUS, DEFAULT_TENANT, frozenset({Scope.ADMIN}))
"""Every caller in dev mode (no keys configured): allowed everything, loudly."""

LEGACY_SCOPES = frozenset({Scope.SUBMIT, Scope.READ})
"""The scopes of a key given by ``API_KEY`` (the comma-separated rotation list)."""


def digest_of(key: str) -> str:
    """The sha256 hex digest under which a key is stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_for_digest(digest: str) -> str:
    """The printable id of an API key: safe for audits and logs, useless to an attacker."""
    return "key-" + digest[:10]


def legacy_principals(keys: list[str]) -> dict[str, Principal]:
    """digest -> principal for each key of ``API_KEY``: tenant ``default``, submit + read."""
    principals = {}
    for key in keys:
        digest = digest_of(key)
        principals[digest] = Principal(key_id_for_digest(digest), DEFAULT_TENANT, LEGACY_SCOPES)
    return principals


class PrincipalSpec(BaseModel):
    """One principal as configured (``API_KEYS_JSON`` / ``API_KEYS_FILE``): the key only as its
    sha256 hex digest (``python -m orchestrator.keys digest`` prints it for a new key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tenant: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    scopes: tuple[Scope, ...] = Field(min_length=1)
    name: str | None = Field(None, max_length=64)
    """A label for people (never used for authorisation)."""
    rpm: int | None = Field(None, ge=1, le=100_000)
    """Submissions per minute (default: QUOTA_RPM)."""
    max_in_flight: int | None = Field(None, ge=1, le=10_000_000)
    """Jobs queued or running at once (default: QUOTA_MAX_IN_FLIGHT)."""
    daily_budget_usd: float | None = Field(None, gt=0, le=1_000_000, allow_inf_nan=False)
    """Model-call cost per UTC day (default: QUOTA_DAILY_BUDGET_USD)."""


SPECS = TypeAdapter(tuple[PrincipalSpec, ...])


def describe_errors(error: ValidationError) -> str:
    """A validation error of principal entries, by entry and field, never quoting a value."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in item["loc"])
        parts.append(f"entry {where}: {item['msg']}" if where else item["msg"])
    return "; ".join(parts)


def specs_from_file(path: Path) -> tuple[PrincipalSpec, ...]:
    """The principals a keys file lists: YAML (JSON is YAML too), a list of the same entries as
    ``API_KEYS_JSON``. Raises ValueError, saying what is wrong without quoting the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path} ({exc.strerror or type(exc).__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path} is not valid YAML{where}") from None
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a list of principals (- sha256: ..., tenant: ..., scopes: [...])")
    try:
        return SPECS.validate_python(data)
    except ValidationError as exc:
        raise ValueError(describe_errors(exc)) from None


def principals_from_specs(specs: tuple[PrincipalSpec, ...]) -> dict[str, Principal]:
    """digest -> principal; a digest listed twice is refused (ValueError)."""
    principals: dict[str, Principal] = {}
    for spec in specs:
        if spec.sha256 in principals:
            raise ValueError(f"the key {key_id_for_digest(spec.sha256)} is listed twice")
        quota = Quota(spec.rpm, spec.max_in_flight, spec.daily_budget_usd)
        principals[spec.sha256] = Principal(key_id_for_digest(spec.sha256), spec.tenant, frozenset(spec.scopes), quota)
    return principals


def merge(*groups: dict[str, Principal]) -> dict[str, Principal]:
    """One digest -> principal map from several sources; a key in two sources is refused."""
    merged: dict[str, Principal] = {}
    for group in groups:
        for digest, principal in group.items():
            if digest in merged:
                raise ValueError(f"the key {principal.key_id} is configured twice")
            merged[digest] = principal
    return merged
