"""Landing-file discovery: which files of a source are in the landing folder, which day each
belongs to, and which are not yet loaded (the ledger ``audit.ingested_files``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

import duckdb

FILE_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})\.csv$")


def partition_key_of(path: Path) -> str | None:
    """The landing date a file belongs to, from its name ``YYYY-MM-DD.csv``."""
    match = FILE_NAME.match(path.name)
    return match.group(1) if match else None


def landing_files(
    landing_dir: Path, source: str, partition_keys: Iterable[str] | None = None
) -> list[Path]:
    """The files of ``source`` in the landing directory, oldest first; hidden files are ignored."""
    folder = Path(landing_dir) / source
    if not folder.is_dir():
        return []
    wanted = set(partition_keys) if partition_keys is not None else None
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if wanted is None:
        return files
    return [p for p in files if partition_key_of(p) in wanted or partition_key_of(p) is None]


def ledger_hashes(con: duckdb.DuckDBPyConnection | None, source: str) -> dict[str, str]:
    """Landing path -> sha256 of the content the ledger says is loaded ({} before any load)."""
    if con is None:
        return {}
    exists = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'audit' and table_name = 'ingested_files'"
    ).fetchone()[0]
    if not exists:
        return {}
    rows = con.execute(
        "select path, sha256 from audit.ingested_files where source = ?", [source]
    ).fetchall()
    return dict(rows)


def pending_files(
    con: duckdb.DuckDBPyConnection | None, landing_dir: Path, source: str
) -> list[Path]:
    """Files of ``source`` whose current content is not loaded: new, changed, or failed before."""
    loaded = ledger_hashes(con, source)
    return [
        path
        for path in landing_files(landing_dir, source)
        if loaded.get(path.relative_to(landing_dir).as_posix()) != sha256_of(path)
    ]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
