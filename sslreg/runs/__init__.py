"""Run directories."""

from sslreg.runs.index import RunIndex, add_suite, open_index
from sslreg.runs.layout import RunDir, data_label, path_safe, write_json, write_text

__all__ = ["RunDir", "RunIndex", "add_suite", "data_label", "open_index", "path_safe",
           "write_json", "write_text"]
