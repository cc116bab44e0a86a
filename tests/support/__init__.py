"""Helpers shared by the test suite: real services, managed processes, a stack builder."""
