"""The Dagster asset: the contract is what the UI shows, the check blocks, metadata is recorded."""

import dagster as dg
import duckdb
import pytest

from mlops_assets.features.assets import FEATURES_KEY, loan_features
from mlops_assets.features.contract import LoanFeatures
from mlops_assets.resources import WarehouseResource
from mlops_assets.sample_data.marts import load_synthetic_mart

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
        # 2% of applications come with a purpose outside the catalogue.
        con.execute(
            "update marts.loan_applications set purpose = 'crypto' "
            "where application_id in (select application_id from marts.loan_applications "
            "order by application_id limit 40)"
        )
    return WarehouseResource(path=str(path))


def materialize(warehouse: WarehouseResource, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [loan_features],
        resources={"warehouse": warehouse},
        run_config={"ops": {OP: {"config": config}}},
        raise_on_error=False,
    )


def test_contract_check_blocks_above_the_threshold_and_reports_why(warehouse):
    result = materialize(warehouse)
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["failure_rate"].value == pytest.approx(0.02)
    assert "| purpose:isin | 40 |" in evaluation.metadata["failures_by_check"].value
    assert "crypto" in evaluation.metadata["failure_sample"].value

    [materialization] = result.asset_materializations_for_node(OP)
    metadata = materialization.metadata
    assert metadata["dagster/row_count"].value == 1_960
    assert metadata["rows_in"].value == 2_000
    assert metadata["rows_quarantined"].value == 40
    assert metadata["validity"].value == pytest.approx(0.98)
    assert metadata["duplicate_rows"].value == 0
    assert metadata["completeness/amount"].value == 1.0
    assert 0 < metadata["completeness/defaulted"].value < 1  # recent loans have no label yet
    assert metadata["freshness_hours"].value > 0
    assert "newest_applied_at" in metadata
    with duckdb.connect(warehouse.path, read_only=True) as con:
        counts = con.execute(
            "select (select count(*) from features.loan_features), "
            "(select count(*) from quarantine.loan_features)"
        ).fetchall()[0]
    assert counts == (1_960, 40)


def test_threshold_is_configurable(warehouse):
    result = materialize(warehouse, max_failure_rate=0.05)
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed
    assert evaluation.metadata["max_failure_rate"].value == 0.05
