"""Run directories."""

from sslreg.runs.layout import RunDir, write_json, write_text

__all__ = ["RunDir", "write_json", "write_text"]
