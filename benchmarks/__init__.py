"""Benchmark scripts (run as ``python benchmarks/<name>.py``); not part of the installed package."""
