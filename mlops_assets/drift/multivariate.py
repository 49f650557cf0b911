"""Multivariate drift: can a classifier tell current rows from reference rows?

A gradient-boosting "domain classifier" is cross-validated on a balanced sample of both sides;
its ROC-AUC is the score. 0.5 means the two are indistinguishable; drift is flagged from
``threshold`` (0.6 by default) when the AUC's 95 % lower bound (Hanley-McNeil) is above 0.5,
so a small window's chance AUC is not drift. It sees interactions that per-column tests miss
(the same marginals, a changed joint distribution).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_THRESHOLD = 0.6
SAMPLE_ROWS = 5_000


def parquet_sample(path: Path, columns: list[str], rows: int = SAMPLE_ROWS, seed: int = 0):
    """A uniform sample of ``rows`` rows, streamed by DuckDB (bounded memory at any size).

    Column names come from a user's file, so no name enters the SQL: columns are selected by
    position (DuckDB binds names case-insensitively, so ``a`` and ``A`` would both read ``a``),
    in a database that may read nothing but the file's folder."""
    import pyarrow.parquet as pq

    from mlops_assets.drift.files import confined_connection
    from mlops_assets.sql import glob_literal

    path = Path(path).resolve()
    names = pq.read_schema(path).names
    positions_sql = ", ".join(f"#{int(names.index(c)) + 1}" for c in columns)
    with confined_connection(path) as con:
        frame = con.execute(
            f"select {positions_sql} from read_parquet(?) "
            f"using sample reservoir({int(rows)} rows) repeatable ({int(seed)})",
            [glob_literal(path)],
        ).df()
    frame.columns = columns
    return frame


def domain_classifier(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int = 0,
    folds: int = 2,
) -> dict:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    n = min(len(reference), len(current), SAMPLE_ROWS)
    if n < 2 * folds or reference.shape[1] == 0:
        why = f"too few rows ({n})" if n < 2 * folds else "no columns"
        return {"test": "domain_classifier", "score": None, "threshold": threshold,
                "drifted": False, "note": f"{why} to train a domain classifier"}  # fmt: skip
    both = pd.concat(
        [reference.sample(n, random_state=seed), current.sample(n, random_state=seed)],
        ignore_index=True,
    )
    x, categorical = _encode(both)
    y = np.repeat([0, 1], n)
    # Out-of-fold probabilities; a fold with no column to learn from cannot tell the sides
    # apart (0.5). Balanced classes and n >= 2 * folds give every fold both classes.
    probability = np.full(len(y), 0.5)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with _thread_pools().limit(limits=1):  # parallelism is the caller's (days), not OpenMP's
        for train, test in cv.split(x, y):
            usable = informative_columns(x[train])
            if usable.any():
                model = _model(categorical[usable], seed)
                model.fit(x[train][:, usable], y[train])
                probability[test] = model.predict_proba(x[test][:, usable])[:, 1]
    auc = float(roc_auc_score(y, probability))
    low = auc - 1.96 * _auc_standard_error(auc, n, n)
    return {"test": "domain_classifier", "score": auc, "threshold": threshold,
            "drifted": auc >= threshold and low > 0.5, "auc_lower_bound": low,
            "rows_per_side": n}  # fmt: skip


MAX_BINS = 63


@functools.cache
def _thread_pools():
    """The native thread pools of this process (OpenMP's, BLAS's), found once: looking for
    them costs more than a small day's encoding. Gradient boosting is imported first, so its
    OpenMP runtime is among them."""
    import sklearn.ensemble  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _model(categorical: np.ndarray, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    # 15 rounds of small trees at a higher learning rate: on ~1,000 rows a side, a fit is
    # mostly fixed cost plus ~2.5 ms a round, and 30 rounds at 0.1 gave the same AUCs on the
    # demo days at twice the time. The monitor fits two per day.
    return HistGradientBoostingClassifier(
        max_iter=15,
        learning_rate=0.2,
        max_leaf_nodes=15,
        max_bins=MAX_BINS,
        categorical_features=categorical,
        random_state=seed,
    )


def informative_columns(x: np.ndarray) -> np.ndarray:
    """Mask of the columns of ``x`` (NaN: missing) that take at least two states, a missing
    value counting as one. Gradient boosting cannot bin a column without values (numpy's
    "window shape cannot be larger than input array shape"), and a column with one state
    carries nothing: a sparse column is often all missing in one fold of a small day."""
    present = ~np.isnan(x)
    low = np.where(present, x, np.inf).min(axis=0, initial=np.inf)
    high = np.where(present, x, -np.inf).max(axis=0, initial=-np.inf)
    return (high > low) | (present.any(axis=0) & ~present.all(axis=0))


def _auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982): on a few dozen rows an AUC of 0.6 is chance."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)
    ) / (positives * negatives)
    return float(np.sqrt(max(variance, 0.0)))


# Gradient boosting takes at most MAX_BINS categories a column: the most frequent ones keep
# their own code, the rarer ones share one.
MAX_CATEGORIES = MAX_BINS - 1


def _encode(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Numbers as floats, categories as codes by frequency (missing stays NaN)."""
    columns, categorical = [], []
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            columns.append(pd.to_numeric(values, errors="coerce").to_numpy(np.float64))
            categorical.append(False)
            continue
        text = values.astype("string")
        ranked = text.value_counts().index[:MAX_CATEGORIES]
        codes = ranked.get_indexer(text).astype(np.float64)  # -1: missing or rarer
        missing = text.isna().to_numpy()
        codes[(codes < 0) & ~missing] = MAX_CATEGORIES
        codes[missing] = np.nan
        columns.append(codes)
        categorical.append(True)
    return np.column_stack(columns), np.array(categorical)
