"""Batch reason codes: every row the champion scored at or above its threshold gets its top
adverse reasons (its largest positive SHAP contributions) in `<scores>_reasons`, computed in
chunks; a regressor has no threshold and gets none."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from mlops_assets import catalogue
from mlops_assets.monitoring.reference import reference_attachments
from mlops_assets.sql import table
from mlops_assets.training.candidates import build_pipeline
from mlops_assets.training.dataset import as_model_input, load_training_data
from mlops_assets.training.explain import Explainer, reason_codes
from mlops_assets.training.reasons import reasons_table, write_reasons
from mlops_assets.training.scoring import score_model
from mlops_assets.training.search import predict
from tests.training.conftest import feature_warehouse, home_registry

CLASSIFIER = catalogue.model("default_classifier")
REGRESSOR = catalogue.model("loss_regressor")


def _champion(registry, con, spec, name, params):
    """Register and promote a fitted ``name`` pipeline as ``spec``'s champion."""
    data = load_training_data(con, spec)
    model = build_pipeline(name, params, data.spec, seed=0, classifier=spec.is_classifier)
    model.fit(data.x_train, data.y_train)
    scores = predict(model, data.population, spec.is_classifier)
    threshold = float(np.quantile(scores, 0.8)) if spec.is_classifier else None
    card, _ = registry.register(
        spec.name,
        model,
        {
            "candidate": name,
            "signature": {"features": data.spec.columns, "dtypes": data.spec.dtypes()},
        },
        {
            "threshold": threshold,
            "reference": {c: float(data.x_train[c].median()) for c in data.spec.numeric},
        },
        attachments=reference_attachments(data.population, data.spec, scores),
    )
    registry.promote(spec.name, card.version, reason="test")
    return data, model, card


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    con = feature_warehouse(rows=1_000, seed=5)
    registry = home_registry(tmp_path_factory.mktemp("home"))
    data, model, card = _champion(
        registry, con, CLASSIFIER, "hist_gradient_boosting", {"max_leaf_nodes": 7}
    )
    score_model(con, registry, CLASSIFIER)
    yield con, registry, data, model, card
    con.close()


