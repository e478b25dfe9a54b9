"""Benchmarks that print numbers with the machine; run from the repository root as modules: .venv/bin/python -m bench.NAME."""
