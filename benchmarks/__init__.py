"""Benchmarks for `make bench`.

Every figure is printed next to a baseline measured in the same run, on the same machine and
database, and judged by their ratio, so the numbers survive noisy or slow machines.
Run ``python -m benchmarks``; ``PRIVACY_BENCH_*`` environment variables size the run
(see :class:`benchmarks.common.BenchConfig`).
"""
