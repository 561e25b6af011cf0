"""Latency and accuracy measurements; results are JSON, tables and plots are views of it."""
