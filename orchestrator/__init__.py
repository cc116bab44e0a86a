"""pedi-orchestrator: durable, SLA-aware routing of pediatric screening jobs to model servers."""

__version__ = "0.1.0"
