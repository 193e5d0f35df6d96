"""docs/reliability.md is the fault list: each row a fault, its expected outcome and the
tests that cause it. These tests keep that list true: every test it names exists, every
row names one or says why it is not tested, and the faults sslreg promises to survive
are all on it."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
# The section whose rows name bare test functions, and the file those live in.
DEFAULT_FILES = {"Checkpoints, signals and faults": "tests/test_resume.py"}
# A fault each of these words appears in must be on the list (case-insensitive).
PROMISED = ["SIGKILL inside a checkpoint write", "disk full (ENOSPC) while writing a checkpoint",
            "disk full while writing `result.json`", "damaged `index.sqlite`",
            "index locked", "run directory deleted", "plugin that raises inside a hook",
            "NaN or infinite loss", "worker killed (SIGKILL) while it holds a claim",
            "SIGTERM", "Ctrl-C"]


def fault_rows() -> list[tuple[str, str, str, str]]:
    """``(section, fault, outcome, tests)`` for every table row of the doc."""
    rows, section = [], ""
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 3 or cells[0] in ("fault", "---"):
            continue
        rows.append((section, *cells))
    return rows


def named_tests(section: str, cell: str) -> list[tuple[str, str]]:
    """``(file, function)`` for each test the cell names: ``tests/f.py::name``,
    ``::name`` (in the file named before it) or a bare ``test_name`` (the section's
    default file)."""
    found, current = [], DEFAULT_FILES.get(section)
    for token in re.findall(r"`([^`]+)`", cell):
        path, sep, name = token.rpartition("::")
        if sep and path:
            current = path
        elif not sep and not token.startswith("test_"):
            continue  # a command or a file in the text, not a test
        found.append((current, name if sep else token))
    return found


def functions_in(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_the_fault_list_has_rows_in_each_section() -> None:
    sections = {section for section, *_ in fault_rows()}
    assert {"Checkpoints, signals and faults", "Suites, workers and the run index"} <= sections
    assert len(fault_rows()) >= 20


@pytest.mark.parametrize("row", fault_rows(), ids=lambda row: row[1][:40])
def test_each_fault_names_existing_tests_or_says_why_not(row) -> None:
    section, fault, outcome, tests = row
    assert outcome, f"{fault}: no expected outcome"
    names = named_tests(section, tests)
    if not names:
        assert re.match(r"not tested\b.*\(.+\)", tests), \
            f"{fault}: names no test and does not say why it is not tested: {tests!r}"
        return
    for path, name in names:
        assert path is not None, f"{fault}: {name} names no file"
        assert name in functions_in(path), f"{fault}: {path}::{name} does not exist"


def test_every_promised_fault_is_on_the_list() -> None:
    faults = " ".join(fault for _, fault, _, _ in fault_rows()).lower()
    missing = [fault for fault in PROMISED if fault.lower() not in faults]
    assert not missing, f"docs/reliability.md lists no row for: {missing}"


def test_the_parser_reads_each_way_of_naming_a_test() -> None:
    cell = ("`tests/a.py::test_one`, `::test_two`, `test_three` (slow), `$SSLREG_LEASE_S`")
    assert named_tests("Checkpoints, signals and faults", cell) == [
        ("tests/a.py", "test_one"), ("tests/a.py", "test_two"), ("tests/a.py", "test_three")]
    assert named_tests("Checkpoints, signals and faults", "`test_x`") == [
        ("tests/test_resume.py", "test_x")]
