"""Authentication and authorisation of every /api route.

A presented ``x-api-key`` is hashed and compared with every configured digest in constant time;
the match is a :class:`~orchestrator.principals.Principal` (key id, tenant, scopes). Each route
declares the scope it needs with one of the dependency aliases below (``SubmitDep``, ``ReadDep``,
``OperateDep``, ``AdminDep``): no key or an unknown key is 401, a key without the scope is 403.
With no keys configured (dev mode) every caller is the anonymous dev principal: allowed in
``ENV=development`` only, and said loudly (start log, ``/readyz``, the console's banner).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from orchestrator.constants import API_KEY_HEADER
from orchestrator.errors import ConfigError, Forbidden, Unauthorized
from orchestrator.principals import DEV_PRINCIPAL, Principal, Scope
from orchestrator.settings import Settings

DEV_MODE, KEYS = "dev-mode", "keys"
"""How the API authenticates, as /readyz and the start log say it."""


def api_principals(settings: Settings) -> dict[str, Principal]:
    """The principals the API accepts (digest -> principal), checked at start: a bad keys file,
    a key configured twice, or no keys at all with ``ENV=production`` raise ConfigError."""
    principals = settings.principals
    if not principals and settings.env == "production":
        raise ConfigError(
            "Invalid configuration:\n  ENV: production needs API keys (API_KEY, API_KEYS_JSON or"
            " API_KEYS_FILE); dev mode, where every caller is an anonymous administrator, is refused"
        )
    return principals


def auth_mode(principals: dict[str, Principal]) -> str:
    return KEYS if principals else DEV_MODE


api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="An API key of a principal")


def match_key(presented: str | None, principals: dict[str, Principal]) -> Principal | None:
    """The principal whose key is ``presented``, else None.

    Every digest is compared, whatever matches first, so timing says nothing about which key
    (or how much of one) was right.
    """
    if not presented:
        return None
    candidate = hashlib.sha256(presented.encode()).hexdigest().encode()
    found = None
    for digest, principal in principals.items():
        if hmac.compare_digest(candidate, digest.encode()):
            found = principal
    return found


def authenticate(request: Request, presented: str | None) -> Principal:
    principals: dict[str, Principal] = request.app.state.services.principals
    if not principals:
        principal = DEV_PRINCIPAL
    else:
        principal = match_key(presented, principals)
        if principal is None:
            raise Unauthorized("Missing or invalid API key (header x-api-key)")
    request.state.actor = principal.key_id
    return principal


class Authorize:
    """FastAPI dependency: the caller's principal if it holds ``scope``; 401 / 403 otherwise."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(
        self, request: Request, presented: Annotated[str | None, Security(api_key_header)] = None
    ) -> Principal:
        # async: a digest and a few compares, no I/O; a sync dependency would cost a thread hop.
        principal = authenticate(request, presented)
        if not principal.allows(self.scope):
            raise Forbidden(f"This key lacks the '{self.scope.value}' scope")
        return principal


SubmitDep = Annotated[Principal, Depends(Authorize(Scope.SUBMIT))]
ReadDep = Annotated[Principal, Depends(Authorize(Scope.READ))]
OperateDep = Annotated[Principal, Depends(Authorize(Scope.OPERATE))]
AdminDep = Annotated[Principal, Depends(Authorize(Scope.ADMIN))]
