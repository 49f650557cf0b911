"""Models come from their declaration (ModelSpec): any table, any column names, either task; no
model name is special."""

from __future__ import annotations

import shutil
from dataclasses import replace

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from mlops_assets import catalogue
from mlops_assets.features.validation import contract_columns
from mlops_assets.training.candidates import check_candidates
from mlops_assets.training.dataset import feature_spec, load_training_data
from mlops_assets.training.registry import Registry
from mlops_assets.training.scoring import score_model
from mlops_assets.training.spec import GateSpec, ModelSpec, SpecError, ValidationSpec
from mlops_assets.training.trainer import TrainingConfig, train_model
from tests.training.conftest import home_registry

ROWS = 240
UNLABELLED = 40  # the latest orders: their basket is not known yet
TOWN = "King's Lynn"  # a `where` value with a quote in it


def orders(rows: int = ROWS, seed: int = 3) -> pd.DataFrame:
    """A small shop table, nothing like the loan features: other names, other types."""
    rng = np.random.default_rng(seed)
    items = rng.integers(1, 9, rows)
    member = rng.random(rows) < 0.4
    channel = rng.choice(["web", "app", "store"], rows)
    basket = 12.5 * items + 20 * member + rng.normal(0, 5, rows)
    frame = pd.DataFrame(
        {
            "order_ref": [f"o-{i:04d}" for i in range(rows)],
            "placed": pd.date_range("2025-01-01", periods=rows, freq="6h"),
            "items": items.astype("int32"),
            "channel": channel,
            "member": member,
            "town": rng.choice([TOWN, "Ely"], rows),
            "basket": basket,
            "returned": (basket + rng.normal(0, 15, rows) > 60).astype(object),
        }
    )
    frame.loc[rows - UNLABELLED :, ["basket", "returned"]] = None
    return frame


