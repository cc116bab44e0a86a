"""Every route declares the scope it needs in one place, and the API enforces it.

The test walks the app's own OpenAPI document (plus the routes it leaves out: /metrics, the
console's files) and proves, for EVERY route: without a key, 401; with a key lacking the route's
scope, 403; with the scope, neither. A route without a scope must be on the explicit allowlist
below, with its reason; a new route that forgets its scope fails here.
"""

from __future__ import annotations

import uuid

import pytest
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.testclient import TestClient

from orchestrator.app.auth import Authorize
from orchestrator.principals import IMPLIED, Scope
from tests.support.app import in_process_app
from tests.support.keys import keys_env, principal

pytestmark = pytest.mark.security

UNAUTHENTICATED = {
    ("GET", "/healthz"): "liveness probe: touches no store, answers only 'ok'",
    ("GET", "/readyz"): "readiness probe for load balancers: which dependency is down and the auth mode, no data",
    ("GET", "/metrics"): "Prometheus scrape: aggregate counters with bounded labels, no PHI or ids",
    ("GET", "/ui"): "redirect to the console's files",
    ("GET", "/ui/"): "the console's page: static, holds no data (its numbers come from the keyed JSON API)",
    ("GET", "/ui/{relative:path}"): "the console's static files (JS, CSS, icon): hold no data",
    ("GET", "/docs"): "API documentation (Swagger UI): describes routes, holds no data",
    ("GET", "/docs/oauth2-redirect"): "part of Swagger UI: no data",
    ("GET", "/redoc"): "API documentation (ReDoc): describes routes, holds no data",
    ("GET", "/openapi.json"): "the API's description, which this test walks: no data",
}
"""(method, path) -> why it needs no key. Nothing else may be reached without one."""

EXPECTED_SCOPES = {
    ("POST", "/api/submit"): Scope.SUBMIT,
    ("POST", "/route_task"): Scope.SUBMIT,
    ("GET", "/api/status/{job_id}"): Scope.READ,
    ("GET", "/api/jobs"): Scope.READ,
    ("GET", "/api/jobs/{job_id}/events"): Scope.READ,
    ("GET", "/task/{task_id}"): Scope.READ,
    ("DELETE", "/api/cases/{case_id}"): Scope.SUBMIT,
    ("GET", "/api/cases/{case_id}/export"): Scope.READ,
    ("GET", "/api/targets"): Scope.OPERATE,
    ("POST", "/api/telemetry"): Scope.OPERATE,
    ("GET", "/api/sla-events"): Scope.OPERATE,
    ("GET", "/api/model-metrics"): Scope.OPERATE,
    ("POST", "/api/route"): Scope.OPERATE,
    ("POST", "/register_agent"): Scope.ADMIN,
    ("POST", "/api/agents"): Scope.ADMIN,
    ("DELETE", "/api/targets/{name}"): Scope.ADMIN,
}
"""The scope each route must declare, as issue 10 gives them (submit: jobs and tasks; read: its
own tenant's; operate: targets, telemetry, SLA events, model metrics, route dry run; admin:
changing where cases go). A route's declaration may not drift from this, and a new route is
added here, on purpose."""

PARAMETER_VALUES = {"uuid": str(uuid.UUID(int=7))}
"""Path parameters by OpenAPI format; any other parameter gets a plain name."""


def key_for(scopes: frozenset[Scope]) -> str:
    return "scope-key-" + ("-".join(sorted(s.value for s in scopes)) or "none")


def lacking(scope: Scope) -> frozenset[Scope]:
    """The most a key can hold without holding ``scope``: every scope that does not imply it."""
    return frozenset(s for s in Scope if scope not in IMPLIED[s])


KEY_SCOPES = {frozenset({s}) for s in Scope} | {lacking(s) for s in Scope if lacking(s)}


@pytest.fixture
def client(sqlite_engine, fake_redis, monkeypatch):
    entries = [principal(key_for(scopes), *sorted(s.value for s in scopes)) for scopes in KEY_SCOPES]
    app = in_process_app(sqlite_engine, fake_redis, monkeypatch, **keys_env(*entries))
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


def declared_scopes(context: RouteContext) -> list[Scope]:
    """Every Authorize(scope) in the route's dependency tree."""
    route = context.original_route
    if not isinstance(route, APIRoute):
        return []
    found, pending = [], [route.dependant]
    while pending:
        dependant = pending.pop()
        if isinstance(dependant.call, Authorize):
            found.append(dependant.call.scope)
        pending.extend(dependant.dependencies)
    return found


