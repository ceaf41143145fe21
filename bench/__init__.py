"""Benchmark harness for linevault: drives servers over HTTP only."""
