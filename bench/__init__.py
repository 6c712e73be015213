"""Benchmarks: each prints its figures and, last, one JSON line (run with `python -m bench.X`)."""
