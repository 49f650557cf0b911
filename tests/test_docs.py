"""The documentation: the CLI reference is the typer app's own, and no page carries history.

The site itself is built by `make docs-build` (`mkdocs build --strict`), which `make test` runs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_the_cli_reference_is_generated_from_the_typer_app(tmp_path: Path) -> None:
    fresh = tmp_path / "cli.md"
    generate = [sys.executable, "-m", "typer", "mlops_assets.cli", "utils", "docs"]
    subprocess.run(
        [*generate, "--name", "mlops", "--output", str(fresh)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    assert (DOCS / "cli.md").read_text() == fresh.read_text(), (
        "docs/cli.md is stale: regenerate it with `make docs-cli`"
    )


# What history looks like in prose. A changelog holds history by design, but names no issue
# and no commit either.
ISSUES_AND_COMMITS = [
    re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE),
    re.compile(r"`[0-9a-f]{7,40}`"),
    re.compile(r"\b(?:at|since|before|after) commit\b", re.IGNORECASE),
]
HISTORY = [
    re.compile(r"\bbefore issue\b", re.IGNORECASE),
    re.compile(r"\bthis issue\b", re.IGNORECASE),
    re.compile(r"\bas measured for\b", re.IGNORECASE),
    re.compile(r"\bbefore (?:these|this|the last) (?:changes?|round|sessions?)\b", re.IGNORECASE),
    re.compile(r"\(was [\d.,]+"),
]


def _pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("page", _pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_no_page_carries_history(page: Path) -> None:
    patterns = ISSUES_AND_COMMITS if page.name == "CHANGELOG.md" else ISSUES_AND_COMMITS + HISTORY
    found = [
        f"line {number}: {match.group(0)!r}"
        for number, line in enumerate(page.read_text().splitlines(), start=1)
        for pattern in patterns
        if (match := pattern.search(line))
    ]
    assert not found, f"{page.relative_to(ROOT)} carries history (it goes to CHANGELOG.md): " + (
        "; ".join(found)
    )


def test_the_history_patterns_catch_history_and_spare_the_rest() -> None:
    history = [
        "Before issue 7: 85.6 s",
        "as measured for issue 6",
        "16 min 49 s at `6ce5f82`",
        "training 0.33 s (was 19.5 s)",
        "Before these changes the same command took 1.9 s",
    ]
    plain = [
        "numpy/x86-simd-sort#6 runs in microcode",
        "an issue with the keyring",
        "Measured 2026-12-01 on this machine",
    ]
    every = ISSUES_AND_COMMITS + HISTORY
    assert all(any(p.search(text) for p in every) for text in history)
    assert not [text for text in plain if any(p.search(text) for p in every)]


TEST_REFERENCE = re.compile(r"tests/[\w/]+\.py(?:::\w+)*")


def test_every_test_the_docs_name_exists() -> None:
    """A guarantee cites the test that proves it (``tests/….py::name``): the file and the
    function must exist, or the citation proves nothing. Paths of Evidently's own suite, which
    a page cites as the source of ported cases, are not this repository's."""
    import ast

    missing = []
    for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for paragraph in page.read_text().split("\n\n"):
            if "Evidently's own" in paragraph:
                continue
            for reference in TEST_REFERENCE.findall(paragraph):
                path, *names = reference.split("::")
                if not (ROOT / path).is_file():
                    missing.append(f"{page.name}: {reference}")
                    continue
                tree = ast.parse((ROOT / path).read_text())
                defined = {
                    node.name
                    for node in ast.walk(tree)
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                }
                missing += [f"{page.name}: {reference}" for n in names if n not in defined]
    assert missing == []
