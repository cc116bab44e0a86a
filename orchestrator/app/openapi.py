"""The OpenAPI document says what the server does: the auth the mode really enforces, and every
status code the shared layers can answer, with the one error body.

The routers document what is particular to a route (404 of an unknown id, 409 of an idempotency
conflict, ...). What every route shares is added here, once, so that no router can forget it:

* the error statuses of the layers in front of every handler (``SHARED_ERRORS``): validation
  (422, 400 for a request the handlers refuse as a whole), the body limit (413) and media type
  (415) of a route that takes a body, an unavailable store (503), and 401/403 where a key is needed;
* the security requirement as the mode enforces it. With keys configured, a secured operation
  needs ``x-api-key``. In dev mode (no key) it needs nothing: the requirement is made optional
  (``[{}, {"APIKeyHeader": []}]``: no auth, or the key), and the description says so.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
BODY_METHODS = frozenset({"post", "put", "patch"})
SHARED_ERRORS: dict[int, str] = {
    400: "Bad request: the request as a whole cannot be served (a named field says why)",
    422: "Validation error: the message names the field, never echoes the value",
    503: "A store (Postgres or Redis) is unavailable; retry after Retry-After seconds",
}
BODY_ERRORS: dict[int, str] = {
    413: "Body larger than MAX_BODY_BYTES",
    415: "Body is not application/json",
}
AUTH_ERRORS: dict[int, str] = {
    401: "Missing or invalid API key (header x-api-key)",
    403: "The key lacks the scope this route needs (submit, read, operate or admin)",
}
DEV_MODE_NOTE = "Dev mode: no API key is configured, so no route needs the x-api-key header."
KEYS_MODE_NOTE = (
    "Every /api route needs an x-api-key header naming a principal whose scopes allow the route "
    "(API_KEY, API_KEYS_JSON or API_KEYS_FILE)."
)


def error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def document(schema: dict[str, Any], *, keys_required: bool) -> dict[str, Any]:
    """Add the shared error responses and the mode's security to ``schema`` (in place)."""
    for methods in schema.get("paths", {}).values():
        for method, operation in methods.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            if not operation.get("parameters") and method not in BODY_METHODS and not operation.get("security"):
                continue  # takes nothing and needs nothing (healthz, metrics): no shared error
            responses = operation.setdefault("responses", {})
            shared = dict(SHARED_ERRORS)
            if "requestBody" in operation:
                shared.update(BODY_ERRORS)
            security = operation.get("security")
            if security:
                if keys_required:
                    shared.update(AUTH_ERRORS)
                else:
                    operation["security"] = [{}, *[s for s in security if s]]
            for status, description in shared.items():
                responses.setdefault(str(status), error_response(description))
    if "ErrorBody" not in schema.get("components", {}).get("schemas", {}):
        raise RuntimeError("ErrorBody is missing from the OpenAPI components: no route documents an error")
    schema["info"]["description"] = f"{schema['info'].get('description', '').strip()}\n\n" + (
        KEYS_MODE_NOTE if keys_required else DEV_MODE_NOTE
    )
    return schema


def install_openapi(app: FastAPI, *, keys_required: bool) -> None:
    """Serve ``document()``'s version of the app's OpenAPI document (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
                servers=app.servers,
            )
            app.openapi_schema = document(schema, keys_required=keys_required)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
