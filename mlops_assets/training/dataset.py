"""Training data from a model's table: labelled rows, a time-ordered holdout, a data version.

The holdout is the latest ``holdout_share`` of labelled rows by the model's time column: models
are trained on the past and judged on the future, never on a random split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from mlops_assets.sql import ident, idents, table
from mlops_assets.training.spec import ModelSpec, SpecError
from mlops_assets.warehouse import scalar

MIN_ROWS = 10  # below this no split can train and judge a model
MAX_POPULATION = 500_000  # rows of the drift reference profile (a uniform sample above this)
# DuckDB column types read as numbers; every other type (VARCHAR, BOOLEAN, DATE...) is a category.
NUMERIC_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
     "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "REAL", "DOUBLE"}
)  # fmt: skip


class NotEnoughLabels(ValueError):
    """Too few labelled rows to train and judge a model (normal in a feed's first weeks)."""


def is_numeric_type(duckdb_type: str) -> bool:
    return duckdb_type in NUMERIC_TYPES or duckdb_type.startswith("DECIMAL")


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """``table``'s (``schema.name``) columns and DuckDB types, in table order; empty when there
    is no such table or view."""
    schema, name = table.split(".")
    return dict(
        con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = ? and table_name = ? order by ordinal_position",
            [schema, name],
        ).fetchall()
    )


