"""Landing-file discovery: which entries of a source's landing folder are files to ingest, which
landing day each belongs to, which are not yet loaded (the ledger ``audit.ingested_files``), and
which are refused (the ledger ``audit.refused_files``).

A landing file is a regular file named ``YYYY-MM-DD.csv`` for a calendar date no later than the
latest landing day (today plus a horizon, ``MLOPS_LANDING_HORIZON_DAYS``). Anything else in the
folder is refused, reported by name, and never read: a name that is not such a date (other
scripts' digits, a trailing line break, ``2025-02-30``), a future date, a symbolic link (never
followed, dangling or not), a folder, a FIFO, a socket or a device. Hidden entries (dot-files)
are ignored. A refused entry never reaches the partitions, so it cannot fail a run.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import duckdb

from mlops_assets.text import printable

# ASCII digits only, and \Z: "$" would also match before a trailing line break in the name.
FILE_NAME = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})\.csv\Z", re.ASCII)
REFUSED_TABLE = "audit.refused_files"


@dataclass(frozen=True)
class RefusedFile:
    """A landing entry that is not ingested, and why. ``path`` is as found (relative to the
    landing directory): show it through :func:`printable` or ``md_text``."""

    path: str
    source: str
    reason: str

    @property
    def text(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class LandingScan:
    files: list[Path]  # the source's landing files, oldest first
    refused: list[RefusedFile]


def latest_landing_day(horizon_days: int) -> date:
    """The latest day a landing file may be named for: today plus ``horizon_days``, in UTC like
    the daily partitions."""
    return datetime.now(UTC).date() + timedelta(days=horizon_days)


def partition_key_of(path: Path) -> str | None:
    """The landing day a file belongs to, from its name ``YYYY-MM-DD.csv``; None unless the name
    is exactly that, for a calendar date."""
    match = FILE_NAME.match(path.name)
    if match is None:
        return None
    try:
        date.fromisoformat(match.group(1))
    except ValueError:
        return None
    return match.group(1)


def scan_landing(landing_dir: Path, source: str, latest: date | None = None) -> LandingScan:
    """The landing files of ``source`` and the refused entries beside them (see the module
    docstring). Nothing is opened and no link is followed: entries are judged by ``lstat``.
    ``latest`` is the latest landing day accepted (None: no limit)."""
    folder = Path(landing_dir) / source
    try:
        mode = os.lstat(folder).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return LandingScan([], [])
    if not stat.S_ISDIR(mode):
        return LandingScan([], [RefusedFile(source, source, f"{_kind(mode)}, not a folder")])
    files, refused = [], []
    for name in sorted(os.listdir(folder)):
        if name.startswith("."):
            continue
        path = folder / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:  # removed since the listing
            continue
        reason = _refusal(path, mode, latest)
        if reason:
            refused.append(RefusedFile(f"{source}/{name}", source, reason))
        else:
            files.append(path)
    return LandingScan(files, refused)


def _refusal(path: Path, mode: int, latest: date | None) -> str | None:
    if not stat.S_ISREG(mode):
        return f"{_kind(mode)}, not a regular file — never read"
    match = FILE_NAME.match(path.name)
    if match is None:
        return "not named YYYY-MM-DD.csv (its landing day, in ASCII digits)"
    if partition_key_of(path) is None:
        return f"{match.group(1)} is not a calendar date"
    if latest is not None and date.fromisoformat(match.group(1)) > latest:
        return (
            f"dated after {latest}, the latest landing day accepted "
            "(today + MLOPS_LANDING_HORIZON_DAYS)"
        )
    return None


def _kind(mode: int) -> str:
    kinds = [
        (stat.S_ISLNK, "a symbolic link (links are not followed)"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
    ]
    return next((kind for test, kind in kinds if test(mode)), "a special file")


def landing_files(
    landing_dir: Path,
    source: str,
    partition_keys: Iterable[str] | None = None,
    latest: date | None = None,
) -> list[Path]:
    """The landing files of ``source``, oldest first (only those of ``partition_keys`` if
    given); refused entries are left out (:func:`scan_landing` lists them)."""
    files = scan_landing(landing_dir, source, latest).files
    if partition_keys is None:
        return files
    wanted = set(partition_keys)
    return [p for p in files if partition_key_of(p) in wanted]


def record_refused(con: duckdb.DuckDBPyConnection, source: str, refused: list[RefusedFile]) -> None:
    """Make ``audit.refused_files`` list exactly the entries of ``source`` refused now (a file
    renamed, removed or fixed since drops out). Paths are stored as shown (:func:`printable`)."""
    con.execute("create schema if not exists audit")
    con.execute(
        f"create table if not exists {REFUSED_TABLE} (path varchar primary key, "
        "source varchar not null, reason varchar not null, seen_at timestamp not null)"
    )
    con.execute("begin transaction")
    try:
        con.execute(f"delete from {REFUSED_TABLE} where source = ?", [source])
        if refused:
            con.executemany(
                f"insert into {REFUSED_TABLE} values (?, ?, ?, now())",
                [[printable(r.path), r.source, r.reason] for r in refused],
            )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise


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
    con: duckdb.DuckDBPyConnection | None,
    landing_dir: Path,
    source: str,
    latest: date | None = None,
) -> list[Path]:
    """Landing files of ``source`` whose current content is not loaded: new, changed, failed
    before, or unreadable now (ingestion then reports why)."""
    loaded = ledger_hashes(con, source)
    return [
        path
        for path in landing_files(landing_dir, source, latest=latest)
        if loaded.get(path.relative_to(landing_dir).as_posix()) != sha256_or_none(path)
    ]


class NotARegularFile(OSError):
    """A landing file was replaced by a link, a FIFO or a folder after the scan."""

    def __init__(self, path: Path) -> None:
        super().__init__(errno.EINVAL, "not a regular file (replaced since it was found)", path)


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file. A symbolic link is not
    followed and anything else (a FIFO put in the file's place) raises
    :class:`NotARegularFile` at once instead of blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:  # a symbolic link
            raise NotARegularFile(path) from None
        raise
    handle = open(fd, "rb")  # noqa: SIM115 (the caller closes it)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        raise NotARegularFile(path)
    return handle


def sha256_of(path: Path) -> str:
    """The sha256 of a regular file's content (:func:`open_regular`)."""
    with open_regular(path) as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def sha256_or_none(path: Path) -> str | None:
    """:func:`sha256_of`, or None for a file that is gone or cannot be read (since the scan)."""
    try:
        return sha256_of(path)
    except OSError:
        return None
