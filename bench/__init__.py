"""Benchmarks: simulation overhead, aggregation, scale and efficiency (``python -m bench``)."""