def shop(database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(database)
    con.register("frame", orders())
    con.execute("create schema shop")
    con.execute(
        "create table shop.orders (order_ref varchar, placed timestamp, items integer, "
        "channel varchar, member boolean, town varchar, basket double, returned boolean)"
    )
    con.execute("insert into shop.orders select * from frame")
    return con


BASKET = ModelSpec(
    name="basket_value",
    task="regression",
    table="shop.orders",
    id_column="order_ref",
    time_column="placed",
    target="basket",
    features=("items", "channel", "member"),
    candidates=("ridge", "adaboost"),
    validation=ValidationSpec(folds=2),
)
# A classifier whose name says nothing: its task makes it one.
RETURNS = replace(
    BASKET,
    name="will_return",
    task="classification",
    target="returned",
    candidates=("logistic_l2", "random_forest", "stacking"),
    scores_table="marts.return_scores",
)


@pytest.fixture
def shop_con():
    con = shop()
    yield con
    con.close()


def test_features_none_is_every_column_but_id_time_target_and_where(shop_con):
    spec = ModelSpec(
        name="basket_all",
        task="regression",
        table="shop.orders",
        id_column="order_ref",
        time_column="placed",
        target="basket",
        where={"town": TOWN},
    )
    signature = feature_spec(shop_con, spec)
    # By column type: numbers are numeric; VARCHAR and BOOLEAN are categories.
    assert signature.numeric == ("items",)
    assert signature.categorical == ("channel", "member", "returned")


def test_the_loan_models_keep_the_contracts_signature(features_con):
    """The signature read from the table equals the one the feature contract declared (same
    columns, same order, same numeric/categorical split), and the columns the contract marks
    protected are measured only, no model input."""
    features = [c for c in contract_columns() if c.role == "feature"]
    protected = {c.name for c in contract_columns() if c.role == "protected"}
    assert protected == {"age_band", "marital_status", "region"}
    for spec in catalogue.models().values():
        signature = feature_spec(features_con, spec)
        assert set(signature.protected) == protected
        assert not protected & set(signature.columns)
        assert signature.numeric == tuple(c.name for c in features if c.duckdb_type != "VARCHAR")
        assert signature.categorical == tuple(
            c.name for c in features if c.duckdb_type == "VARCHAR"
        )


def test_declared_columns_missing_or_a_target_that_is_no_number_are_refused_by_name(shop_con):
    missing = ModelSpec(
        name="basket_value",
        task="regression",
        table="shop.orders",
        id_column="order_ref",
        time_column="placed_at",
        target="basket",
        features=("items", "colour"),
    )
    with pytest.raises(SpecError, match="model basket_value: placed_at, colour not in table"):
        load_training_data(shop_con, missing)
    absent = replace(BASKET, table="shop.baskets")
    with pytest.raises(SpecError, match=r"basket_value: table shop\.baskets does not exist"):
        load_training_data(shop_con, absent)
    words = replace(BASKET, target="town")
    with pytest.raises(SpecError, match=r"basket_value: target town of shop\.orders") as error:
        load_training_data(shop_con, words)
    assert TOWN not in str(error.value) and "Ely" not in str(error.value)  # no data quoted


def test_a_where_value_is_a_parameter_and_may_hold_a_quote(shop_con):
    spec = replace(BASKET, where={"town": TOWN, "member": True})
    data = load_training_data(shop_con, spec)
    frame = orders()
    labelled = frame[frame["basket"].notna() & (frame["town"] == TOWN) & frame["member"]]
    assert data.labelled_rows == data.rows == len(labelled)
    assert sorted([*data.ids_holdout]) == sorted(
        labelled.sort_values("placed")["order_ref"].iloc[-len(data.ids_holdout) :]
    )


def test_unknown_or_wrong_task_candidates_are_refused_when_the_spec_is_checked():
    check_candidates(BASKET)
    check_candidates(RETURNS)
    with pytest.raises(SpecError, match="basket_value: unknown candidate 'xgboost'; the"):
        check_candidates(replace(BASKET, candidates=("ridge", "xgboost")))
    with pytest.raises(
        SpecError, match="basket_value: candidate 'stacking' is not a regression candidate"
    ):
        check_candidates(replace(BASKET, candidates=("ridge", "stacking")))
    with pytest.raises(SpecError, match="will_return: candidate 'lasso' is not a classification"):
        check_candidates(replace(RETURNS, candidates=("lasso",)))
    with pytest.raises(SpecError, match="will_return: name at least one candidate besides"):
        check_candidates(replace(RETURNS, candidates=("stacking",)))


def test_a_classifier_is_known_by_its_task_not_its_name(shop_con, tmp_path):
    """``will_return`` is trained, gated and scored as a classifier: integer classes, the
    stacking ensemble, classification metrics, probabilities as scores, live ROC-AUC."""
    registry = home_registry(tmp_path)
    data = load_training_data(shop_con, RETURNS)
    assert data.y_train.dtype == np.int64 and set(np.unique(data.y_train)) == {0, 1}
    outcome = train_model(data, registry, TrainingConfig.for_model(RETURNS, bootstrap_rounds=20))
    assert {t.candidate for t in outcome.search.trials} == {
        "logistic_l2", "random_forest", "stacking"
    }  # fmt: skip
    assert "roc_auc" in outcome.holdout_metrics and outcome.threshold is not None
    assert outcome.card.data["task"] == "classification"
    report = score_model(shop_con, registry, RETURNS)
    assert report.ab["champion"]["metric"] == "roc_auc"
    assert report.ab["champion"]["labelled"] == ROWS - UNLABELLED
    low, high, rows = shop_con.execute(
        "select min(score), max(score), count(*) from marts.return_scores"
    ).fetchone()
    assert 0 <= low < high <= 1 and rows == ROWS


def shop_resources(tmp_path, dask_client) -> tuple[Registry, dict]:
    """A shop warehouse file, a new registry and every resource a model's assets take."""
    from mlops_assets.resources import DaskResource, RegistryResource, WarehouseResource
    from mlops_assets.transform.resource import dbt_resource

    warehouse = tmp_path / "warehouse.duckdb"
    shop(str(warehouse)).close()
    registry = home_registry(tmp_path)
    return registry, {
        "warehouse": WarehouseResource(path=str(warehouse)),
        "registry": RegistryResource(
            path=str(registry.root),
            keyring_path=str(registry.keyring_path),
            reports_path=str(tmp_path / "reports"),
        ),
        "dask": DaskResource(scheduler_address=dask_client.scheduler.address),
        "dbt": dbt_resource(tmp_path / "dbt"),
    }


RUN_KEYS = {"retrained", "decision"}  # what a run did; every other key shows the version


def shown(materialization: dg.AssetMaterialization) -> dict:
    """A model materialization's metadata that shows its version (not what the run did)."""
    return {k: v for k, v in materialization.metadata.items() if k not in RUN_KEYS}


def test_a_third_model_by_spec_trains_registers_gates_and_scores_to_its_own_table(
    tmp_path, dask_client
):
    """A regression on a shop table, declared and nothing else: its Dagster definitions train,
    register and gate it, check it, and score every order into ``predictions.basket_value``."""
    from mlops_assets.training.assets import build_model_defs

    registry, resources = shop_resources(tmp_path, dask_client)
    defs = build_model_defs(BASKET, frozenset({"email"}))
    instance = dg.DagsterInstance.ephemeral()  # the runs' history: what scoring compares with
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks, dg.AssetSpec(["shop", "orders"])],
        resources=resources,
        selection=dg.AssetSelection.groups("training", "scoring"),
        instance=instance,
    )
    assert result.success
    [trained] = result.asset_materializations_for_node("models__basket_value")
    version = trained.metadata["version"].value
    assert registry.champion("basket_value") == version
    card = registry.card("basket_value", version).data
    assert (card["task"], card["table"], card["target"]) == ("regression", "shop.orders", "basket")
    assert trained.metadata["primary_metric"].value == "rmse"
    assert (tmp_path / "reports" / "basket_value" / version / "residuals.png").exists()
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"robustness": True, "no_direct_identifiers": True}
    # Its model card, linked from the metadata; the robustness check read what training sealed.
    page = tmp_path / "reports" / "basket_value" / version / "card.html"
    assert trained.metadata["model_card"].value == str(page) and page.is_file()
    [robust] = [e for e in result.get_asset_check_evaluations() if e.check_name == "robustness"]
    assert robust.metadata["measured"].value == "at training (model.json)"
    [scored] = result.asset_materializations_for_node("predictions__basket_value")
    assert scored.metadata["dagster/row_count"].value == ROWS
    assert scored.metadata["live_rmse/champion"].value > 0
    with duckdb.connect(resources["warehouse"].path, read_only=True) as con:
        assert con.execute(
            "select count(distinct order_ref), any_value(mode), any_value(model_version) "
            "from predictions.basket_value"
        ).fetchone() == (ROWS, "champion", version)
    # Unchanged data: not retrained, its missing card rebuilt from model.json; a version whose
    # model.json records no robustness (registered before it did) is checked by computing it.
    page.unlink()
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr("mlops_assets.training.assets.recorded_robustness", lambda card: None)
        again = dg.materialize(
            [*defs.assets, *defs.asset_checks, dg.AssetSpec(["shop", "orders"])],
            resources=resources,
            selection=dg.AssetSelection.groups("training", "scoring"),
            instance=instance,
        )
    [unchanged] = again.asset_materializations_for_node("models__basket_value")
    assert unchanged.metadata["retrained"].value is False
    assert unchanged.metadata["model_card"].value == str(page) and page.is_file()
    assert shown(unchanged) == shown(trained) and "plot/residuals" in shown(unchanged)
    [robust] = [e for e in again.get_asset_check_evaluations() if e.check_name == "robustness"]
    assert robust.passed and robust.metadata["measured"].value == "now (model.json records none)"
    # Not re-scored either, and the scores' latest materialization still shows them in full.
    [rescored] = again.asset_materializations_for_node("predictions__basket_value")
    assert rescored.metadata["rescored"].value is False
    assert {**rescored.metadata, "rescored": scored.metadata["rescored"]} == scored.metadata


