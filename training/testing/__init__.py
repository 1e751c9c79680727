"""Helpers for tests and benchmarks that need real multi-process Ray clusters on one machine."""
