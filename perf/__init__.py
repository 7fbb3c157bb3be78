"""Benchmarks, perf_analyzer sweeps and their provenance. Results go to perf/results/ (git-ignored) as JSON."""
