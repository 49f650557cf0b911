"""The dbt models on data from a real `mlops run`, and the dbt CLI on its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import duckdb
import pytest

from mlops_assets.settings import DBT_PROJECT_DIR
from tests.conftest import BIN, SMALL

DIRECT_IDENTIFIERS = {"full_name", "email", "phone", "national_id", "street_address"}


@pytest.fixture
def con(pipeline_run):
    """Read-only and closed after each test: dbt, a writer, needs the lock in the tests below."""
    connection = duckdb.connect(str(pipeline_run.warehouse), read_only=True)
    yield connection
    connection.close()


def scalar(con, sql: str):
    return con.execute(sql).fetchone()[0]


def test_models_build_into_schemas_named_exactly_by_layer(con):
    tables = set(
        con.execute(
            "select table_schema || '.' || table_name from information_schema.tables"
        ).fetchall()
    )
    for name in (
        "staging.stg_customers",
        "staging.stg_applications",
        "staging.stg_outcomes",
        "intermediate.int_customer_profiles",
        "intermediate.int_applications_labelled",
        "marts.loan_applications",
    ):
        assert (name,) in tables


def test_no_identifier_column_outside_the_vault(con):
    columns = con.execute(
        "select table_schema, table_name, column_name from information_schema.columns "
        "where table_schema in ('raw', 'quarantine', 'staging', 'intermediate', 'marts')"
    ).fetchall()
    names = {c for _, _, c in columns}
    assert not (DIRECT_IDENTIFIERS | {"customer_id", "date_of_birth", "city"}) & names
    assert ("marts", "loan_applications", "customer_key") in columns
    assert ("marts", "loan_applications", "age_band") in columns


def test_one_row_per_application_after_deduplication(con):
    raw_ids = scalar(con, "select count(distinct trim(application_id)) from raw.applications")
    raw_rows = scalar(con, "select count(*) from raw.applications")
    assert raw_rows > raw_ids  # the feed re-sends records
    assert scalar(con, "select count(*) from staging.stg_applications") == raw_ids
    assert scalar(con, "select count(*) from marts.loan_applications") == raw_ids
    assert scalar(con, "select count(*) from staging.stg_customers") == scalar(
        con, "select count(distinct customer_key) from raw.customers"
    )


def test_mixed_date_formats_are_parsed_day_first(con):
    mixed = con.execute(
        """
        select r.applied_at, strftime(s.applied_at, '%d/%m/%Y %H:%M:%S'),
               strftime(s.applied_at, '%Y-%m-%dT%H:%M:%SZ')
        from raw.applications r join staging.stg_applications s
          on s.source_file = r._source_file and s.source_line = r._line_number
        where r.applied_at not like '____-__-__ __:__:__'
        """
    ).fetchall()
    assert mixed, "the generated data has alternative date formats"
    assert all(raw in (day_first, iso_t) for raw, day_first, iso_t in mixed)
    assert (
        scalar(con, "select count(*) from staging.stg_applications where applied_at is null") == 0
    )


def test_casing_and_whitespace_are_normalised(con):
    assert scalar(
        con, "select count(*) from raw.applications where purpose <> lower(trim(purpose))"
    )
    assert (
        scalar(
            con,
            "select count(*) from staging.stg_applications "
            "where purpose <> lower(trim(purpose)) or channel <> lower(trim(channel))",
        )
        == 0
    )


def test_impossible_values_become_null_and_are_flagged(con):
    impossible = scalar(
        con,
        "select count(*) from staging.stg_applications where quality_flags is not null",
    )
    assert impossible > 0
    assert (
        scalar(
            con,
            "select count(*) from marts.loan_applications where "
            "(quality_flags like '%amount%' and amount is not null) or "
            "(quality_flags like '%bureau%' and bureau_score is not null) or amount <= 0 "
            "or bureau_score not between 300 and 850",
        )
        == 0
    )


def test_labels_are_delayed_and_recent_applications_have_none(con):
    labelled, total = con.execute(
        "select count(*) filter (where is_labelled), count(*) from marts.loan_applications"
    ).fetchone()
    assert 0 < labelled < total
    recent = scalar(
        con,
        "select count(*) from marts.loan_applications where is_labelled and applied_at > "
        "(select max(applied_at) from marts.loan_applications) - interval 28 days",
    )
    assert recent == 0
    assert scalar(con, "select min(label_delay_days) from marts.loan_applications") >= 28
    assert (
        scalar(
            con,
            "select count(*) from marts.loan_applications where not is_labelled "
            "and (defaulted is not null or loss_amount is not null)",
        )
        == 0
    )


def test_dbt_cli_builds_on_its_own_against_the_same_warehouse(pipeline_run):
    env = {**os.environ, "MLOPS_HOME": str(pipeline_run.home)}
    result = subprocess.run(
        [str(BIN / "dbt"), "build", "--profiles-dir", "."],
        cwd=DBT_PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Completed successfully" in result.stdout or "PASS=" in result.stdout
    with duckdb.connect(str(pipeline_run.warehouse), read_only=True) as con:
        days = scalar(con, "select count(distinct application_date) from marts.loan_applications")
    assert days == SMALL.days


def test_dbt_waits_for_another_writer_instead_of_failing(pipeline_run):
    """A writer holds the DuckDB lock for a few seconds; dbt's connect retries wait it out."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(4); con.close()",
            str(pipeline_run.warehouse),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    result = subprocess.run(
        [str(BIN / "dbt"), "run", "--select", "stg_outcomes", "--profiles-dir", "."],
        cwd=DBT_PROJECT_DIR,
        env={**os.environ, "MLOPS_HOME": str(pipeline_run.home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    holder.wait(timeout=30)
    assert result.returncode == 0, result.stdout[-3000:]
    assert time.monotonic() - started >= 2  # it waited for the lock


def test_one_model_builds_alone_on_a_fresh_warehouse_without_erroring_cross_model_tests(
    pipeline_run, tmp_path, monkeypatch
):
    """A backfill launches each dbt model once its raw days are in. Built alone on a warehouse
    that has raw tables but no staging models yet, stg_applications succeeds: its relationships
    test to stg_customers (and stg_outcomes' test to it) waits for a build of both models."""
    import shutil

    import dagster as dg

    from mlops_assets.resources import WarehouseResource
    from mlops_assets.transform.assets import build_dbt_assets
    from mlops_assets.transform.resource import dbt_resource

    shutil.copy(pipeline_run.warehouse, tmp_path / "warehouse.duckdb")
    # dbt builds the warehouse resource's file, whatever MLOPS_HOME says.
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("DBT_INDIRECT_SELECTION", raising=False)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as writer:
        for model in ("stg_applications", "stg_customers", "stg_outcomes"):
            writer.execute(f"drop table staging.{model} cascade")
    result = dg.materialize(
        [build_dbt_assets()],
        selection=[dg.AssetKey(["staging", "stg_applications"])],
        resources={
            "dbt": dbt_resource(tmp_path / "dbt" / "target"),
            "warehouse": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
        },
        run_config={"ops": {"dbt_models": {"config": {"fetch_table_metadata": False}}}},
        raise_on_error=False,
    )
    assert result.success
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks and all(checks.values())
    assert "unique_stg_applications_application_id" in checks
    assert not any(name.startswith("relationships_") for name in checks)


MODELS = (
    "staging.stg_applications",
    "staging.stg_customers",
    "staging.stg_outcomes",
    "intermediate.int_customer_profiles",
    "intermediate.int_applications_labelled",
    "marts.loan_applications",
)


def test_every_model_materialization_carries_its_row_count_columns_and_lineage(pipeline_run, con):
    """Table metadata of `mlops run`'s dbt build, for the UI: read from the warehouse after
    dbt exited (mlops_assets.transform.table_metadata), not through a dbt adapter."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(pipeline_run.home / "dagster")) as instance:
        # That run's, not the latest: other tests run again without table metadata.
        entries = instance.all_logs(
            pipeline_run.summary["run_id"], of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        )
    materialized = {
        e.asset_materialization.asset_key.to_user_string(): e.asset_materialization.metadata
        for e in entries
    }
    latest = {name: materialized[name.replace(".", "/")] for name in MODELS}
    for name, metadata in latest.items():
        schema, table = name.split(".")
        assert metadata["dagster/row_count"].value == scalar(con, f"select count(*) from {name}")
        columns = con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = ? and table_name = ? order by ordinal_position",
            [schema, table],
        ).fetchall()
        described = metadata["dagster/column_schema"].schema.columns
        assert [(c.name, c.type) for c in described] == columns, name
    lineage = latest["marts.loan_applications"]["dagster/column_lineage"].column_lineage
    assert {
        (d.asset_key.to_user_string(), d.column_name) for d in lineage.deps_by_column["channel"]
    } == {("intermediate/int_applications_labelled", "channel")}
    staged = latest["staging.stg_applications"]["dagster/column_lineage"].column_lineage
    assert ("raw/applications", "application_id") in {
        (d.asset_key.to_user_string(), d.column_name)
        for d in staged.deps_by_column["application_id"]
    }
