"""Training data from the feature table: labelled rows, a time-ordered holdout, a data version.

The holdout is the latest ``holdout_share`` of labelled applications by ``applied_at``: models
are trained on the past and judged on the future, never on a random split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from mlops_assets.features.validation import FEATURE_TABLE, contract_columns
from mlops_assets.sql import idents
from mlops_assets.warehouse import scalar

TARGETS = {"default_classifier": "defaulted", "loss_regressor": "loss_amount"}
MIN_ROWS = 10  # below this no split can train and judge a model
MAX_POPULATION = 500_000  # rows of the drift reference profile (a uniform sample above this)


class NotEnoughLabels(ValueError):
    """Too few labelled rows to train and judge a model (normal in a feed's first weeks)."""


@dataclass(frozen=True)
class FeatureSpec:
    """The model's input signature, read from the feature contract's roles and dtypes."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @classmethod
    def from_contract(cls) -> FeatureSpec:
        features = [c for c in contract_columns() if c.role == "feature"]
        return cls(
            numeric=tuple(c.name for c in features if c.duckdb_type != "VARCHAR"),
            categorical=tuple(c.name for c in features if c.duckdb_type == "VARCHAR"),
        )

    def dtypes(self) -> dict[str, str]:
        return {**dict.fromkeys(self.numeric, "float64"), **dict.fromkeys(self.categorical, "str")}


@dataclass(frozen=True)
class TrainingData:
    model: str
    spec: FeatureSpec
    x_train: pd.DataFrame
    y_train: np.ndarray
    x_holdout: pd.DataFrame
    y_holdout: np.ndarray
    ids_holdout: np.ndarray
    split_at: pd.Timestamp  # first applied_at of the holdout
    applied_until: pd.Timestamp  # last applied_at of the labelled rows used
    # Every application of the training period (labelled or not), the drift reference:
    # labels arrive sooner for some loans than others, so the labelled rows are a biased
    # sample of the traffic. ``unseen`` marks the rows the model is not trained on.
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
    model: str,
    *,
    holdout_share: float = 0.2,
    max_rows: int | None = None,
    max_population: int | None = MAX_POPULATION,
) -> TrainingData:
    """Labelled rows for ``model`` (defaults for the classifier, defaulted loans for the loss
    regressor), split by time.

    Above ``max_rows`` labelled rows, a uniform sample of ``max_rows`` of them is used (the
    same rows every time: the lowest hashes of the application id), still split by time; the
    drift reference (every application of the period) is sampled the same way above
    ``max_population``. Memory and search time then stop growing with the table, while
    scoring and monitoring still cover every row."""
    spec = FeatureSpec.from_contract()
    target = TARGETS[model]
    labelled_sql = "is_labelled and defaulted" if model == "loss_regressor" else "is_labelled"
    columns_sql = idents(["application_id", "applied_at", *spec.columns, target])
    labelled = scalar(con, f"select count(*) from {FEATURE_TABLE} where {labelled_sql}")
    frame = con.execute(_sampled_sql(columns_sql, labelled_sql, max_rows)).df()
    if len(frame) < MIN_ROWS:
        raise NotEnoughLabels(
            f"{model}: only {len(frame)} labelled rows in {FEATURE_TABLE}; need at least "
            f"{MIN_ROWS} (labels arrive 4-12 weeks after the application)"
        )
    cut = round(len(frame) * (1 - holdout_share))
    x = as_model_input(frame, spec)
    until = frame["applied_at"].iloc[-1]
    population = con.execute(
        _sampled_sql(columns_sql, "applied_at <= ?", max_population), [until]
    ).df()
    unseen = ~population["application_id"].isin(frame["application_id"].iloc[:cut]).to_numpy()
    y = frame[target].astype("float64" if model == "loss_regressor" else "int64").to_numpy()
    return TrainingData(
        model=model,
        spec=spec,
        x_train=x.iloc[:cut].reset_index(drop=True),
        y_train=y[:cut],
        x_holdout=x.iloc[cut:].reset_index(drop=True),
        y_holdout=y[cut:],
        ids_holdout=frame["application_id"].iloc[cut:].to_numpy(),
        split_at=frame["applied_at"].iloc[cut],
        applied_until=until,
        population=as_model_input(population, spec),
        unseen=unseen,
        version=data_version(frame),
        labelled_rows=labelled,
    )


def _sampled_sql(columns_sql: str, where_sql: str, limit: int | None) -> str:
    """The rows matching ``where_sql`` in time order; with ``limit``, the ``limit`` rows of
    lowest application-id hash (a uniform sample, stable from run to run)."""
    if limit is None:
        return (
            f"select {columns_sql} from {FEATURE_TABLE} where {where_sql} "
            "order by applied_at, application_id"
        )
    return (
        f"select * from (select {columns_sql} from {FEATURE_TABLE} where {where_sql} "
        f"order by hash(application_id), application_id limit {int(limit)}) "
        "order by applied_at, application_id"
    )
