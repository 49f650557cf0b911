"""Batch reason codes: the top adverse reasons of every row the champion scored at or above its
threshold, stored beside the scores in ``<scores table>_reasons``.

A regressor has no threshold (nothing is "flagged"): it gets no reasons table."""

from __future__ import annotations

import time
from dataclasses import dataclass

import duckdb
import pandas as pd

from mlops_assets.monitoring.reference import SAMPLE_FILE
from mlops_assets.parallel import Placement
from mlops_assets.settings import DEFAULT_CHUNK_ROWS
from mlops_assets.sql import ident, idents, table
from mlops_assets.training.dataset import as_model_input, table_columns
from mlops_assets.training.explain import (
    LINEAR,
    PERMUTATION,
    TREE,
    Explainer,
    Explanation,
    reason_codes,
    signature_features,
)
from mlops_assets.training.registry import ModelCard, Registry
from mlops_assets.training.scoring import map_rowid_chunks, replace_table
from mlops_assets.training.search import predict
from mlops_assets.training.spec import ModelSpec
from mlops_assets.warehouse import scalar

# Rows explained per task, by explainer: each chunk ~10 s of work at most, so the flagged rows
# spread evenly over the workers (a stacking champion explains ~50 rows/s per core, a hist
# gradient boosting ~2,500), and a linear model's chunks (~140,000 rows/s) small enough that the
# chunks in flight stay small: a chunk, its preprocessed matrix, its contributions and its
# reasons take ~1.5 GB of a worker at 250,000 rows. Explaining 2.36M flagged rows on the two
# default workers (2026-12-02): peak RSS 6.15 GB at 250,000 rows a chunk, 3.82 GB at 50,000
# (25.5 s -> 27.3 s). Up to 50,000 flagged rows of a linear model are one chunk: no cluster.
REASON_CHUNK_ROWS = {PERMUTATION: 500, TREE: 10_000, LINEAR: 50_000}


def reasons_table(spec: ModelSpec) -> str:
    """``schema.table`` of ``spec``'s reason codes: its scores table's name + ``_reasons``."""
    return f"{spec.scores}_reasons"


@dataclass
class ReasonsReport:
    version: str
    threshold: float
    explained: int  # flagged rows explained by this run
    reused: int  # flagged rows whose stored reasons still hold (same version, same score)
    rows: int  # reason rows written
    method: str
    placement: Placement
    seconds: float  # explaining and writing


# The reasons table's columns after the id: what reuse needs (the version and score explained).
REASON_COLUMNS = ("model_version", "score", "rank", "feature", "contribution", "reason")


