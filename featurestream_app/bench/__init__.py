"""Benchmarks: separate commands whose results go to files under bench/results/."""

__all__: list[str] = []
