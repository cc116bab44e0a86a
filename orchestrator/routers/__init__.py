"""One router per resource; ``orchestrator.api_router`` assembles them."""
