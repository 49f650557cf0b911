"""Batch scoring: the champion scores every row of its model's table; the challenger scores the
same rows in shadow mode, so the two are compared on live traffic once labels arrive.

A classifier's score is its probability of the positive class, a regressor's its prediction."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from mlops_assets.faults import crash_point
from mlops_assets.parallel import Placement, map_chunks
from mlops_assets.settings import DEFAULT_CHUNK_ROWS
from mlops_assets.sql import ident, idents, qualified, table
from mlops_assets.training.dataset import FeatureSpec, as_model_input, feature_spec, labelled_filter
from mlops_assets.training.registry import Registry
from mlops_assets.training.search import predict
from mlops_assets.training.significance import paired_test
from mlops_assets.training.spec import ModelSpec
from mlops_assets.warehouse import scalar


def challenger_version(registry: Registry, model: str) -> str | None:
    """The newest registered version of ``model`` that is not the champion, among those that
    verify (one that does not is never loaded: see `mlops models list`)."""
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
    ab: dict  # mode -> {"labelled": n, "metric": "roc_auc" | "rmse", "value": x}, shadow + "test"
    placement: Placement  # chunks per worker


def score_model(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    spec: ModelSpec,
    client_factory=None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ScoringReport:
    """Replace ``spec.scores`` with champion and shadow scores of every row of ``spec.table``,
    in one transaction: ``<id column>, score, model_version, mode, scored_at``.

    The table is read in rowid ranges of ``chunk_rows`` rows (MLOPS_CHUNK_ROWS); a table of
    several chunks is scored on the Dask client ``client_factory()`` gives (the models sent
    to each worker once), a bounded number of chunks in flight, so memory follows the chunk,
    not the table."""
    champion = registry.champion(spec.name)
    if champion is None:
        raise RuntimeError(
            f"{spec.name} has no champion: train it (or `mlops models promote`) first"
        )
    versions = {"champion": champion}
    shadow = challenger_version(registry, spec.name)
    if shadow:
        versions["shadow"] = shadow
    features = feature_spec(con, spec)
    models = {mode: (v, registry.load(spec.name, v)) for mode, v in versions.items()}
    id_sql = ident(spec.id_column)
    source_sql = _rowid_source_sql(con, spec, idents([spec.id_column, *features.columns]))
    total = scalar(con, f"select count(*) from {source_sql}")
    last = scalar(con, f"select coalesce(max(rowid), -1) from {source_sql}")
    con.execute(
        f"create or replace temporary table _scores as select {id_sql}, 0.0::double as score, "
        f"''::varchar as model_version, ''::varchar as mode from {source_sql} limit 0"
    )
    placement = map_rowid_chunks(
        con,
        source_sql,
        f"{id_sql}, {idents(features.columns)}",
        rows=last + 1,
        size=chunk_rows,
        task=score_chunk,
        shared=(models, features, spec.id_column, spec.is_classifier),
        into_sql="_scores",
        client_factory=client_factory,
    )
    con.execute("alter table _scores add column scored_at timestamp with time zone")
    con.execute("update _scores set scored_at = current_timestamp")
    schema, name = spec.scores.split(".")
    scores_sql = qualified(schema, name)
    if _relation_type(con, spec.scores) is not None:
        # The same model giving the same score keeps the time it was first scored: a re-run on
        # unchanged data and models changes nothing.
        con.execute(
            f"""
            update _scores as s set scored_at = old.scored_at from {scores_sql} as old
            where old.{id_sql} = s.{id_sql} and old.mode = s.mode
              and old.model_version = s.model_version and old.score = s.score
            """
        )
    crash_point("scoring.scored")
    replace_table(con, schema, name, f"select * from _scores order by mode, {id_sql}")
    crash_point("scoring.written")
    return ScoringReport(champion, shadow, total, ab_comparison(con, spec), placement)


def map_rowid_chunks(
    con: duckdb.DuckDBPyConnection,
    source_sql: str,
    columns_sql: str,
    *,
    rows: int,
    size: int,
    task,
    shared: tuple,
    into_sql: str,
    client_factory=None,
) -> Placement:
    """``task(frame, *shared)`` for the rows of ``source_sql`` (a table of the platform's,
    rowids 0 to ``rows`` - 1) read in rowid ranges of ``size`` rows, each result inserted into
    the temporary table ``into_sql``. With several chunks they run on the Dask client
    ``client_factory()`` gives (``shared`` sent to each worker once), a bounded number in
    flight, so memory follows the chunk, not the table."""
    frames = (
        con.execute(
            f"select {columns_sql} from {source_sql} where rowid between ? and ?",
            [start, start + size - 1],
        ).df()
        for start in range(0, rows, size)
    )
    placement = Placement()
    use_cluster = client_factory is not None and rows > size
    with client_factory() if use_cluster else contextlib.nullcontext() as client:
        for result in map_chunks(task, frames, shared=shared, client=client, placement=placement):
            con.register("_chunk_result", result)
            con.execute(f"insert into {into_sql} select * from _chunk_result")
            con.unregister("_chunk_result")
    return placement


def replace_table(con: duckdb.DuckDBPyConnection, schema: str, name: str, select_sql: str) -> None:
    """Create (or replace) ``schema.name`` as ``select_sql``, in one transaction."""
    con.execute("begin transaction")
    try:
        con.execute(f"create schema if not exists {ident(schema)}")
        con.execute(f"create or replace table {qualified(schema, name)} as {select_sql}")
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise


def _relation_type(con: duckdb.DuckDBPyConnection, table: str) -> str | None:
    """``BASE TABLE``, ``VIEW``..., or None when ``table`` (``schema.name``) does not exist."""
    rows = con.execute(
        "select table_type from information_schema.tables "
        "where table_schema = ? and table_name = ?",
        table.split("."),
    ).fetchall()
    return rows[0][0] if rows else None


def _rowid_source_sql(con: duckdb.DuckDBPyConnection, spec: ModelSpec, columns_sql: str) -> str:
    """What scoring reads in rowid ranges: the model's table, or, for a view (a dbt model
    materialized as one, dbt's default, has no rowid), its id and feature columns copied to a
    temporary table."""
    table_sql = table(spec.table)
    if _relation_type(con, spec.table) == "BASE TABLE":
        return table_sql
    con.execute(
        f"create or replace temporary table _score_input as select {columns_sql} from {table_sql}"
    )
    return "_score_input"


def score_chunk(
    frame: pd.DataFrame, models: dict, spec: FeatureSpec, id_column: str, classifier: bool
) -> pd.DataFrame:
    """Scores of one chunk of rows by every ``mode -> (version, model)``."""
    x = as_model_input(frame, spec)
    return pd.concat(
        [
            pd.DataFrame(
                {
                    id_column: frame[id_column],
                    "score": predict(model, x, classifier),
                    "model_version": version,
                    "mode": mode,
                }
            )
            for mode, (version, model) in models.items()
        ],
        ignore_index=True,
    )


AB_ROUNDS = 200  # bootstrap resamples of the live regression comparison
AB_SEED = 0


def ab_comparison(con: duckdb.DuckDBPyConnection, spec: ModelSpec) -> dict:
    """Each mode's live metric on the labelled rows (ROC-AUC of a classifier, RMSE of a
    regressor) and, for the shadow, the paired test of its difference from the champion on the
    rows both scored (paired by id): DeLong's for ROC-AUC, a paired bootstrap for RMSE, the
    difference signed so that positive means the shadow is better, with its 95 % interval and
    the p-value that the shadow is not better."""
    scores_sql = table(spec.scores)
    id_sql = ident(spec.id_column)
    labelled_sql, params = labelled_filter(spec, alias="t")
    frame = con.execute(
        f"""
        select cast(any_value(t.{ident(spec.target)}) as double) as y,
               any_value(s.score) filter (where s.mode = 'champion') as champion,
               any_value(s.score) filter (where s.mode = 'shadow') as shadow
        from {scores_sql} s join {table(spec.table)} t on t.{id_sql} = s.{id_sql}
        where {labelled_sql}
        group by s.{id_sql} order by s.{id_sql}
        """,
        params,
    ).df()
    metric = "roc_auc" if spec.is_classifier else "rmse"
    y = frame["y"].to_numpy()
    result = {}
    for mode in ("champion", "shadow"):
        scored = frame[mode].notna().to_numpy()
        if scored.any():
            value = _live_metric(spec, y[scored], frame[mode].to_numpy()[scored])
            result[mode] = {"labelled": int(scored.sum()), "metric": metric, "value": value}
    if "shadow" in result:
        both = frame[["champion", "shadow"]].notna().all(axis=1).to_numpy()
        test = paired_test(
            metric,
            y[both],
            frame["champion"].to_numpy()[both],
            frame["shadow"].to_numpy()[both],
            rounds=AB_ROUNDS,
            seed=AB_SEED,
        )
        result["shadow"]["test"] = test.as_dict()
    return result


def _live_metric(spec: ModelSpec, y: np.ndarray, score: np.ndarray) -> float:
    if spec.is_classifier:
        return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else float("nan")
    return float(np.sqrt(np.mean((y - score) ** 2)))
