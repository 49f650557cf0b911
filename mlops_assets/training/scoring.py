"""Batch scoring: the champion scores every application; the challenger scores the same ones in
shadow mode, so the two are compared on live traffic once labels arrive."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mlops_assets.faults import crash_point
from mlops_assets.features.validation import FEATURE_TABLE, table_exists
from mlops_assets.parallel import Placement, chunk_rows, map_chunks
from mlops_assets.sql import idents
from mlops_assets.training.dataset import FeatureSpec, as_model_input
from mlops_assets.training.registry import Registry
from mlops_assets.warehouse import scalar

MODEL = "default_classifier"
SCORES_TABLE = "predictions.loan_default_scores"


def challenger_version(registry: Registry, model: str = MODEL) -> str | None:
    """The newest registered version that is not the champion, among those that verify (one
    that does not is never loaded: see `mlops models list`)."""
    champion = registry.champion(model)
    for card in reversed(registry.versions(model)):
        if card.version != champion and registry.verifies(model, card.version):
            return card.version
    return None


@dataclass
class ScoringReport:
    champion: str
    challenger: str | None
    rows: int
    ab: dict  # mode -> {"labelled": n, "roc_auc": x}
    placement: Placement  # chunks per worker


def score_applications(
    con: duckdb.DuckDBPyConnection, registry: Registry, client_factory=None
) -> ScoringReport:
    """Replace ``predictions.loan_default_scores`` with champion and shadow scores of every
    application in the feature table, in one transaction.

    The table is read in rowid ranges of ``chunk_rows()`` rows (MLOPS_CHUNK_ROWS); a table of
    several chunks is scored on the Dask client ``client_factory()`` gives (the models sent
    to each worker once), a bounded number of chunks in flight, so memory follows the chunk,
    not the table."""
    champion = registry.champion(MODEL)
    if champion is None:
        raise RuntimeError(f"{MODEL} has no champion: train it (or `mlops models promote`) first")
    versions = {"champion": champion}
    shadow = challenger_version(registry)
    if shadow:
        versions["shadow"] = shadow
    spec = FeatureSpec.from_contract()
    models = {mode: (version, registry.load(MODEL, version)) for mode, version in versions.items()}
    total = scalar(con, f"select count(*) from {FEATURE_TABLE}")
    last = scalar(con, f"select coalesce(max(rowid), -1) from {FEATURE_TABLE}")
    columns_sql = idents(["application_id", *spec.columns])
    con.execute(
        "create or replace temporary table _scores (application_id varchar, score double, "
        "model_version varchar, mode varchar)"
    )
    size = chunk_rows()
    frames = (
        con.execute(
            f"select {columns_sql} from {FEATURE_TABLE} where rowid between ? and ?",
            [start, start + size - 1],
        ).df()
        for start in range(0, last + 1, size)
    )
    placement = Placement()
    use_cluster = client_factory is not None and last + 1 > size
    with client_factory() if use_cluster else contextlib.nullcontext() as client:
        for scores in map_chunks(
            score_chunk, frames, shared=(models, spec), client=client, placement=placement
        ):
            con.register("_chunk_scores", scores)
            con.execute("insert into _scores select * from _chunk_scores")
            con.unregister("_chunk_scores")
    con.execute("alter table _scores add column scored_at timestamp with time zone")
    con.execute("update _scores set scored_at = current_timestamp")
    if table_exists(con, SCORES_TABLE):
        # The same model giving the same score keeps the time it was first scored: a re-run on
        # unchanged data and models changes nothing.
        con.execute(
            f"""
            update _scores as s set scored_at = old.scored_at from {SCORES_TABLE} as old
            where old.application_id = s.application_id and old.mode = s.mode
              and old.model_version = s.model_version and old.score = s.score
            """
        )
    crash_point("scoring.scored")
    con.execute("begin transaction")
    try:
        con.execute("create schema if not exists predictions")
        con.execute(
            f"create or replace table {SCORES_TABLE} as "
            "select * from _scores order by mode, application_id"
        )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    crash_point("scoring.written")
    return ScoringReport(champion, shadow, total, ab_comparison(con), placement)


def score_chunk(frame: pd.DataFrame, models: dict, spec: FeatureSpec) -> pd.DataFrame:
    """Scores of one chunk of features by every ``mode -> (version, model)``."""
    x = as_model_input(frame, spec)
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "application_id": frame["application_id"],
                    "score": model.predict_proba(x)[:, 1],
                    "model_version": version,
                    "mode": mode,
                }
            )
            for mode, (version, model) in models.items()
        ],
        ignore_index=True,
    )


def ab_comparison(con: duckdb.DuckDBPyConnection) -> dict:
    """ROC-AUC of each mode's scores on the applications whose label has arrived (one mode's
    two numeric columns in memory at a time)."""
    modes = [m for (m,) in con.execute(f"select distinct mode from {SCORES_TABLE}").fetchall()]
    result = {}
    for mode in sorted(modes):
        y, score = (
            con.execute(
                f"select cast(f.defaulted as integer) as y, s.score from {SCORES_TABLE} s "
                f"join {FEATURE_TABLE} f using (application_id) "
                "where f.is_labelled and s.mode = ?",
                [mode],
            )
            .fetchnumpy()
            .values()
        )
        auc = skm.roc_auc_score(y, score) if len(np.unique(y)) == 2 else float("nan")
        result[mode] = {"labelled": len(y), "roc_auc": float(auc)}
    return result
