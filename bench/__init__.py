"""Benchmarks that print tables (python -m bench); never asserted on time in tests."""
