"""The single composition point: every asset, check and resource of the platform."""

import dagster as dg

from mlops_assets import automation
from mlops_assets.ops.alerting import alerting_sensors
from mlops_assets.automation import with_policies
from mlops_assets.features.assets import FEATURES_KEY, feature_assets
from mlops_assets.features.validation import QUARANTINE_TABLE
from mlops_assets.ingestion.assets import landing_assets, raw_assets
from mlops_assets.monitoring.assets import (
    DRIFT_KEY,
    monitoring_assets,
    monitoring_sensors,
    monitoring_specs,
)
from mlops_assets.monitoring.daily import COLUMNS_TABLE, REPORTS_TABLE
from mlops_assets.resources import default_resources
from mlops_assets.security.checks import build_identifier_checks
from mlops_assets.training.assets import model_assets, model_checks, scoring_assets
from mlops_assets.transform.assets import build_dbt_assets

dbt_models = build_dbt_assets()
# Every table downstream of the vault: raw tables, dbt models, features, scores, monitoring.
warehouse_tables = [
    key
    for asset in [*raw_assets, dbt_models, *feature_assets, *scoring_assets, *monitoring_assets]
    for key in asset.keys
]

defs = dg.Definitions(
    assets=with_policies(
        [
            *landing_assets,
            *raw_assets,
            dbt_models,
            *feature_assets,
            *model_assets,
            *scoring_assets,
            *monitoring_assets,
            *monitoring_specs,
        ]
    ),
    jobs=automation.jobs,
    schedules=automation.schedules,
    sensors=[*automation.sensors, *monitoring_sensors, *alerting_sensors],
    asset_checks=[
        build_identifier_checks(
            warehouse_tables,
            also_scan={FEATURES_KEY: [QUARANTINE_TABLE]},
            tables_of={DRIFT_KEY: [REPORTS_TABLE, COLUMNS_TABLE]},
        ),
        *model_checks,
    ],
    resources=default_resources(),
    # One process per run, steps in order: DuckDB has one writer at a time anyway, the parallel
    # work (CV, drift) goes to Dask, and a subprocess per step would pay ~5 s of imports each.
    executor=dg.in_process_executor,
)