def write_reasons(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    spec: ModelSpec,
    client_factory=None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ReasonsReport | None:
    """Replace ``<scores>_reasons`` with the top adverse reasons of every row the champion
    scored (``mode = 'champion'``) at or above its threshold, in one transaction:
    ``<id column>, model_version, score, rank, feature, contribution, reason``. None (nothing
    written) for a regressor or when there is no champion.

    Only rows not explained before are explained: a flagged row whose stored reasons are of the
    same champion version and the same score keeps them (its explanation would be the same),
    so a daily run explains the new applications, not every flagged one again (a stacking
    champion explains ~50 rows/s per core: 100,000 flagged rows take ~17 min on two workers
    once, then only the day's new ones). The rows to explain are read in rowid ranges of at
    most ``REASON_CHUNK_ROWS[method]`` rows and explained on the Dask client
    ``client_factory()`` gives when there are several chunks (the model and its background
    sent to each worker once)."""
    version = registry.champion(spec.name)
    if version is None or not spec.is_classifier:
        return None
    started = time.perf_counter()
    model = registry.load(spec.name, version)
    card = registry.verified_card(spec.name, version)
    threshold = card.data.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise ValueError(
            f"{spec.name} champion {version} records no threshold (promoted by hand from a "
            "version trained without one?): no row can be flagged; promote a version trained "
            "by `mlops run`"
        )
    threshold = float(threshold)
    explainer = champion_explainer(registry, spec, version, model, card)
    features = explainer.spec
    id_sql = ident(spec.id_column)
    features_sql = ", ".join(f"t.{ident(c)}" for c in features.columns)
    con.execute(
        f"""
        create or replace temporary table _flagged as
        select t.{id_sql}, s.score, {features_sql}
        from {table(spec.scores)} s join {table(spec.table)} t on t.{id_sql} = s.{id_sql}
        where s.mode = 'champion' and s.model_version = ? and s.score >= ?
        """,
        [version, threshold],
    )
    previous = reasons_table(spec)
    stored = list(table_columns(con, previous))
    con.execute(
        f"create or replace temporary table _reasons as select {id_sql}, "
        "''::varchar as model_version, 0.0::double as score, 0::integer as rank, "
        "''::varchar as feature, 0.0::double as contribution, ''::varchar as reason "
        "from _flagged limit 0"
    )
    if stored == [spec.id_column, *REASON_COLUMNS]:  # a table of this shape: reuse it
        con.execute(
            f"insert into _reasons select r.* from {table(previous)} r "
            f"semi join _flagged f on r.{id_sql} = f.{id_sql} and r.score = f.score "
            "where r.model_version = ?",
            [version],
        )
    con.execute(
        "create or replace temporary table _reason_input as select f.* from _flagged f "
        f"anti join _reasons r on r.{id_sql} = f.{id_sql} order by f.{id_sql}"
    )
    flagged = scalar(con, "select count(*) from _flagged")
    explained = scalar(con, "select count(*) from _reason_input")
    size = min(chunk_rows, REASON_CHUNK_ROWS[explainer.method])
    placement = map_rowid_chunks(
        con,
        "_reason_input",
        idents([spec.id_column, "score", *features.columns]),
        rows=explained,
        size=size,
        task=reason_chunk,
        shared=(explainer, card.data.get("reference") or {}, spec, version),
        into_sql="_reasons",
        client_factory=client_factory,
    )
    schema, name = previous.split(".")
    replace_table(con, schema, name, f"select * from _reasons order by {id_sql}, rank")
    rows = scalar(con, "select count(*) from _reasons")
    seconds = time.perf_counter() - started
    return ReasonsReport(
        version,
        threshold,
        explained,
        flagged - explained,
        rows,
        explainer.method,
        placement,
        seconds,
    )


def champion_explainer(
    registry: Registry, spec: ModelSpec, version: str, model, card: ModelCard
) -> Explainer:
    """The explainer of a registered version: its signature, and its stored reference sample
    as the background."""
    background = pd.read_parquet(registry.attachment(spec.name, version, SAMPLE_FILE))
    features = signature_features(card.data["signature"])
    return Explainer(model, features, background, spec.is_classifier, spec.target)


@dataclass
class RowExplanation:
    """Why the champion scored one row as it did (``mlops explain``)."""

    version: str
    explanation: Explanation  # one row
    values: dict  # feature -> the row's value
    score: float  # probability of the positive class, or the prediction
    threshold: float | None
    reasons: pd.DataFrame  # rank, feature, contribution, reason (empty below the threshold)
    reasons_from: str | None  # "table" (<scores>_reasons), "computed", None (none)


def explain_one(
    con: duckdb.DuckDBPyConnection, registry: Registry, spec: ModelSpec, row_id: str
) -> RowExplanation | None:
    """The champion's SHAP explanation of the row ``row_id`` of ``spec.table`` (None when
    there is no such row) and its reason codes: stored ones from ``<scores>_reasons``, else
    computed when its score is at or above the threshold. RuntimeError without a champion."""
    version = registry.champion(spec.name)
    if version is None:
        raise RuntimeError(f"{spec.name} has no champion yet: run `mlops run` first")
    id_sql = ident(spec.id_column)
    frame = con.execute(  # compared as text: an id that is not a number finds no row
        f"select * from {table(spec.table)} where cast({id_sql} as varchar) = ? limit 1", [row_id]
    ).df()
    if frame.empty:
        return None
    model = registry.load(spec.name, version)
    card = registry.verified_card(spec.name, version)
    explainer = champion_explainer(registry, spec, version, model, card)
    x = as_model_input(frame, explainer.spec)
    explanation = explainer.explain(x)
    score = float(predict(model, x, spec.is_classifier)[0])
    stored = pd.DataFrame(columns=["rank", "feature", "contribution", "reason"])
    if list(table_columns(con, reasons_table(spec))) == [spec.id_column, *REASON_COLUMNS]:
        # Stored reasons of this version and of the score the row has now (not of values
        # since changed).
        stored = con.execute(
            f"select rank, feature, contribution, reason from {table(reasons_table(spec))} "
            f"where cast({id_sql} as varchar) = ? and model_version = ? "
            "and abs(score - ?) <= 1e-9 order by rank",
            [row_id, version, score],
        ).df()
    threshold = card.data.get("threshold") if spec.is_classifier else None
    reasons, source = stored, "table" if len(stored) else None
    if source is None and threshold is not None and score >= threshold:
        computed = reason_codes(
            explanation,
            x,
            explainer.spec,
            typical=card.data.get("reference") or {},
            reasons=spec.reasons,
        )
        reasons, source = computed.drop(columns="row"), "computed"
    values = {c: x.iloc[0][c] for c in explainer.spec.columns}
    return RowExplanation(version, explanation, values, score, threshold, reasons, source)


def reason_chunk(
    frame: pd.DataFrame, explainer: Explainer, typical: dict, spec: ModelSpec, version: str
) -> pd.DataFrame:
    """The reason codes of one chunk of flagged rows (id, score and feature columns)."""
    x = as_model_input(frame, explainer.spec)
    codes = reason_codes(
        explainer.explain(x), x, explainer.spec, typical=typical, reasons=spec.reasons
    )
    at = codes["row"].to_numpy()
    return pd.DataFrame(
        {
            spec.id_column: frame[spec.id_column].to_numpy()[at],
            "model_version": version,
            "score": frame["score"].to_numpy(dtype=float)[at],
            "rank": codes["rank"],
            "feature": codes["feature"],
            "contribution": codes["contribution"],
            "reason": codes["reason"],
        }
    )
