"""`mlops` alone: which home the commands would use, what it holds, and what to run next.

It only looks (directory listings and file sizes): nothing is created, no warehouse is opened,
nothing heavy is imported. A home that is a file, cannot be read or holds odd characters is
described, never a traceback; every path is printed with its control characters escaped."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mlops_assets.text import printable

# What `mlops run` ingests, without importing it (Dagster, DuckDB): a regular file named
# YYYY-MM-DD.csv (mlops_assets.ingestion.landing.FILE_NAME) in the folder of a feed declared
# under mlops_assets/defs/sources/ (one folder per feed, named after it).
FILE_NAME = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})\.csv\Z", re.ASCII)
SOURCES_DIR = Path(__file__).resolve().parents[1] / "defs" / "sources"


def feeds() -> list[str]:
    """The landing feeds' names, from the folders of their declarations."""
    return sorted(p.parent.name for p in SOURCES_DIR.glob("*/defs.yaml"))


@dataclass
class HomeState:
    path: str  # as resolved, or as given when it could not be resolved
    problem: str | None = None  # why it cannot be used as a home; None when it can
    exists: bool = False
    landing: dict[str, int] = field(default_factory=dict)  # source -> files
    warehouse_bytes: int | None = None
    models: int = 0  # models with at least one registered version
    from_environment: bool = True  # MLOPS_HOME is set (else the default, .mlops here)


def look(path: Path) -> HomeState:
    """What ``path`` (a resolved home) holds, read-only; an unreadable part is a problem."""
    state = HomeState(str(path))
    try:
        if not path.exists():
            return state
        if not path.is_dir():
            state.problem = "it is not a directory: set MLOPS_HOME to a directory"
            return state
        state.exists = True
        # Only what a run would read: a feed's own folder (a link to one is refused there), its
        # files as named above; one listing of the landing folder however much else it holds.
        known = set(feeds())
        for source in _subdirectories(path / "landing"):
            if source.name in known and not source.is_symlink():
                with os.scandir(source.path) as entries:
                    state.landing[source.name] = sum(
                        1
                        for entry in entries
                        if FILE_NAME.match(entry.name) and entry.is_file(follow_symlinks=False)
                    )
        warehouse = path / "warehouse.duckdb"
        if warehouse.is_file():
            state.warehouse_bytes = warehouse.stat().st_size
        models = _subdirectories(path / "models")
        state.models = sum(1 for model in models if _has_subdirectory(model))
    except OSError as error:
        state.problem = f"it cannot be read ({error.strerror or error})"
    return state


def _subdirectories(path: Path) -> list[os.DirEntry]:
    if not path.is_dir():
        return []
    with os.scandir(path) as entries:
        return sorted((e for e in entries if e.is_dir()), key=lambda e: e.name)


def _has_subdirectory(path: os.DirEntry) -> bool:
    with os.scandir(path.path) as entries:
        return any(entry.is_dir() for entry in entries)


def describe(state: HomeState, version: str) -> list[str]:
    """The lines `mlops` prints: the home, what it holds, the commands to run next."""
    lines = [
        f"mlops {version}: the MLOps data platform (`mlops --help` lists every command)",
        f"home: {printable(state.path)}  "
        + ("(MLOPS_HOME)" if state.from_environment else "(MLOPS_HOME unset: .mlops here)"),
    ]
    if state.problem:
        return [*lines, f"  cannot be used: {printable(state.problem)}"]
    files = sum(state.landing.values())
    if not state.exists:
        lines.append("  not created yet: the first command that writes creates it")
    else:
        lines.append(
            "  landing files: "
            + (
                ", ".join(f"{printable(s)} {n}" for s, n in state.landing.items() if n)
                if files
                else "none"
            )
        )
        lines.append(
            f"  warehouse: {state.warehouse_bytes / 1e6:,.1f} MB"
            if state.warehouse_bytes is not None
            else "  warehouse: none yet"
        )
        lines.append(f"  registered models: {state.models}")
    lines.append("next:")
    if state.warehouse_bytes is not None:
        lines += [
            "  mlops ui            browse the assets, runs and checks in Dagster",
            "  mlops models list   the registered model versions and the champion",
            "  mlops run           again after new landing files arrive",
        ]
    elif files:
        lines.append("  mlops run           ingest the landing files and build every asset")
    else:
        lines += [
            "  mlops generate      write sample landing files (`make demo` also runs them)",
            "  mlops run           then ingest them and build every asset",
        ]
    return lines


def home_state() -> HomeState:
    """The home every other command would use (:func:`mlops_assets.settings.get_settings`)."""
    from mlops_assets.settings import get_settings

    from_environment = "MLOPS_HOME" in os.environ
    try:
        state = look(get_settings().home)
    except (ValueError, RuntimeError, OSError) as error:  # a setting refused, a symlink loop
        state = HomeState(os.environ.get("MLOPS_HOME", ".mlops"), problem=str(error))
    state.from_environment = from_environment
    return state
