"""Benchmarks: scripts that measure and print figures (not timed tests)."""
