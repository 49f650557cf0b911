"""The Dagster asset: the contract is what the UI shows, the check blocks, metadata is recorded."""

import dagster as dg
import duckdb
import pytest

from mlops_assets import catalogue
from mlops_assets.features.assets import FEATURES_KEY, loan_features
from mlops_assets.features.contract import LoanFeatures
from mlops_assets.features.validation import QUARANTINE_TABLE
from mlops_assets.ingestion.sources import identifier_names
from mlops_assets.resources import DaskResource, WarehouseResource
from mlops_assets.security.checks import build_identifier_checks
from tests.sample_data.marts import load_synthetic_mart

OP = "features__loan_features"


def test_ui_column_schema_is_generated_from_the_contract():
    schema = loan_features.specs_by_key[FEATURES_KEY].metadata["dagster/column_schema"]
    contract = LoanFeatures.to_schema()
    assert [c.name for c in schema.columns] == list(contract.columns)
    for column in schema.columns:
        declared = contract.columns[column.name]
        assert column.description == declared.description
        assert column.constraints.nullable == declared.nullable
        assert column.constraints.unique == declared.unique
        assert column.constraints.other == [check.error for check in declared.checks]
        assert column.tags == {
            "classification": declared.metadata["classification"],
            "role": declared.metadata["role"],
        }
    rules = [rule.split(":")[0] for rule in schema.constraints.other]
    assert rules == [check.name for check in contract.checks]


@pytest.fixture
def warehouse(tmp_path) -> WarehouseResource:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        load_synthetic_mart(con, 2_000, seed=11)
    return WarehouseResource(path=str(path))


def corrupt_purposes(warehouse: WarehouseResource, rows: int, value: str = "crypto") -> None:
    """``rows`` applications arrive with a purpose outside the catalogue."""
    with duckdb.connect(warehouse.path) as con:
        con.execute(
            "update marts.loan_applications set purpose = ? where application_id in "
            "(select application_id from marts.loan_applications order by application_id limit ?)",
            [value, rows],
        )


def table_rows(warehouse: WarehouseResource) -> tuple[int, int]:
    with duckdb.connect(warehouse.path, read_only=True) as con:
        return con.execute(
            "select (select count(*) from features.loan_features), "
            "(select count(*) from quarantine.loan_features)"
        ).fetchall()[0]


def materialize(
    warehouse: WarehouseResource, *checks, dask: DaskResource | None = None, **config
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [loan_features, *checks],
        resources={"warehouse": warehouse, "dask": dask or DaskResource()},
        run_config={"ops": {OP: {"config": config}}},
        raise_on_error=False,
    )


def test_contract_check_blocks_above_the_threshold_and_reports_why(warehouse):
    corrupt_purposes(warehouse, 40)  # 2%
    result = materialize(warehouse)
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["failure_rate"].value == pytest.approx(0.02)
    assert "| purpose:isin | 40 |" in evaluation.metadata["failures_by_check"].value
    assert "crypto" in evaluation.metadata["failure_sample"].value

    [materialization] = result.asset_materializations_for_node(OP)
    metadata = materialization.metadata
    assert metadata["rows_in"].value == 2_000
    assert metadata["rows_out"].value == 1_960
    assert metadata["quarantine_rate"].value == pytest.approx(0.02)
    assert metadata["rows_quarantined"].value == 40
    assert metadata["validity"].value == pytest.approx(0.98)
    assert metadata["duplicate_rows"].value == 0
    assert metadata["completeness/amount"].value == 1.0
    assert 0 < metadata["completeness/defaulted"].value < 1  # recent loans have no label yet
    assert metadata["freshness_hours"].value > 0
    assert "newest_applied_at" in metadata
    assert metadata["published"].value is False