def test_a_run_on_unchanged_data_shows_the_version_in_full(tmp_path, dask_client):
    """The latest materialization of a model shows its current version in full: a run that
    finds the data unchanged does not retrain, keeps the data version (nothing downstream
    counts it as new), and records the version's metrics, plots, candidates and gate decision
    exactly as the run that trained it did, read from the sealed card; plots gone from the
    reports folder are drawn again."""
    from mlops_assets.training.assets import build_model_asset

    spec = replace(RETURNS, candidates=("logistic_l2", "random_forest"))
    registry, resources = shop_resources(tmp_path, dask_client)
    asset = build_model_asset(spec)
    runs = []
    instance = dg.DagsterInstance.ephemeral()
    for _ in range(3):
        result = dg.materialize(
            [asset, dg.AssetSpec(["shop", "orders"])], resources=resources, instance=instance
        )
        [materialized] = result.asset_materializations_for_node("models__will_return")
        runs.append(materialized)
        reports = tmp_path / "reports" / spec.name / materialized.metadata["version"].value
        if len(runs) == 2:
            shutil.rmtree(reports)  # the plots and card lost: the next run draws them again
    trained, unchanged, replotted = runs
    version = trained.metadata["version"].value
    assert trained.metadata["retrained"].value is True
    assert trained.metadata["decision"].value == "first model: no champion yet"
    for again in (unchanged, replotted):
        assert again.metadata["retrained"].value is False
        assert again.metadata["decision"].value == "unchanged: trained on the same data before"
        assert again.metadata["version"].value == version
    assert shown(unchanged) == shown(trained)
    assert shown(replotted).keys() == shown(trained).keys()
    metadata = shown(unchanged)
    assert metadata["holdout/roc_auc"].value == registry.card(spec.name, version).metrics["roc_auc"]
    assert "| roc\\_auc | " in metadata["holdout_metrics"].value  # markdown-escaped
    assert metadata["plot/roc"].value.startswith("![roc](data:image/png;base64,")
    assert (reports / "roc.png").is_file() and (reports / "card.html").is_file()
    candidates = metadata["candidates"].value
    assert "| logistic\\_l2 |" in candidates and "| random\\_forest |" in candidates
    assert metadata["promoted"].value is True and metadata["champion"].value == version
    assert metadata["gate_decision"].value == "first model: no champion yet"
    assert "promoted: first model" in metadata["model_card_summary"].value
    # One data version throughout: nothing downstream counts the no-op runs as new.
    assert {run.tags["dagster/data_version"] for run in runs} == {version}


