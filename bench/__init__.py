"""Benchmarks: one command, a table of ratios against baselines measured in the same run."""
