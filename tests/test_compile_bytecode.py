"""`make install`'s bytecode step (tools/compile_bytecode.py): every module compiled where Python
will look for it, the packages' test suites left out, a module already compiled not compiled
again, and a file that is not Python counted instead of stopping the install."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "compile_bytecode.py"
_spec = importlib.util.spec_from_file_location("compile_bytecode", SCRIPT)
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def cached(source: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(source)))


def package(root: Path) -> dict[str, Path]:
    """A package as site-packages holds one: modules, a nested package, test suites in
    ``tests/`` folders, modules merely named like tests (Dagster imports its ``_utils/test``),
    and a module with a syntax error."""
    files = {
        "init": root / "pkg" / "__init__.py",
        "module": root / "pkg" / "core.py",
        "nested": root / "pkg" / "sub" / "deep.py",
        "named_like_a_test": root / "pkg" / "tests.py",
        "testing_helpers": root / "pkg" / "testing" / "helpers.py",
        "suite": root / "pkg" / "tests" / "test_core.py",
        "test_helpers": root / "pkg" / "sub" / "test" / "helpers.py",
        "suite_nested": root / "pkg" / "sub" / "tests" / "test_deep.py",
        "broken": root / "pkg" / "broken.py",
    }
    for name, path in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("def f(:\n" if name == "broken" else f"VALUE = {name!r}\n")
    (root / "pkg" / "data.txt").write_text("not a module")
    return files


def test_every_module_but_the_test_suites_is_compiled_where_python_looks(tmp_path):
    files = package(tmp_path)
    modules, failed = tool.compile_modules([str(tmp_path)], workers=1)
    assert (modules, failed) == (6, 1)
    compiled = {name for name, path in files.items() if cached(path).exists()}
    assert compiled == {
        "init", "module", "nested", "named_like_a_test", "testing_helpers", "test_helpers"
    }  # fmt: skip
    assert not (tmp_path / "pkg" / "tests" / "__pycache__").exists()


def test_a_current_module_is_left_alone_and_a_changed_one_compiled_again(tmp_path):
    files = package(tmp_path)
    tool.compile_modules([str(tmp_path)], workers=1)
    unchanged, changed = cached(files["module"]), cached(files["nested"])
    # Bytecode is written to a new file renamed into place: a new inode when written again.
    before = {path: path.stat().st_ino for path in (unchanged, changed)}
    files["nested"].write_text("VALUE = 'changed, and longer than before'\n")
    tool.compile_modules([str(tmp_path)], workers=1)
    assert unchanged.stat().st_ino == before[unchanged]
    assert changed.stat().st_ino != before[changed]


def test_the_bytecode_written_is_what_python_imports_without_writing_its_own(tmp_path):
    files = package(tmp_path)
    tool.compile_modules([str(tmp_path)], workers=1)
    pyc = cached(files["nested"])
    # Replace the compiled module's constant inside its bytecode: an import that uses the
    # cache (and does not compile the source) sees the replacement.
    pyc.write_bytes(pyc.read_bytes().replace(b"nested", b"cached"))
    result = subprocess.run(
        [sys.executable, "-c", "import pkg.sub.deep as m; print(m.VALUE)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "cached"


def test_the_command_compiles_its_folders_and_says_how_many(tmp_path):
    package(tmp_path)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert result.stdout == "bytecode: 6 modules current, 1 not compilable, test suites left out\n"
    assert cached(tmp_path / "pkg" / "core.py").exists()
    assert not cached(tmp_path / "pkg" / "tests" / "test_core.py").exists()
