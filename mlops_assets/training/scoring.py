"""Batch scoring: the champion scores every application; the challenger scores the same ones in
shadow mode, so the two are compared on live traffic once labels arrive."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mlops_assets.features.validation import FEATURE_TABLE, table_exists
from mlops_assets.training.dataset import FeatureSpec, as_model_input
from mlops_assets.training.registry import Registry

MODEL = "default_classifier"
SCORES_TABLE = "predictions.loan_default_scores"
CHUNK_ROWS = 200_000


def challenger_version(registry: Registry, model: str = MODEL) -> str | None:
    """The newest registered version that is not the champion."""
    champion = registry.champion(model)
    others = [c.version for c in registry.versions(model) if c.version != champion]
    return others[-1] if others else None


@dataclass
class ScoringReport:
    champion: str
    challenger: str | None
    rows: int
    ab: dict  # mode -> {"labelled": n, "roc_auc": x}


def score_applications(con: duckdb.DuckDBPyConnection, registry: Registry) -> ScoringReport:
    """Replace ``predictions.loan_default_scores`` with champion and shadow scores of every
    application in the feature table, in one transaction."""
    champion = registry.champion(MODEL)
    if champion is None:
        raise RuntimeError(f"{MODEL} has no champion: train it (or `mlops models promote`) first")
    models = {"champion": champion}
    shadow = challenger_version(registry)
    if shadow:
        models["shadow"] = shadow
    spec = FeatureSpec.from_contract()
    loaded = {mode: registry.load(MODEL, version) for mode, version in models.items()}
    total = con.execute(f"select count(*) from {FEATURE_TABLE}").fetchall()[0][0]
    columns = ", ".join(f'"{c}"' for c in ["application_id", *spec.columns])
    con.execute(
        "create or replace temporary table _scores (application_id varchar, score double, "
        "model_version varchar, mode varchar)"
    )
    for start in range(0, total, CHUNK_ROWS):  # bounded memory: one chunk of features at a time
        frame = con.execute(
            f"select {columns} from {FEATURE_TABLE} "
            f"order by rowid limit {CHUNK_ROWS} offset {start}"
        ).df()
        x = as_model_input(frame, spec)
        for mode, model in loaded.items():
            scores = pd.DataFrame(
                {
                    "application_id": frame["application_id"],
                    "score": model.predict_proba(x)[:, 1],
                    "model_version": models[mode],
                    "mode": mode,
                }
            )
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
    return ScoringReport(champion, shadow, total, ab_comparison(con))


def ab_comparison(con: duckdb.DuckDBPyConnection) -> dict:
    """ROC-AUC of each mode's scores on the applications whose label has arrived."""
    frame = con.execute(
        f"select s.mode, s.score, f.defaulted from {SCORES_TABLE} s "
        f"join {FEATURE_TABLE} f using (application_id) where f.is_labelled"
    ).df()
    result = {}
    for mode, group in frame.groupby("mode"):
        y = group["defaulted"].astype(int).to_numpy()
        auc = skm.roc_auc_score(y, group["score"]) if len(np.unique(y)) == 2 else float("nan")
        result[mode] = {"labelled": len(group), "roc_auc": float(auc)}
    return result
