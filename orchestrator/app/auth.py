"""API-key authentication for every /api route.

Keys come from ``API_KEY`` (comma-separated, for rotation) and are kept only as sha256 digests.
A presented key is hashed and compared with every digest in constant time. The caller is known
from then on by a key id (``key-<10 hex>``), never by the key: that id goes into audits and logs.
With no ``API_KEY`` configured, every caller is ``anonymous`` (dev mode; a warning is logged at
start).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from orchestrator.constants import API_KEY_HEADER
from orchestrator.errors import Unauthorized

ANONYMOUS = "anonymous"

api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="One of the keys in API_KEY")


def match_key(presented: str | None, digests: dict[str, str]) -> str | None:
    """The key id of ``presented`` if it is one of ``digests`` (sha256 hex -> key id), else None.

    Every digest is compared, whatever matches first, so timing says nothing about which key
    (or how much of one) was right.
    """
    if not presented:
        return None
    candidate = hashlib.sha256(presented.encode()).hexdigest().encode()
    found = None
    for digest, key_id in digests.items():
        if hmac.compare_digest(candidate, digest.encode()):
            found = key_id
    return found


def require_api_key(request: Request, presented: Annotated[str | None, Security(api_key_header)] = None) -> str:
    """FastAPI dependency: the caller's key id, ``anonymous`` in dev mode; 401 otherwise."""
    digests: dict[str, str] = request.app.state.services.api_key_digests
    if not digests:
        actor = ANONYMOUS
    else:
        actor = match_key(presented, digests)
        if actor is None:
            raise Unauthorized("Missing or invalid API key (header x-api-key)")
    request.state.actor = actor
    return actor


ActorDep = Annotated[str, Depends(require_api_key)]
