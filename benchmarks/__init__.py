"""Latency and accuracy benchmarks; each prints a table and writes JSON."""
