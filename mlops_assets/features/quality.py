"""Data-quality metrics of a feature table: completeness, duplicates, freshness, validity.

Computed in one SQL pass over the staged rows (before the contract), so they describe what
came in; the contract's verdict adds validity. Recorded per run as asset metadata, they become
the time series the Dagster UI plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb

from mlops_assets.features.engineering import STAGED
from mlops_assets.features.validation import staged_columns
from mlops_assets.sql import ident, qualified


@dataclass
class QualityMetrics:
    rows: int
    completeness: dict[str, float] = field(default_factory=dict)  # share of present values
    duplicate_rows: int = 0  # rows repeating an application id an earlier row has
    newest_applied_at: datetime | None = None

    def freshness_hours(self, now: datetime) -> float | None:
        """Hours between ``now`` and the newest application (how stale the table is)."""
        if self.newest_applied_at is None:
            return None
        return (now - self.newest_applied_at).total_seconds() / 3600


def measure_quality(con: duckdb.DuckDBPyConnection, table: str = STAGED) -> QualityMetrics:
    types = {name: t for name, t in staged_columns(con, table).items() if not name.startswith("_")}

    def present_sql(name: str, duck_type: str) -> str:
        if duck_type in ("DOUBLE", "FLOAT"):  # NaN is as missing as NULL
            return f"count(*) filter (where {ident(name)} is not null and not isnan({ident(name)}))"
        return f"count({ident(name)})"

    selects = ["count(*)"] + [present_sql(n, t) for n, t in types.items()]
    has_id = "application_id" in types
    selects.append("count(*) - count(distinct application_id)" if has_id else "0")
    selects.append("max(applied_at)" if "applied_at" in types else "null")
    selects_sql = ", ".join(selects)
    row = con.execute(f"select {selects_sql} from {qualified(*table.split('.'))}").fetchall()[0]
    rows, counts, duplicates, newest = row[0], row[1:-2], row[-2], row[-1]
    return QualityMetrics(
        rows=rows,
        completeness={n: (c / rows if rows else 1.0) for n, c in zip(types, counts, strict=True)},
        duplicate_rows=int(duplicates),
        newest_applied_at=newest,
    )
