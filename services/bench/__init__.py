"""Benchmarks: each compares our path with the raw library path in the same run."""
