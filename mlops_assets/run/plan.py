"""What `mlops run` runs: refuse a home that cannot be written or has nothing to ingest, and
pick the landing days with new or changed files (and those of runs that did not finish)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlops_assets import catalogue
from mlops_assets.ingestion.landing import (
    RefusedFile,
    landing_files,
    latest_landing_day,
    partition_key_of,
    pending_files,
    scan_landing,
)
from mlops_assets.security.keyring import KeyringError
from mlops_assets.security.vault import ensure_keyring
from mlops_assets.settings import Settings
from mlops_assets.text import printable
from mlops_assets.warehouse import connection


class RunSetupError(RuntimeError):
    """The run cannot start: nothing to ingest, or landing files outside the partitions."""


@dataclass
class RunPlan:
    """The landing days to ingest (``new_days``), what to tell the user before the run, and
    the landing entries that are refused."""

    new_days: list[str]
    notices: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "path: reason", shown as text


def check_writable(home: Path) -> None:
    """Refuse to start in a home that cannot be written (read-only file system, permissions,
    a full disk), before anything is half done."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".write-check-") as probe:
            probe.write(b"\0" * 65536)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise RunSetupError(
            f"MLOPS_HOME {home} cannot be written: {error.strerror}. Make it writable (or free "
            "space) and run again; nothing was changed"
        ) from None


def landing_dates(settings: Settings, *, pending_only: bool = False) -> list[str]:
    """Landing days with at least one file of any feed (only new or changed files with
    ``pending_only``).

    Refused entries (:func:`refused_landing_files`) count on no day: they never reach the
    partitions."""
    return sorted({partition_key_of(p) for p in _landing_paths(settings, pending_only)})


def _landing_paths(settings: Settings, pending_only: bool) -> list[Path]:
    latest = latest_landing_day(settings.landing_horizon_days)
    landing = settings.landing_dir
    feeds = catalogue.sources()
    if pending_only and settings.warehouse_path.exists():
        with connection(
            settings.warehouse_path, read_only=True, memory_limit=settings.duckdb_memory_limit
        ) as con:
            paths = [p for feed in feeds for p in pending_files(con, landing, feed, latest)]
    else:
        paths = [p for feed in feeds for p in landing_files(landing, feed, latest=latest)]
    return paths


def refused_landing_files(settings: Settings) -> list[RefusedFile]:
    """Entries of the landing folders that are not ingested: a name that is not a landing day,
    a day past the horizon, a link, a folder, a FIFO… (ingestion records them in the ledger)."""
    latest = latest_landing_day(settings.landing_horizon_days)
    return [
        refused
        for feed in catalogue.sources()
        for refused in scan_landing(settings.landing_dir, feed, latest).refused
    ]


def plan_run(settings: Settings) -> RunPlan:
    """The days to ingest; RunSetupError when the run cannot start. Creates the keyring of a
    fresh home (and says so)."""
    check_writable(settings.home)
    dates = landing_dates(settings)
    refused = [printable(r.text) for r in refused_landing_files(settings)]
    if not dates:
        raise RunSetupError(
            f"no landing files under {settings.landing_dir}: run `mlops generate` first "
            "or drop <source>/<YYYY-MM-DD>.csv files there"
            + "".join(f"\n  refused {text}" for text in refused)
        )
    first = settings.first_landing_date
    if dates[0] < first:
        raise RunSetupError(
            f"landing files start on {dates[0]}, before the first partition {first}: "
            f"set MLOPS_FIRST_LANDING_DATE={dates[0]}"
        )
    try:
        notice = ensure_keyring(settings.keyring_path, settings.warehouse_path)
    except KeyringError as error:
        raise RunSetupError(str(error)) from None
    return RunPlan(
        new_days=landing_dates(settings, pending_only=True),
        notices=[notice] if notice else [],
        refused=refused,
    )


def landing_bytes(settings: Settings, days: list[str]) -> int:
    """The size of every landing file of ``days`` (``YYYY-MM-DD``), loaded before or not: the
    data a run over those days reads downstream."""
    wanted = set(days)
    return sum(
        _size(path)
        for path in _landing_paths(settings, pending_only=False)
        if partition_key_of(path) in wanted
    )


def _size(path: Path) -> int:
    """The file's size; 0 if it is gone (its ingestion says so)."""
    try:
        return path.lstat().st_size
    except OSError:
        return 0
