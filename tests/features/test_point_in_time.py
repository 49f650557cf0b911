"""Point in time through the whole chain: a customer update that lands later (raw -> dbt ->
features) must not change the features of applications made before it arrived."""

import os
import shutil
import subprocess

import duckdb
import pandas as pd

from mlops_assets.features.engineering import stage_features
from mlops_assets.settings import DBT_PROJECT_DIR
from tests.conftest import BIN

CUTOFF = "2025-01-21"  # day 20 of the 40 generated days
# Records are dated by landing day, not hour: an update landing on the cut-off day may have
# arrived after that day's applications, so those must not see it either.
SEEN_FROM = "2025-01-22"


def staged_before_cutoff(warehouse) -> pd.DataFrame:
    with duckdb.connect(str(warehouse)) as con:
        stage_features(con)
        return con.execute(
            f"select * from _features where applied_at < timestamp '{SEEN_FROM}' order by rowid"
        ).df()


def test_later_customer_update_does_not_reach_back_into_earlier_features(pipeline_run, tmp_path):
    shutil.copy(pipeline_run.warehouse, tmp_path / "warehouse.duckdb")
    warehouse = tmp_path / "warehouse.duckdb"
    before = staged_before_cutoff(warehouse)

    # Every customer known before the cut-off is re-sent in the cut-off day's file, changed.
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            f"""
            insert into raw.customers
            select * replace (
                'customers/{CUTOFF}.csv' as _source_file,
                case when region = 'north' then 'south' else 'north' end as region,
                'doctorate' as education,
                'widowed' as marital_status
            )
            from raw.customers where _source_file < 'customers/{CUTOFF}.csv'
            """
        )
        resent = con.execute(
            "select count(distinct customer_key) from raw.customers "
            f"where _source_file < 'customers/{CUTOFF}.csv'"
        ).fetchall()[0][0]
    result = subprocess.run(
        [str(BIN / "dbt"), "run", "--profiles-dir", ".", "--target-path", str(tmp_path / "t")],
        cwd=DBT_PROJECT_DIR,
        env={**os.environ, "MLOPS_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]

    pd.testing.assert_frame_equal(before, staged_before_cutoff(warehouse))
    with duckdb.connect(str(warehouse), read_only=True) as con:
        versions = con.execute(
            "select count(*) from intermediate.int_customer_profiles "
            f"where landed_on = date '{CUTOFF}' and valid_from > '-infinity'::timestamp"
        ).fetchall()[0][0]
        updated_later = con.execute(
            "select count(*) from marts.loan_applications "
            f"where applied_at >= timestamp '{SEEN_FROM}' and marital_status = 'widowed' "
            "and education = 'doctorate' and customer_tenure_days > 0"
        ).fetchall()[0][0]
    assert versions == resent > 0  # the re-sent customers got a new version...
    assert updated_later > 0  # ...which later applications of those customers do see
