"""Benchmarks run by `make bench`; results are recorded in docs/benchmarks.md."""