@dataclass(frozen=True)
class FeatureSpec:
    """The model's input signature: its features, numeric or categorical by their column type,
    and the protected attributes kept out of them (read for fairness measurement only)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    protected: tuple[str, ...] = ()  # measured only: never a model input

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def dtypes(self) -> dict[str, str]:
        return {**dict.fromkeys(self.numeric, "float64"), **dict.fromkeys(self.categorical, "str")}


def feature_spec(con: duckdb.DuckDBPyConnection, model: ModelSpec) -> FeatureSpec:
    """``model``'s input signature read from its table: the declared features in their order
    (default: every column but the id, time, target and ``where`` columns). SpecError, naming
    the model and the column, when a declared column is not in the table or the target is not
    a number."""
    types = table_columns(con, model.table)
    if not types:
        raise SpecError(f"model {model.name}: table {model.table} does not exist")
    keys = (model.id_column, model.time_column, model.target, *model.where)
    declared = model.features if model.features is not None else ()
    missing = [c for c in (*keys, *declared, *model.protected_attributes) if c not in types]
    if missing:
        raise SpecError(f"model {model.name}: {', '.join(missing)} not in table {model.table}")
    if model.features is None:  # dates, times and protected attributes are no model input
        left_out = {*keys, *model.measured_only}
        declared = tuple(c for c in types if c not in left_out and not _is_temporal(types[c]))
    temporal = [c for c in declared if _is_temporal(types[c])]
    if temporal:
        raise SpecError(
            f"model {model.name}: {', '.join(temporal)} are dates or times, not model inputs: "
            "derive a number from them (e.g. an age in days) in the table"
        )
    unused = sorted(set(model.reasons) - set(declared))
    if unused:  # a typo, or a reason about a column the model does not take (a protected one)
        raise SpecError(
            f"model {model.name}: reasons name {', '.join(unused)}, which are not model inputs"
        )
    if not is_numeric_type(types[model.target]) and types[model.target] != "BOOLEAN":
        not_numbers = scalar(
            con,
            f"select count(*) from {table(model.table)} "
            f"where {ident(model.target)} is not null "
            f"and try_cast({ident(model.target)} as double) is null",
        )
        if not_numbers:
            raise SpecError(
                f"model {model.name}: target {model.target} of {model.table} has "
                f"{not_numbers} values that are not numbers"
            )
    if model.is_classifier:
        labels_sql = (
            f"select count(*) from {table(model.table)} where {ident(model.target)} is not null "
            f"and try_cast({ident(model.target)} as double) not in (0, 1)"
        )
        if scalar(con, labels_sql):
            raise SpecError(
                f"model {model.name}: a classification target must be 0/1 or true/false; "
                f"{model.target} of {model.table} has other values"
            )
    return FeatureSpec(
        numeric=tuple(c for c in declared if is_numeric_type(types[c])),
        categorical=tuple(c for c in declared if not is_numeric_type(types[c])),
        protected=model.measured_only,
    )


def _is_temporal(duckdb_type: str) -> bool:
    return duckdb_type.startswith(("DATE", "TIME", "INTERVAL"))


def labelled_filter(model: ModelSpec, alias: str = "") -> tuple[str, list]:
    """The SQL condition of ``model``'s labelled rows and its parameters: the target is known
    and every ``where`` column equals its value (columns of the table aliased ``alias``)."""
    prefix = f"{ident(alias)}." if alias else ""
    conditions = [f"{prefix}{ident(model.target)} is not null"]
    conditions += [f"{prefix}{ident(column)} = ?" for column in model.where]
    return " and ".join(conditions), list(model.where.values())


@dataclass(frozen=True)
class TrainingData:
    model: ModelSpec
    spec: FeatureSpec
    x_train: pd.DataFrame
    y_train: np.ndarray
    x_holdout: pd.DataFrame
    y_holdout: np.ndarray
    ids_holdout: np.ndarray
    # The holdout rows' protected attributes (every one declared, used as input or not), the
    # groups fairness is measured on; no column when the model declares none.
    groups_holdout: pd.DataFrame
    split_at: pd.Timestamp  # first time of the holdout
    applied_until: pd.Timestamp  # last time of the labelled rows used
    # Every row of the training period (labelled or not), the drift reference: labels arrive
    # sooner for some rows than others (a loan's default weeks after its application), so the
    # labelled rows are a biased sample of the traffic. ``unseen``: rows not trained on.
    population: pd.DataFrame
    unseen: np.ndarray
    version: str  # content hash of the labelled rows used (train + holdout)
    labelled_rows: int = 0  # labelled rows in the table (more than ``rows`` when sampled)

    @property
    def rows(self) -> int:
        return len(self.y_train) + len(self.y_holdout)


def as_model_input(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The columns in signature order with plain dtypes: floats (NaN = missing) and objects
    (None = missing), which every scikit-learn estimator accepts."""
    out = pd.DataFrame(index=frame.index)
    for name in spec.numeric:
        out[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    for name in spec.categorical:
        out[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return out


def data_version(frame: pd.DataFrame) -> str:
    """A content hash of the rows (order-independent): same rows, same version."""
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(np.sort(row_hashes).tobytes()).hexdigest()[:16]


def load_training_data(
    con: duckdb.DuckDBPyConnection,
    model: ModelSpec,
    *,
    holdout_share: float = 0.2,
    max_rows: int | None = None,
    max_population: int | None = MAX_POPULATION,
) -> TrainingData:
    """``model``'s labelled rows, split by time; the target an integer class (classification)
    or a float (regression).

    Above ``max_rows`` labelled rows, a uniform sample of ``max_rows`` of them is used (the
    same rows every time: the lowest hashes of the id), still split by time; the drift
    reference (every row of the period) is sampled the same way above ``max_population``.
    Memory and search time then stop growing with the table, while scoring and monitoring
    still cover every row."""
    spec = feature_spec(con, model)
    key, time = model.id_column, model.time_column
    labelled_sql, params = labelled_filter(model)
    read = [key, time, *spec.columns, *model.protected_attributes, model.target]
    columns_sql = idents(list(dict.fromkeys(read)))  # a used protected attribute is read once
    table_sql = table(model.table)
    labelled = scalar(con, f"select count(*) from {table_sql} where {labelled_sql}", params)
    frame = con.execute(_sampled_sql(model, columns_sql, labelled_sql, max_rows), params).df()
    if len(frame) < MIN_ROWS:
        raise NotEnoughLabels(
            f"{model.name}: only {len(frame)} labelled rows in {model.table}; need at least "
            f"{MIN_ROWS} (labels can arrive weeks after the rows)"
        )
    cut = round(len(frame) * (1 - holdout_share))
    x = as_model_input(frame, spec)
    until = frame[time].iloc[-1]
    population = con.execute(
        _sampled_sql(model, columns_sql, f"{ident(time)} <= ?", max_population), [until]
    ).df()
    unseen = ~population[key].isin(frame[key].iloc[:cut]).to_numpy()
    y = pd.to_numeric(frame[model.target]).astype("int64" if model.is_classifier else "float64")
    return TrainingData(
        model=model,
        spec=spec,
        x_train=x.iloc[:cut].reset_index(drop=True),
        y_train=y.to_numpy()[:cut],
        x_holdout=x.iloc[cut:].reset_index(drop=True),
        y_holdout=y.to_numpy()[cut:],
        ids_holdout=frame[key].iloc[cut:].to_numpy(),
        groups_holdout=frame[list(model.protected_attributes)].iloc[cut:].reset_index(drop=True),
        split_at=frame[time].iloc[cut],
        applied_until=until,
        population=as_model_input(population, spec),
        unseen=unseen,
        version=data_version(frame),
        labelled_rows=labelled,
    )


def _sampled_sql(model: ModelSpec, columns_sql: str, where_sql: str, limit: int | None) -> str:
    """The rows matching ``where_sql`` in time order; with ``limit``, the ``limit`` rows of
    lowest id hash (a uniform sample, stable from run to run)."""
    table_sql = table(model.table)
    order_sql = idents([model.time_column, model.id_column])
    if limit is None:
        return f"select {columns_sql} from {table_sql} where {where_sql} order by {order_sql}"
    id_sql = ident(model.id_column)
    return (
        f"select * from (select {columns_sql} from {table_sql} where {where_sql} "
        f"order by hash({id_sql}), {id_sql} limit {int(limit)}) order by {order_sql}"
    )
