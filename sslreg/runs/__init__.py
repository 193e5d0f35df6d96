"""Run directories."""

from sslreg.runs.layout import RunDir, write_json

__all__ = ["RunDir", "write_json"]
