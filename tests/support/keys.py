"""API keys for tests: principals as the API_KEYS_JSON setting takes them."""

from __future__ import annotations

import hashlib
import json


def principal(key: str, *scopes: str, tenant: str = "default") -> dict:
    """One API_KEYS_JSON entry for ``key`` (given in clear here, stored as its digest)."""
    return {"sha256": hashlib.sha256(key.encode()).hexdigest(), "tenant": tenant, "scopes": list(scopes)}


def keys_env(*entries: dict) -> dict[str, str]:
    """The environment that configures ``entries`` as the API's principals."""
    return {"API_KEYS_JSON": json.dumps(list(entries))}


def admin_env(key: str, tenant: str = "default") -> dict[str, str]:
    """One key allowed everything (the console and ops tests act as an administrator)."""
    return keys_env(principal(key, "admin", tenant=tenant))
