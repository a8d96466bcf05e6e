"""Benchmarks for sna-orch: run each with ``python -m benchmarks.<name>``; each prints one JSON object."""