def test_chunks_on_threads_or_a_clusters_workers_give_the_same_verdicts_as_one_chunk(
    warehouse, monkeypatch
):
    """Without a scheduler address, chunks are validated on the step's threads and no
    LocalCluster starts; with one, on that cluster's workers. Either way, every chunk is
    accounted for and the verdicts are those of the whole table in one chunk."""
    from distributed import Client

    from mlops_assets import resources

    asked = []
    monkeypatch.setattr(resources, "_local_cluster", asked.append)
    corrupt_purposes(warehouse, 40)
    config = {"max_failure_rate": 0.05}
    whole = materialize(warehouse, **config).asset_materializations_for_node(OP)[0].metadata
    assert whole["placement"].value == {"local": 1}
    with duckdb.connect(warehouse.path, read_only=True) as con:
        quarantined = sorted(
            con.execute(f"select application_id from {QUARANTINE_TABLE}").fetchall()
        )
    assert len(quarantined) == 40

    def chunked(dask: DaskResource) -> dict:
        result = materialize(warehouse, dask=dask, chunk_rows=300, **config)
        metadata = result.asset_materializations_for_node(OP)[0].metadata
        assert metadata["chunks"].value == 7
        for key in ("rows_in", "rows_out", "rows_quarantined", "dagster/row_count"):
            assert metadata[key].value == whole[key].value
        with duckdb.connect(warehouse.path, read_only=True) as con:
            again = con.execute(f"select application_id from {QUARANTINE_TABLE}").fetchall()
        assert sorted(again) == quarantined
        return metadata["placement"].value

    assert chunked(DaskResource()) == {"local": 7}
    assert chunked(DaskResource(scheduler_address="")) == {"local": 7}  # empty: none set
    assert asked == []
    with (
        resources.new_local_cluster(2) as cluster,
        Client(cluster) as client,
    ):
        placement = chunked(DaskResource(scheduler_address=cluster.scheduler_address))
        workers = set(client.scheduler_info()["workers"])
    assert set(placement) <= workers and sum(placement.values()) == 7


def test_a_failed_contract_keeps_the_previous_features_and_shows_the_new_quarantine(warehouse):
    assert materialize(warehouse).success
    assert table_rows(warehouse) == (2_000, 0)
    corrupt_purposes(warehouse, 600)  # a broken feed: 30% of rows
    result = materialize(warehouse)
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert table_rows(warehouse) == (2_000, 600)  # readers keep yesterday's features
    [materialization] = result.asset_materializations_for_node(OP)
    assert materialization.metadata["dagster/row_count"].value == 2_000


def test_threshold_is_configurable(warehouse):
    corrupt_purposes(warehouse, 40)
    result = materialize(warehouse, max_failure_rate=0.05)
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed
    assert evaluation.metadata["max_failure_rate"].value == 0.05
    assert table_rows(warehouse) == (1_960, 40)  # the clean rows go on


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("alter table marts.loan_applications drop column region", "region: missing"),
        (
            "alter table marts.loan_applications alter amount type varchar",
            "amount: VARCHAR, expected DOUBLE or FLOAT",
        ),
        (
            "alter table marts.loan_applications alter bureau_score type double",
            "bureau_score: DOUBLE, expected INTEGER",
        ),
    ],
)
def test_a_changed_mart_fails_naming_the_column_and_writes_nothing(warehouse, change, named):
    assert materialize(warehouse).success
    with duckdb.connect(warehouse.path) as con:
        con.execute(change)
    result = materialize(warehouse)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    while error.cause is not None:
        error = error.cause
    assert named in error.message and "source_schema" in error.message
    assert table_rows(warehouse) == (2_000, 0)


def test_identifier_check_also_scans_the_feature_quarantine(warehouse):
    corrupt_purposes(warehouse, 1, value="jane.doe@example.com")  # a feed bug: an email
    checks = build_identifier_checks(
        [FEATURES_KEY],
        identifier_names(catalogue.sources().values()),
        also_scan={FEATURES_KEY: [QUARANTINE_TABLE]},
    )
    result = materialize(warehouse, checks)
    by_name = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not by_name["no_direct_identifiers"].passed
    assert QUARANTINE_TABLE in by_name["no_direct_identifiers"].metadata["findings"].value
