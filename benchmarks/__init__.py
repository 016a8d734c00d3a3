"""Benchmark suite: card ceilings, transformer and whole-pipeline timings at real size (docs/performance.md)."""
