"""Find personal data where it must not be: identifier columns or identifier-shaped values."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from mlops_assets.ingestion.sources import identifier_name
from mlops_assets.sql import ident, literal, qualified

# Shapes of direct identifiers, matched against every text value.
IDENTIFIER_PATTERNS = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+",
    "phone": r"\+\d{1,3}[- ]\d{3}[- ]\d{3}[- ]\d{4}",
    "national_id": r"(^|[^0-9])\d{3}-\d{2}-\d{4}([^0-9]|$)",
}
ANY_IDENTIFIER = "|".join(f"(?:{pattern})" for pattern in IDENTIFIER_PATTERNS.values())


@dataclass(frozen=True)
class Finding:
    table: str
    column: str
    kind: str  # "identifier column" or a pattern name
    rows: int

    def __str__(self) -> str:  # never the values themselves
        return f"{self.table}.{self.column}: {self.kind} ({self.rows} rows)"


def find_identifiers(
    con: duckdb.DuckDBPyConnection, schema: str, table: str, identifier_names: frozenset[str]
) -> list[Finding]:
    """The identifier columns of ``schema.table`` (named, in any spelling, like one of
    ``identifier_names``: ``ingestion.sources.identifier_names``) and its text columns holding
    identifier-shaped values (:data:`IDENTIFIER_PATTERNS`). A missing table has none."""
    columns = con.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = ? and table_name = ? order by ordinal_position",
        [schema, table],
    ).fetchall()
    name = f"{schema}.{table}"
    findings = [
        Finding(name, column, "identifier column", 0)
        for column, _ in columns
        if identifier_name(column) in identifier_names
    ]
    text = [c for c, dtype in columns if dtype in ("VARCHAR", "JSON")]
    # One pass with the patterns as one alternation first: a clean table (the usual case) costs
    # a regular expression per column, not one per column and pattern (a third of the time);
    # only the columns where something matched are counted per pattern.
    matched = _match_counts(con, schema, table, text, [ANY_IDENTIFIER])
    text = [c for c, n in zip(text, matched, strict=True) if n]
    if not text:
        return findings
    row = _match_counts(con, schema, table, text, list(IDENTIFIER_PATTERNS.values()))
    cells = [(c, kind) for c in text for kind in IDENTIFIER_PATTERNS]
    findings += [
        Finding(name, column, kind, n) for (column, kind), n in zip(cells, row, strict=True) if n
    ]
    return findings


def _match_counts(con, schema: str, table: str, columns: list[str], patterns: list[str]) -> tuple:
    """Rows of each column matching each pattern, column by column, in one scan."""
    if not columns:
        return ()
    counts_sql = ", ".join(
        f"count(*) filter (where regexp_matches({ident(c)}::varchar, {literal(pattern)}))"
        for c in columns
        for pattern in patterns
    )
    return con.execute(f"select {counts_sql} from {qualified(schema, table)}").fetchone()
