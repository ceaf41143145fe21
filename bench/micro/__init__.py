"""In-process benchmarks (pytest-benchmark): the key hierarchy and the audit chain."""