def routes(app) -> dict[tuple[str, str], RouteContext]:
    """(method, full path) -> route, for every route the app serves (included routers flattened)."""
    table = {}
    for context in iter_route_contexts(app.routes):
        for method in sorted(context.methods or ()):
            if method != "HEAD":  # Starlette adds HEAD to every GET
                table[(method, context.path)] = context
    return table


def scope_of(app, method: str, path: str) -> Scope:
    route = routes(app)[(method, path)]
    (scope,) = declared_scopes(route)
    return scope


def operations(app) -> list[tuple[str, str, dict]]:
    """(method, path, operation) for every operation in the app's OpenAPI document."""
    return [
        (method.upper(), path, operation)
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
    ]


def concrete(path: str, operation: dict) -> str:
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            value = PARAMETER_VALUES.get(parameter["schema"].get("format"), "edge")
            path = path.replace("{" + parameter["name"] + "}", value)
    return path


def call(client, method: str, path: str, key: str | None):
    headers = {"x-api-key": key} if key else {}
    return client.request(method, path, headers=headers, json={} if method in ("POST", "PUT", "PATCH") else None)


def test_every_route_declares_exactly_one_scope_or_is_allowlisted_with_a_reason(client):
    table = routes(client.app)
    assert len(table) >= 20, "the walk found the app's routes"
    for (method, path), route in table.items():
        scopes = declared_scopes(route)
        if (method, path) in UNAUTHENTICATED:
            assert scopes == [], f"{method} {path} is allowlisted but declares {scopes}"
            assert UNAUTHENTICATED[(method, path)].strip(), "every exemption says why"
        else:
            assert len(scopes) == 1, f"{method} {path} must declare one scope (SubmitDep, ReadDep, ...): {scopes}"
            assert (method, path) in EXPECTED_SCOPES, f"{method} {path}: add it to EXPECTED_SCOPES with its scope"
            assert scopes[0] is EXPECTED_SCOPES[(method, path)], f"{method} {path} declares {scopes[0]}"
    stale = set(UNAUTHENTICATED) - set(table)
    assert not stale, f"allowlisted routes that no longer exist: {stale}"


def test_the_openapi_document_lists_every_keyed_route_with_its_security_scheme(client):
    documented = {(method, path) for method, path, _ in operations(client.app)}
    keyed = {route for route in routes(client.app) if route not in UNAUTHENTICATED}
    assert keyed <= documented, f"keyed routes missing from OpenAPI: {keyed - documented}"
    for method, path, operation in operations(client.app):
        if (method, path) not in UNAUTHENTICATED:
            assert operation.get("security"), f"{method} {path} does not say it needs x-api-key"


def test_every_route_without_a_key_is_401(client):
    checked = 0
    for method, path, operation in operations(client.app):
        if (method, path) in UNAUTHENTICATED:
            continue
        for key in (None, "not-a-configured-key"):
            response = call(client, method, concrete(path, operation), key)
            assert response.status_code == 401, (method, path, key, response.status_code, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
        checked += 1
    assert checked >= 10, "the walk found the API's routes"


def test_every_route_with_a_key_lacking_its_scope_is_403(client):
    checked = set()
    for method, path, operation in operations(client.app):
        if (method, path) in UNAUTHENTICATED:
            continue
        scope = scope_of(client.app, method, path)
        if not lacking(scope):
            # Every scope implies read: no key can lack it, and no key sees another tenant's
            # jobs by holding it (tests/security/test_access_control.py).
            assert scope is Scope.READ and all(Scope.READ in IMPLIED[s] for s in Scope)
            continue
        response = call(client, method, concrete(path, operation), key_for(lacking(scope)))
        assert response.status_code == 403, (method, path, scope, response.status_code, response.text)
        assert response.json()["error"] == {"code": "forbidden", "message": f"This key lacks the '{scope}' scope"}
        checked.add(scope)
    assert checked == {Scope.SUBMIT, Scope.OPERATE, Scope.ADMIN}, "each refusable scope was refused somewhere"


def test_every_route_with_its_scope_passes_authorisation(client):
    for method, path, operation in operations(client.app):
        if (method, path) in UNAUTHENTICATED:
            continue
        scope = scope_of(client.app, method, path)
        response = call(client, method, concrete(path, operation), key_for(frozenset({scope})))
        assert response.status_code not in (401, 403), (method, path, scope, response.status_code, response.text)
        assert response.status_code < 500, (method, path, response.text)


@pytest.mark.parametrize(("method", "path"), sorted(UNAUTHENTICATED))
def test_allowlisted_routes_answer_without_a_key(client, method, path):
    response = client.request(method, path.replace("{relative:path}", "console.css"))
    assert response.status_code in (200, 307, 308), (method, path, response.status_code)
