"""Benchmark suites, the runner, and the comparison table."""

from sslreg.suites.runner import run_suite
from sslreg.suites.suite import Suite, load_suite, parse_suite

__all__ = ["Suite", "load_suite", "parse_suite", "run_suite"]
