"""Test suite of pedi-orchestrator."""
