"""Apply the feature contract chunk by chunk and publish clean and quarantined rows.

The staged features (a DuckDB table whose rowid identifies a row) are validated in hash chunks
of bounded size, so memory follows the chunk, not the table. Each failure becomes a verdict on rows:

- a failure with a row index (a range, a category, a null, a cross-column rule, a duplicate)
  quarantines that row;
- a failure of a whole column (missing, unexpected, wrong dtype, mostly empty) quarantines
  every row of the chunk: none of them can be trusted;
- a statistical check (:data:`STATISTICAL_CHECKS`) judges the table, not a row: it is
  reported and fails the contract check, and quarantines nothing.

Publishing replaces ``features.loan_features`` and ``quarantine.loan_features`` in one
transaction, so clean + quarantined = rows in, and a failed write leaves the previous tables as
they were. When the contract check fails, only the quarantine is replaced (see :func:`publish`).

Column checks of a whole column (``min_completeness``) and the statistical check are judged per
chunk; chunks are uniform hash samples of the table, so a chunk stands for the whole.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import duckdb
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_types

from mlops_assets.features.contract import LoanFeatures
from mlops_assets.features.engineering import STAGED
from mlops_assets.parallel import Placement, map_chunks
from mlops_assets.settings import DEFAULT_CHUNK_ROWS
from mlops_assets.sql import ident, idents, qualified
from mlops_assets.warehouse import column_types, scalar

FAILURES = "_contract_failures"
CHUNKED = "_contract_chunks"  # temporary: the staged rows laid out by chunk
FEATURE_TABLE = "features.loan_features"
QUARANTINE_TABLE = "quarantine.loan_features"
STATISTICAL_CHECKS = frozenset({"default_rate_plausible"})
SAMPLE_SIZE = 20
# Failure values of these columns are not shown in check metadata: a key that fails its pattern
# could be an identifier that escaped pseudonymisation.
_REDACTED_CLASSES = frozenset({"quasi_identifier", "personal"})

# Contract dtype -> DuckDB column type of the published table.
_DUCKDB_TYPES = {
    "str": "VARCHAR",
    "string[pyarrow]": "VARCHAR",
    "float64": "DOUBLE",
    "double[pyarrow]": "DOUBLE",
    "Int64": "BIGINT",
    "boolean": "BOOLEAN",
    "bool": "BOOLEAN",
    "datetime64[ns]": "TIMESTAMP",
}
# Arrow type -> pandas dtype of a chunk: fixed by the column's type, never by its values (an
# all-null VARCHAR would otherwise arrive as object, an int column without nulls as int64).
# Floats stay Arrow-backed so that NULL (missing, allowed where nullable) and NaN (a broken
# computation or feed: it fails the column's range) remain different things.
_PANDAS_DTYPES = {
    **dict.fromkeys(
        [pa_types.int8(), pa_types.int16(), pa_types.int32(), pa_types.int64()], pd.Int64Dtype()
    ),
    **dict.fromkeys([pa_types.uint8(), pa_types.uint16(), pa_types.uint32()], pd.Int64Dtype()),
    pa_types.float64(): pd.ArrowDtype(pa_types.float64()),
    pa_types.float32(): pd.ArrowDtype(pa_types.float64()),
    pa_types.bool_(): pd.BooleanDtype(),
    **dict.fromkeys(
        [pa_types.string(), pa_types.large_string(), pa_types.string_view()],
        pd.StringDtype(na_value=float("nan")),
    ),
}


@dataclass(frozen=True)
class ContractColumn:
    """A column as the contract declares it (what the UI's column schema shows)."""

    name: str
    dtype: str
    duckdb_type: str
    description: str
    nullable: bool
    unique: bool
    checks: tuple[str, ...]
    role: str
    classification: str


def contract_columns() -> list[ContractColumn]:
    """The contract's columns, read from the Pandera model (the single source of truth)."""
    schema = LoanFeatures.to_schema()
    columns = []
    for name, column in schema.columns.items():
        dtype = str(column.dtype)
        metadata = column.metadata or {}
        columns.append(
            ContractColumn(
                name=name,
                dtype=dtype,
                duckdb_type=_DUCKDB_TYPES[dtype],
                description=column.description or "",
                nullable=column.nullable,
                unique=column.unique,
                checks=tuple(check.error or check.name for check in column.checks),
                role=metadata.get("role", "feature"),
                classification=metadata.get("classification", "none"),
            )
        )
    return columns


def table_checks() -> list[tuple[str, str]]:
    """The contract's cross-column and statistical rules: (name, description)."""
    return [(check.name, check.description or "") for check in LoanFeatures.to_schema().checks]


@dataclass(frozen=True)
class ChunkVerdict:
    """What the contract said about one chunk."""

    rows: int
    row_failures: pd.DataFrame  # columns _row, check: one line per failed check of a row
    failure_cases: pd.DataFrame  # Pandera's failure cases with a ``failure`` label
    dataset_failures: tuple[str, ...]
    sample: pd.DataFrame  # a few cases per failure: application_id, failure, value


_SCHEMA_CHECKS = ("column_in_dataframe", "column_in_schema")


def failure_label(context: str, column: object, check: str, failure_case: object) -> str:
    """``column:check`` for a column's check (a long list of allowed values is shortened to the
    check's name: the contract shows it), ``column:check`` for a missing or unexpected column
    (the case is the column), the rule's name for a table rule."""
    if check in _SCHEMA_CHECKS:
        return f"{failure_case}:{check}"
    if context == "DataFrameSchema":
        return check
    return f"{column}:{check if len(check) <= 40 else check.split('(', 1)[0]}"


def failure_labels(cases: pd.DataFrame) -> pd.Series:
    """:func:`failure_label` of every failure case, computed once per distinct check (a chunk
    where every row fails has as many cases as rows)."""
    keys = cases[["schema_context", "column", "check"]].astype(str)
    schema_check = cases["check"].isin(_SCHEMA_CHECKS)
    keys["case"] = cases["failure_case"].astype(object).where(schema_check, "").astype(str)
    distinct = keys.drop_duplicates(ignore_index=True)
    distinct["failure"] = [
        failure_label(*row) for row in distinct.itertuples(index=False, name=None)
    ]
    labels = keys.merge(distinct, how="left", on=list(keys.columns))["failure"]
    return labels.set_axis(cases.index)


def validate_chunk(frame: pd.DataFrame) -> ChunkVerdict:
    """Validate one chunk lazily (every failure at once); ``frame`` is indexed by ``_row``."""
    try:
        LoanFeatures.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return ChunkVerdict(
            len(frame), _no_failures(), _no_cases(), (), _sample(_no_cases(), frame)
        )
    cases = cases.assign(failure=failure_labels(cases))
    has_row = cases["index"].notna()
    statistical = ~has_row & cases["check"].isin(STATISTICAL_CHECKS)
    whole_column = ~has_row & ~statistical
    per_row = pd.DataFrame(
        {
            "_row": cases.loc[has_row, "index"].astype("int64"),
            "check": cases.loc[has_row, "failure"],
        }
    )
    every_row = [
        pd.DataFrame({"_row": frame.index.to_numpy(dtype="int64"), "check": label})
        for label in cases.loc[whole_column, "failure"].unique()
    ]
    row_failures = pd.concat([per_row, *every_row], ignore_index=True).drop_duplicates()
    return ChunkVerdict(
        rows=len(frame),
        row_failures=row_failures,
        failure_cases=cases,
        dataset_failures=tuple(cases.loc[statistical, "failure"].unique()),
        sample=_sample(cases, frame),
    )


def _no_failures() -> pd.DataFrame:
    return pd.DataFrame({"_row": pd.Series(dtype="int64"), "check": pd.Series(dtype="str")})


def _no_cases() -> pd.DataFrame:
    return pd.DataFrame(
        columns=["schema_context", "column", "check", "failure_case", "index", "failure"]
    )


@dataclass
class ContractReport:
    """The contract's verdict on the whole table."""

    rows_in: int = 0
    rows_clean: int = 0
    rows_quarantined: int = 0
    chunks: int = 0
    failures_by_check: Counter = field(default_factory=Counter)  # rows failing each check
    dataset_failures: list[str] = field(default_factory=list)
    sample: list[dict] = field(default_factory=list)  # failure cases, values redacted
    placement: Placement = field(default_factory=Placement)  # chunks per worker

    @property
    def failure_rate(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0

    def passed(self, max_failure_rate: float) -> bool:
        return self.failure_rate <= max_failure_rate and not self.dataset_failures


def staged_columns(con: duckdb.DuckDBPyConnection, table: str = STAGED) -> dict[str, str]:
    return column_types(con, table)


def read_chunks(
    con: duckdb.DuckDBPyConnection, table: str, chunk_of_row_sql: str, chunks: int
) -> Iterator[pd.DataFrame]:
    """Every chunk as a DataFrame indexed by ``_row`` (the table's rowid), with dtypes fixed by
    the column types. Several chunks are first laid out by chunk in a temporary table (one
    sort, spilled by DuckDB if need be), so each read is a range of it, not a scan of the
    whole table: reading stays linear in the rows however many chunks there are."""
    table_sql = qualified(*table.split("."))
    if chunks == 1:
        yield _frame(con.sql(f"select rowid as _row, * from {table_sql}"))
        return
    con.execute(
        f"create or replace temporary table {CHUNKED} as select rowid as _row, *, "
        f"{chunk_of_row_sql} % {int(chunks)} as _chunk from {table_sql} order by _chunk"
    )
    try:
        for chunk in range(chunks):
            yield _frame(
                con.sql(
                    f"select * exclude (_chunk) from {CHUNKED} where _chunk = ?", params=[chunk]
                )
            )
    finally:
        con.execute(f"drop table if exists {CHUNKED}")


def _frame(relation: duckdb.DuckDBPyRelation) -> pd.DataFrame:
    arrow = relation.to_arrow_table()
    return arrow.to_pandas(types_mapper=_PANDAS_DTYPES.get).set_index("_row")


def apply_contract(
    con: duckdb.DuckDBPyConnection,
    *,
    table: str = STAGED,
    chunk_rows: int | None = None,
    client_factory: Callable[[], AbstractContextManager] | None = None,
) -> ContractReport:
    """Validate ``table`` chunk by chunk; failing rows are recorded in ``_contract_failures``.

    Chunks are hash samples of the application id, so every copy of an id meets its duplicates
    in the same chunk and a statistical check sees a uniform sample of the table. A table of
    several chunks is validated on the Dask client ``client_factory()`` gives (a context
    manager such as ``DaskResource.client``), else on local threads; this thread reads the
    next chunk while the others validate, a bounded number at a time (see
    :func:`mlops_assets.parallel.map_chunks`). ``report.placement`` says where chunks ran.
    """
    rows = scalar(con, f"select count(*) from {qualified(*table.split('.'))}")
    chunks = max(1, math.ceil(rows / (chunk_rows or DEFAULT_CHUNK_ROWS)))
    columns = staged_columns(con, table)
    chunk_of_row_sql = "hash(application_id)" if "application_id" in columns else "rowid"
    con.execute(f'create or replace temporary table {FAILURES} (_row bigint, "check" varchar)')
    report = ContractReport(rows_in=rows, chunks=chunks)
    samples: list[pd.DataFrame] = []
    frames = read_chunks(con, table, chunk_of_row_sql, chunks)
    use_cluster = client_factory is not None and chunks > 1
    with client_factory() if use_cluster else contextlib.nullcontext() as client:
        for verdict in map_chunks(
            validate_chunk, frames, client=client, placement=report.placement
        ):
            if not verdict.row_failures.empty:
                con.register("_chunk_failures", verdict.row_failures)
                con.execute(f'insert into {FAILURES} select _row, "check" from _chunk_failures')
                con.unregister("_chunk_failures")
            report.dataset_failures += [
                f for f in verdict.dataset_failures if f not in report.dataset_failures
            ]
            samples.append(verdict.sample)
    counts = con.execute(
        f'select "check", count(distinct _row) from {FAILURES} group by 1 order by 2 desc, 1'
    ).fetchall()
    report.failures_by_check = Counter(dict(counts))
    report.rows_quarantined = scalar(con, f"select count(distinct _row) from {FAILURES}")
    report.rows_clean = rows - report.rows_quarantined
    report.sample = pd.concat(samples).head(SAMPLE_SIZE).to_dict("records")
    return report


def _sample(cases: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """A few failure cases per check: the application id, the failure and the value (redacted
    for key-like columns; a table rule has no single value)."""
    redacted = {c.name for c in contract_columns() if c.classification in _REDACTED_CLASSES}
    picked = cases.drop_duplicates(["failure", "index"]).groupby("failure", sort=False).head(3)
    ids = frame["application_id"] if "application_id" in frame.columns else None

    def value(context: str, column: object, check: str, case: object) -> str:
        if context == "DataFrameSchema" and check not in _SCHEMA_CHECKS:
            return ""
        return "<redacted>" if column in redacted else str(case)

    return pd.DataFrame(
        {
            "application_id": [
                str(ids.get(index)) if ids is not None and pd.notna(index) else None
                for index in picked["index"]
            ],
            "failure": picked["failure"].to_numpy(),
            "value": [
                value(*row)
                for row in zip(
                    picked["schema_context"],
                    picked["column"],
                    picked["check"],
                    picked["failure_case"],
                    strict=True,
                )
            ],
        }
    )


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    schema, table = name.split(".")
    return bool(
        scalar(
            con,
            "select count(*) from information_schema.tables "
            "where table_schema = ? and table_name = ?",
            [schema, table],
        )
    )


def publish(
    con: duckdb.DuckDBPyConnection, *, table: str = STAGED, replace_features: bool = True
) -> None:
    """Write the verdicts in one transaction: the quarantine table always (it is what a person
    needs to see), the feature table only with ``replace_features`` — write, audit, publish:
    when the contract check fails, readers keep the previous features rather than a table
    emptied by a broken feed."""
    present = staged_columns(con, table)
    contract = contract_columns()
    table_sql = qualified(*table.split("."))
    ddl_sql = ", ".join(f"{ident(c.name)} {c.duckdb_type}" for c in contract)
    # A column the contract lacks or the stage lacks quarantined every row; the clean insert
    # then selects what both have and moves no row.
    shared_sql = idents(c.name for c in contract if c.name in present)
    key_sql = "application_id" if "application_id" in present else "null"
    con.execute("begin transaction")
    try:
        con.execute("create schema if not exists features")
        con.execute("create schema if not exists quarantine")
        if replace_features or not table_exists(con, FEATURE_TABLE):
            con.execute(f"create or replace table {FEATURE_TABLE} ({ddl_sql})")
        if replace_features:
            con.execute(
                f"""
                insert into {FEATURE_TABLE} by name
                select {shared_sql} from {table_sql} as s
                where not exists (select 1 from {FAILURES} as f where f._row = s.rowid)
                order by s.rowid
                """
            )
        con.execute(
            f"""
            create or replace temporary table _quarantine as
            with verdicts as (
                select _row, list(distinct "check" order by "check") as failed_checks
                from {FAILURES} group by _row
            )
            select
                cast({key_sql} as varchar) as application_id,
                v.failed_checks,
                to_json(s) as record,  -- the whole row, whatever its columns
                current_timestamp as quarantined_at
            from {table_sql} as s join verdicts as v on v._row = s.rowid
            order by v._row
            """
        )
        if table_exists(con, QUARANTINE_TABLE):
            # A row quarantined again, unchanged, keeps the time it was first quarantined:
            # a re-run on the same data changes no table.
            con.execute(
                f"""
                update _quarantine as q set quarantined_at = old.quarantined_at
                from {QUARANTINE_TABLE} as old
                where old.record = q.record and old.failed_checks = q.failed_checks
                """
            )
        con.execute(f"create or replace table {QUARANTINE_TABLE} as from _quarantine")
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
