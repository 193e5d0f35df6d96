"""Benchmark suites, the runner, and the comparison table."""

from sslreg.bench.runner import run_suite
from sslreg.bench.suite import Suite, load_suite, parse_suite

__all__ = ["Suite", "load_suite", "parse_suite", "run_suite"]
