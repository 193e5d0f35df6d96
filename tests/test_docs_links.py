"""The docs cite only what the repository holds, so a newcomer can follow every pointer.

Checked: README.md, CONTRIBUTING.md and docs/*.md, outside fenced code blocks.

* Every relative Markdown link ``[text](target)`` (not ``http:``/``https:``/``mailto:``,
  not a bare ``#anchor``) names a file or folder that exists, relative to the document;
  an ``#anchor`` after the path is ignored.
* Every word of a backticked span that looks like a repository path, i.e. contains a
  ``/`` and starts with a top-level folder of the repository (``sslreg/``, ``plugins/``,
  ``benchmarks/``, ``docs/``, ``tests/``), exists relative to the repository root. A
  trailing ``:LINE`` or ``::test_name`` is dropped; words with a placeholder
  (``<name>``, ``{x}``, ``NAME``, ``*``, ``...``) are skipped.
* Every backticked bare ``*.md`` file name is a file somewhere in the repository (so no
  document cites a design note that only some checkouts have).

``NOT_IN_REPO`` lists the few cited paths that are not meant to be in the repository,
each with the reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_FOLDERS = {"sslreg", "plugins", "benchmarks", "docs", "tests"}

NOT_IN_REPO = {
    "benchmarks/results/gpu-check.md": "benchmarks/gpu_check.sh writes it on a GPU machine",
    "tests/test_mymethod.py": "inside the distribution `sslreg new-plugin mymethod` writes",
    "MODEL_CARD.md": "`sslreg export` writes it beside the exported weights",
}

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")
PLACEHOLDER = re.compile(r"[<>{}*]|NAME|\.\.\.")


def prose(doc: Path) -> str:
    return FENCE.sub("", doc.read_text())


def cited_links(doc: Path) -> list[str]:
    return [t for t in LINK.findall(prose(doc))
            if not re.match(r"(https?|mailto):", t) and not t.startswith("#")]


def cited_paths(doc: Path) -> list[str]:
    words = (w.strip(".,;:()\"'") for span in CODE.findall(prose(doc)) for w in span.split())
    return [re.split(r"::|:(?=\d)", w)[0] for w in words
            if "/" in w and w.split("/")[0] in TOP_FOLDERS and not PLACEHOLDER.search(w)]


def cited_markdown_names(doc: Path) -> list[str]:
    words = (w.strip(".,;:()\"'") for span in CODE.findall(prose(doc)) for w in span.split())
    return [w for w in words if re.fullmatch(r"[\w.-]+\.md", w)]


def markdown_names() -> set[str]:
    """Names of the repository's Markdown files, hidden folders (.git, .venv) skipped."""
    names: set[str] = set()
    for _folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [s for s in subfolders if not s.startswith(".")]
        names.update(f for f in files if f.endswith(".md"))
    return names


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_relative_links_exist(doc: Path) -> None:
    missing = [t for t in cited_links(doc) if not (doc.parent / t.split("#")[0]).exists()]
    assert not missing, f"{doc.name} links to missing files: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_backticked_repo_paths_exist(doc: Path) -> None:
    missing = [p for p in cited_paths(doc)
               if p not in NOT_IN_REPO and not (ROOT / p).exists()]
    assert not missing, f"{doc.name} cites missing paths: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_cited_markdown_files_exist(doc: Path) -> None:
    present = markdown_names()
    missing = [n for n in cited_markdown_names(doc) if n not in NOT_IN_REPO
               and n not in present]
    assert not missing, f"{doc.name} cites Markdown files the repository lacks: {missing}"


def test_the_rule_sees_paths() -> None:
    """Guard against a rule that silently checks nothing."""
    assert "sslreg/hookspecs.py" in cited_paths(ROOT / "docs" / "architecture.md")
    assert any(t.startswith("docs/") for t in cited_links(ROOT / "README.md"))
