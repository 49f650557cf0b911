"""Input files: Parquet is read as it is; CSV is converted to Parquet once by DuckDB (parallel,
typed by DuckDB's sniffer), so the engine always reads one column at a time.

A user's file is untrusted (its column names too): DuckDB gets its path as a parameter and
names through ``mlops_assets.sql``, in an in-memory database that can reach only the folders
of its inputs and output (:func:`confined_connection`)."""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_assets.drift.engine import DriftInputError

if TYPE_CHECKING:
    import duckdb

SUFFIXES = (".parquet", ".pq", ".csv", ".tsv")


@contextlib.contextmanager
def as_parquet(*paths: Path) -> Iterator[list[Path]]:
    """The Parquet version of each input: the file itself, or a temporary conversion."""
    for path in paths:
        if not Path(path).is_file():
            raise DriftInputError(f"{path}: no such file")
        if Path(path).suffix.lower() not in SUFFIXES:
            raise DriftInputError(f"{path}: expected a CSV or Parquet file ({', '.join(SUFFIXES)})")
    with tempfile.TemporaryDirectory(prefix="mlops-drift-") as tmp:
        yield [_convert(Path(p), Path(tmp) / f"{i}.parquet") for i, p in enumerate(paths)]


def confined_connection(*paths: Path) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB database whose SQL can reach only the folders of ``paths``: even
    a name that slipped into SQL unquoted could read or write no other file. It is a database
    of its own, so switching its file access off changes no other connection."""
    import duckdb  # (and mlops_assets.sql, which imports it): only a CSV needs DuckDB

    from mlops_assets.sql import confine

    con = duckdb.connect()
    confine(con, sorted({str(Path(p).resolve().parent) for p in paths}))
    return con


def _convert(path: Path, target: Path) -> Path:
    if path.suffix.lower() in (".parquet", ".pq"):
        return path
    import duckdb

    from mlops_assets.sql import glob_literal

    path, target = path.resolve(), target.resolve()
    with confined_connection(path, target) as con:
        try:
            con.execute(
                "copy (select * from read_csv(?, header = true)) to ? (format parquet)",
                [glob_literal(path), str(target)],
            )
        except duckdb.Error as error:
            raise DriftInputError(f"{path}: cannot read as CSV: {_csv_error(error)}") from None
    return target


def _csv_error(error: Exception) -> str:
    """What went wrong, without DuckDB's message: it quotes the file's rows ("Original Line"),
    and a row is data."""
    message = str(error)
    line = re.search(r"on line:? (\d+)", message, re.IGNORECASE)
    where = f" on line {line.group(1)}" if line else ""
    if "utf-8" in message.lower():
        return f"it is not UTF-8 text{where} (convert it to UTF-8, e.g. with iconv)"
    return f"{type(error).__name__}{where}"