def test_a_local_cluster_searches_only_from_enough_training_rows(
    tmp_path, dask_client, monkeypatch
):
    """Without a scheduler address, a search on fewer training rows than
    PARALLEL_SEARCH_FROM_ROWS runs its fits in the step's own process and starts no
    LocalCluster; from that many rows on, the fits go to the LocalCluster's workers."""
    from mlops_assets import resources
    from mlops_assets.resources import DaskResource
    from mlops_assets.training import search
    from mlops_assets.training.assets import build_model_defs

    asked = []

    def local_cluster(n_workers: int):  # the module's cluster stands in for the run's
        asked.append(n_workers)
        return dask_client.cluster

    monkeypatch.setattr(resources, "_local_cluster", local_cluster)
    _, shop_resources_ = shop_resources(tmp_path, dask_client)
    defs = build_model_defs(BASKET, frozenset({"email"}))
    fits = 2 * 2 * 2  # (ridge, adaboost) x 2 parameter sets x 2 folds

    def placement(seed: int, address: str | None = None) -> dict:
        result = dg.materialize(
            [*defs.assets, dg.AssetSpec(["shop", "orders"])],
            resources={**shop_resources_, "dask": DaskResource(scheduler_address=address)},
            selection=dg.AssetSelection.assets(["models", "basket_value"]),
            run_config={"ops": {"models__basket_value": {"config": {"seed": seed}}}},
        )
        [trained] = result.asset_materializations_for_node("models__basket_value")
        assert trained.metadata["retrained"].value is True
        return trained.metadata["placement"].value

    assert ROWS < search.PARALLEL_SEARCH_FROM_ROWS
    assert placement(seed=1) == {"local": fits}
    assert placement(seed=3, address="") == {"local": fits}  # an empty address: none set
    assert asked == []
    monkeypatch.setattr(search, "PARALLEL_SEARCH_FROM_ROWS", 1)
    on_workers = placement(seed=2)
    assert asked == [2]
    assert set(on_workers) == set(dask_client.scheduler_info()["workers"])
    assert sum(on_workers.values()) == fits


def test_a_model_on_a_view_is_scored_too(shop_con, tmp_path):
    """A dbt model materialized as a view (dbt's default) has no rowid to read in ranges: its
    rows are scored all the same."""
    shop_con.execute("create schema staging")
    shop_con.execute("create view staging.stg_orders as select * from shop.orders")
    spec = replace(BASKET, table="staging.stg_orders", candidates=("ridge",))
    registry = home_registry(tmp_path)
    train_model(
        load_training_data(shop_con, spec),
        registry,
        TrainingConfig.for_model(spec, bootstrap_rounds=20),
    )
    report = score_model(shop_con, registry, spec)
    assert report.rows == ROWS and report.ab["champion"]["metric"] == "rmse"
    assert shop_con.execute("select count(*) from predictions.basket_value").fetchone() == (ROWS,)


