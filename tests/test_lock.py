"""`make` installs with `uv sync --frozen`, which trusts uv.lock without comparing it to
pyproject.toml: a dependency added, removed or re-ranged there but not locked would go
unnoticed. The lock records the project's requirements as it resolved them; they must be
pyproject.toml's, and the project's version the package's."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _locked_project() -> dict:
    name = _pyproject()["project"]["name"]
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (project,) = [package for package in lock["package"] if package["name"] == name]
    return project


def _declared() -> set[tuple]:
    project = _pyproject()["project"]
    requirements = [(text, None) for text in project["dependencies"]]
    for extra, texts in project.get("optional-dependencies", {}).items():
        requirements += [(text, extra) for text in texts]
    declared = set()
    for text, extra in requirements:
        requirement = Requirement(text)
        declared.add(
            (
                requirement.name.lower(),
                frozenset(requirement.extras),
                str(requirement.specifier),
                extra,
            )
        )
    return declared


def _locked() -> set[tuple]:
    locked = set()
    for entry in _locked_project()["metadata"]["requires-dist"]:
        marker = entry.get("marker", "")
        extra = marker.split("==")[1].strip(" '\"") if marker.startswith("extra ==") else None
        locked.add(
            (
                entry["name"].lower(),
                frozenset(entry.get("extras", ())),
                str(Requirement(f"x{entry.get('specifier', '')}").specifier),
                extra,
            )
        )
    return locked


def test_the_lock_is_pyprojects() -> None:
    declared, locked = _declared(), _locked()
    assert declared == locked, (
        "uv.lock does not match pyproject.toml: run `make lock` and commit uv.lock. "
        f"Only in pyproject.toml: {sorted(declared - locked)}; "
        f"only in uv.lock: {sorted(locked - declared)}"
    )
    assert _locked_project()["version"] == _pyproject()["project"]["version"]


def test_the_lock_fetches_from_pypi_only() -> None:
    """A clean machine reads the lock: no package may come from this machine's disk."""
    text = (ROOT / "uv.lock").read_text()
    assert "file://" not in text
    assert 'registry = "https://pypi.org/simple"' in text


def test_uv_finds_the_lock_current() -> None:
    """uv's own comparison, offline: also an environment marker or requires-python changed in
    pyproject.toml, and a lock edited by hand (a version that is not its wheels')."""
    uv = shutil.which("uv") or str(ROOT / ".venv-uv" / "bin" / "uv")
    assert Path(uv).exists(), "no uv: `make install` puts one in .venv-uv/"
    checked = subprocess.run(
        [uv, "lock", "--check", "--offline", "--no-python-downloads", "--python", sys.executable],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, (
        "uv.lock is not current: run `make lock` and commit uv.lock\n" + checked.stderr
    )


def test_make_install_syncs_even_when_the_stamp_is_current(tmp_path: Path) -> None:
    """A .venv whose interpreter was removed (a pyenv or Homebrew Python upgraded) is repaired
    by `make install`, not called up to date because .venv/.installed is newer than the lock."""
    stamp = tmp_path / "installed"
    stamp.touch()  # newer than pyproject.toml and uv.lock
    dry = subprocess.run(
        ["make", "-n", "install", f"STAMP={stamp}", f"UV={shutil.which('true')}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    assert " sync --frozen " in dry.stdout, dry.stdout