def test_reasons_of_every_row_above_the_threshold_are_written_in_chunks(scored):
    con, registry, data, model, card = scored
    report = write_reasons(con, registry, CLASSIFIER, chunk_rows=50)
    threshold = card.data["threshold"]
    flagged = con.execute(
        f"select application_id from {table(CLASSIFIER.scores)} "
        "where mode = 'champion' and score >= ? order by application_id",
        [threshold],
    ).fetchall()
    assert report.explained == len(flagged) > 50
    assert sum(report.placement.values()) == -(-len(flagged) // 50)  # one task per chunk
    assert report.method == "tree"
    reasons = con.execute(f"select * from {table(reasons_table(CLASSIFIER))}").df()
    assert list(reasons.columns) == [
        "application_id", "model_version", "score", "rank", "feature", "contribution",
        "reason",
    ]  # fmt: skip
    assert report.rows == len(reasons)
    assert set(reasons["application_id"]) == {i for (i,) in flagged}  # only flagged rows
    assert set(reasons["model_version"]) == {card.version}
    assert (reasons["contribution"] > 0).all()
    assert reasons.groupby("application_id")["rank"].max().le(4).all()
    # The same as explaining those rows in one go.
    ids = [i for (i,) in flagged]
    rows = con.execute(
        f"select * from {table(CLASSIFIER.table)} where application_id in "
        "(select unnest(?)) order by application_id",
        [ids],
    ).df()
    x = as_model_input(rows, data.spec)
    explanation = Explainer(model, data.spec, data.population, True, "defaulted").explain(x)
    expected = reason_codes(explanation, x, data.spec, typical=card.data["reference"])
    got = reasons.sort_values(["application_id", "rank"]).reset_index(drop=True)
    assert got["feature"].tolist() == expected["feature"].tolist()
    np.testing.assert_allclose(got["contribution"], expected["contribution"], atol=1e-9)
    assert (
        got["application_id"].tolist()
        == rows["application_id"].to_numpy()[expected["row"]].tolist()
    )


def test_a_regressor_has_no_threshold_and_no_reasons(tmp_path):
    con = feature_warehouse(rows=600, seed=6)
    registry = home_registry(tmp_path)
    _champion(registry, con, REGRESSOR, "ridge", {"alpha": 1.0})
    score_model(con, registry, REGRESSOR)
    assert write_reasons(con, registry, REGRESSOR) is None
    exists = con.execute(
        "select count(*) from information_schema.tables where table_name = ?",
        [reasons_table(REGRESSOR).split(".")[1]],
    ).fetchone()[0]
    assert exists == 0


def test_the_reasons_asset_writes_the_table_and_redoes_it_only_when_scores_change(tmp_path):
    import dagster as dg

    from mlops_assets.resources import DaskResource, RegistryResource, WarehouseResource
    from mlops_assets.training.assets import build_reasons_asset

    warehouse = tmp_path / "warehouse.duckdb"
    registry = home_registry(tmp_path)
    asset = build_reasons_asset(CLASSIFIER)
    resources = {
        "warehouse": WarehouseResource(path=str(warehouse)),
        "registry": RegistryResource(
            path=str(registry.root),
            keyring_path=str(registry.keyring_path),
            reports_path=str(tmp_path / "reports"),
        ),
        "dask": DaskResource(),
    }
    instance = dg.DagsterInstance.ephemeral()
    feature_warehouse(rows=600, seed=7, database=str(warehouse)).close()
    nothing = dg.materialize([asset], resources=resources, instance=instance)
    assert nothing.success and not nothing.asset_materializations_for_node(asset.op.name)
    with duckdb.connect(str(warehouse)) as con:
        _champion(registry, con, CLASSIFIER, "logistic_l2", {"C": 0.5})
        score_model(con, registry, CLASSIFIER)
        flagged = con.execute(
            f"select count(*) from {table(CLASSIFIER.scores)} where mode = 'champion' and "
            "score >= ?",
            [
                registry.card("default_classifier", registry.champion("default_classifier")).data[
                    "threshold"
                ]
            ],
        ).fetchone()[0]
    runs = []
    for _ in range(2):
        result = dg.materialize([asset], resources=resources, instance=instance)
        [materialized] = result.asset_materializations_for_node(asset.op.name)
        runs.append({k: v.value for k, v in materialized.metadata.items()})
    assert runs[0]["recomputed"] and runs[0]["rows_explained"] == flagged > 0
    assert runs[0]["explainer"] == "linear"
    assert runs[1]["recomputed"] is False  # the scores did not change
    assert runs[1]["dagster/row_count"] == runs[0]["dagster/row_count"] > 0
    # The latest materialization still shows the reasons in full, as the run that wrote them.
    assert {**runs[1], "recomputed": True} == runs[0]
    with duckdb.connect(str(warehouse)) as con:
        written = con.execute(
            f"select count(distinct application_id) from {table(reasons_table(CLASSIFIER))}"
        ).fetchone()[0]
    assert written == flagged


def test_the_chunk_size_follows_the_explainer_so_a_fast_one_starts_no_cluster(scored, monkeypatch):
    """Chunks are sized by the explainer's speed: the flagged rows of a tree (or linear) model
    are few chunks, so no Dask cluster is started for under a second of work; a smaller
    per-explainer size gives one task per chunk."""
    from mlops_assets.training import reasons

    con, registry, _, _, _ = scored

    def no_cluster():
        raise AssertionError("a cluster was started for one chunk")

    _forget_reasons(con)
    report = write_reasons(con, registry, CLASSIFIER, client_factory=no_cluster)
    assert report.method == "tree" and sum(report.placement.values()) == 1
    monkeypatch.setitem(reasons.REASON_CHUNK_ROWS, "tree", 40)
    _forget_reasons(con)
    report = write_reasons(con, registry, CLASSIFIER)
    assert sum(report.placement.values()) == -(-report.explained // 40) > 1


def _forget_reasons(con) -> None:
    con.execute(f"drop table if exists {table(reasons_table(CLASSIFIER))}")


def test_only_rows_not_explained_before_are_explained(scored):
    """A flagged row whose stored reasons are of the same champion version and score keeps
    them: the next run explains only new or re-scored rows (a stacking champion's 100,000
    flagged rows are explained once, not every day), and writes the same table."""
    con, registry, _, _, card = scored
    _forget_reasons(con)
    first = write_reasons(con, registry, CLASSIFIER)
    before = con.execute(f"select * from {table(reasons_table(CLASSIFIER))}").df()
    assert first.explained > 2 and first.reused == 0
    again = write_reasons(con, registry, CLASSIFIER)
    assert (again.explained, again.reused, again.rows) == (0, first.explained, first.rows)
    after = con.execute(f"select * from {table(reasons_table(CLASSIFIER))}").df()
    assert after.equals(before)
    # One row re-scored (its values changed), one row's reasons of another version: explained
    # again; a row no longer flagged: dropped.
    ids = sorted(before["application_id"].unique())
    scores, reasons = table(CLASSIFIER.scores), table(reasons_table(CLASSIFIER))
    con.execute(
        f"update {scores} set score = least(score + 1e-3, 1) where application_id = ?", [ids[0]]
    )
    con.execute(
        f"update {reasons} set model_version = 'ffffffffffffffff' where application_id = ?",
        [ids[1]],
    )
    con.execute(f"update {scores} set score = 0 where application_id = ?", [ids[2]])
    third = write_reasons(con, registry, CLASSIFIER)
    assert (third.explained, third.reused) == (2, first.explained - 3)
    now = con.execute(f"select * from {reasons} order by application_id, rank").df()
    assert ids[2] not in set(now["application_id"])
    assert set(now["model_version"]) == {card.version}
    rescored = now[now["application_id"] == ids[0]]
    stored = con.execute(
        f"select score from {scores} where application_id = ? and mode = 'champion'", [ids[0]]
    ).fetchone()[0]
    assert (rescored["score"] == stored).all()


def test_a_champion_without_a_threshold_is_refused_with_a_clear_message(tmp_path):
    con = feature_warehouse(rows=400, seed=8)
    registry = home_registry(tmp_path)
    data = load_training_data(con, CLASSIFIER)
    model = build_pipeline("logistic_l2", {"C": 0.5}, data.spec, seed=0, classifier=True)
    model.fit(data.x_train, data.y_train)
    scores = predict(model, data.population, True)
    card, _ = registry.register(
        CLASSIFIER.name,
        model,
        {"candidate": "logistic_l2", "signature": {"features": data.spec.columns,
                                                   "dtypes": data.spec.dtypes()}},
        {"threshold": None},
        attachments=reference_attachments(data.population, data.spec, scores),
    )  # fmt: skip
    registry.promote(CLASSIFIER.name, card.version, reason="by hand")
    score_model(con, registry, CLASSIFIER)
    with pytest.raises(ValueError, match="records no threshold"):
        write_reasons(con, registry, CLASSIFIER)


def test_explain_one_of_a_table_with_numeric_ids_takes_any_text(scored):
    """`mlops explain ID` of a model whose ids are numbers: an id that is not a number (or is
    out of range) finds no row instead of a conversion error; a number finds its row."""
    from dataclasses import replace

    from mlops_assets.training.reasons import explain_one

    con, registry, _, _, _ = scored
    con.execute(
        "create or replace table features.numbered as select * replace "
        "(cast(row_number() over (order by application_id) as bigint) as application_id) "
        "from features.loan_features"
    )
    spec = replace(CLASSIFIER, table="features.numbered")
    for hostile in ("abc", "1e99", "99999999999999999999999", "' or 1=1 --"):
        assert explain_one(con, registry, spec, hostile) is None
    found = explain_one(con, registry, spec, "7")
    assert found is not None and found.explanation.additivity_error() < 1e-6
