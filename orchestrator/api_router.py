"""Every HTTP route of the API, assembled from one router per resource."""

from __future__ import annotations

from fastapi import APIRouter

from orchestrator.routers import cases, insights, jobs, ops, route, targets, tasks, telemetry, ui

api_router = APIRouter()
api_router.include_router(ops.router)
api_router.include_router(jobs.router)
api_router.include_router(targets.router)
api_router.include_router(route.router)
api_router.include_router(tasks.router)
api_router.include_router(cases.router)
api_router.include_router(telemetry.router)
api_router.include_router(insights.router)
api_router.include_router(ui.router)
