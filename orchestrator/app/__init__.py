"""The HTTP API service (FastAPI). Start it with
``uvicorn orchestrator.app.main:create_app --factory --port 9000``."""
