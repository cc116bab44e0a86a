"""Every HTTP route of the API, assembled from one router per resource."""

from __future__ import annotations

from fastapi import APIRouter

from orchestrator.routers import jobs, ops, ui

api_router = APIRouter()
api_router.include_router(ops.router)
api_router.include_router(jobs.router)
api_router.include_router(ui.router)
