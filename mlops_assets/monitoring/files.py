"""Input files: Parquet is read as it is; CSV is converted to Parquet once by DuckDB (parallel,
typed by DuckDB's sniffer), so the engine always reads one column at a time."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mlops_assets.monitoring.engine import DriftInputError

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


def _convert(path: Path, target: Path) -> Path:
    if path.suffix.lower() in (".parquet", ".pq"):
        return path
    import duckdb

    with duckdb.connect() as con:
        try:
            con.execute(
                "copy (select * from read_csv(?, header = true)) to ? (format parquet)",
                [str(path), str(target)],
            )
        except duckdb.Error as error:
            raise DriftInputError(f"{path}: cannot read as CSV: {error}") from error
    return target