def test_dates_are_left_out_of_default_features_and_refused_when_declared(shop_con):
    """A timestamp reached the fitted pipeline as pandas.Timestamp objects, which the registry
    then refused to load: a champion nobody could use."""
    shop_con.execute("alter table shop.orders add column shipped timestamp")
    shop_con.execute("update shop.orders set shipped = placed")
    default = feature_spec(shop_con, replace(BASKET, features=None))
    assert "shipped" not in (*default.numeric, *default.categorical)
    with pytest.raises(SpecError, match="basket_value: shipped are dates or times"):
        feature_spec(shop_con, replace(BASKET, features=("items", "shipped")))


def test_a_classification_target_other_than_0_1_is_refused_before_the_search(shop_con):
    shop_con.execute("alter table shop.orders add column grade integer")
    shop_con.execute("update shop.orders set grade = items % 3")
    with pytest.raises(SpecError, match="will_return: a classification target must be 0/1"):
        feature_spec(shop_con, replace(RETURNS, target="grade"))
    assert feature_spec(shop_con, RETURNS).numeric  # a boolean target is fine


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id_column": "mode"}, "mode are the scores' own column names"),
        ({"features": ("items", "score")}, "score are the scores' own column names"),
        ({"scores_table": "vault.customer_pii"}, "platform's schemas"),
        ({"scores_table": "audit.ingested_files"}, "platform's schemas"),
        ({"scores_table": "shop.orders"}, "its own table"),
    ],
)
def test_a_model_may_not_write_its_scores_over_platform_tables_or_shadow_their_columns(
    change, message
):
    with pytest.raises(SpecError, match=message):
        replace(BASKET, **change)


def test_protected_attribute_declarations_that_cannot_work_are_refused_by_name(shop_con):
    spec = ModelSpec(
        name="basket_value",
        task="regression",
        table="shop.orders",
        id_column="order_ref",
        time_column="placed",
        target="basket",
    )
    refused = {
        "the id, time and target cannot be protected": {"protected_attributes": ("basket",)},
        "use_protected names channel, which are not among": {"use_protected": ("channel",)},
        r"using protected attributes as inputs \(member\) needs use_protected_justification": {
            "protected_attributes": ("member",),
            "use_protected": ("member",),
            "use_protected_justification": "  ",
        },
        "member are protected attributes, measured for fairness and no model input": {
            "protected_attributes": ("member",),
            "features": ("items", "member"),
        },
        "use_protected member must also be listed in features": {
            "protected_attributes": ("member",),
            "use_protected": ("member",),
            "use_protected_justification": "Membership prices the basket.",
            "features": ("items",),
        },
        "gate significance must be between 0 and 1": {"gate": GateSpec(significance=1.0)},
        "protected_attributes lists member more than once": {
            "protected_attributes": ("member", "town", "member"),
        },
        "use_protected lists member more than once": {
            "protected_attributes": ("member",),
            "use_protected": ("member", "member"),
            "use_protected_justification": "Membership prices the basket.",
        },
    }
    for message, fields in refused.items():
        with pytest.raises(SpecError, match=f"model basket_value: {message}"):
            replace(spec, **fields)
    # Declared but absent from the table: named like any other missing column.
    with pytest.raises(SpecError, match=r"basket_value: gender not in table shop\.orders"):
        feature_spec(shop_con, replace(spec, protected_attributes=("gender",)))
    # A reason text for a column the model does not take (a measured-only protected one, a
    # typo) is never shown: refused.
    for reasons in ({"member": "Member"}, {"itemz": "Many items"}):
        with pytest.raises(SpecError, match=f"reasons name {next(iter(reasons))}, which are not"):
            feature_spec(shop_con, replace(spec, protected_attributes=("member",), reasons=reasons))
    # Opted in with a justification: an input, and still measured.
    used = replace(
        spec,
        protected_attributes=("member", "town"),
        use_protected=("member",),
        use_protected_justification="Membership prices the basket.",
        where={},
    )
    signature = feature_spec(shop_con, used)
    assert "member" in signature.columns and "town" not in signature.columns
    assert signature.protected == ("town",)
    data = load_training_data(shop_con, used)
    assert list(data.groups_holdout.columns) == ["member", "town"]
    assert len(data.groups_holdout) == len(data.y_holdout)
