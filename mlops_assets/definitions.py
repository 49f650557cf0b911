"""The single composition point: every asset, check and resource of the platform.

:func:`build_definitions` binds them to one environment's settings; ``defs`` is what a code
location loads (dagster, dg, the webserver, the daemon): the environment's settings, resolved
once, when the definitions load (not at import).
"""

import dagster as dg

from mlops_assets import automation, catalogue
from mlops_assets.automation import with_policies
from mlops_assets.features.assets import FEATURES_KEY, feature_assets
from mlops_assets.features.validation import QUARANTINE_TABLE
from mlops_assets.ingestion.assets import landing_assets, raw_assets
from mlops_assets.ingestion.sources import identifier_names
from mlops_assets.monitoring.assets import (
    monitoring_assets,
    monitoring_checks,
    monitoring_sensors,
    monitoring_specs,
)
from mlops_assets.ops.alerting import alerting_sensors
from mlops_assets.resources import bind
from mlops_assets.security.checks import build_identifier_checks
from mlops_assets.settings import Settings, get_settings
from mlops_assets.training.assets import model_assets, model_checks, scoring_assets
from mlops_assets.transform.assets import build_dbt_defs


def build_definitions(settings: Settings) -> dg.Definitions:
    """Every definition of the platform, its resources and landing days bound to ``settings``."""
    dbt_defs = build_dbt_defs(settings.dbt_target_dir)
    (dbt_models,) = dbt_defs.assets
    return bind(_definitions(dbt_models).with_resources(dbt_defs.resources), settings)


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(get_settings())


def _definitions(dbt_models: dg.AssetsDefinition) -> dg.Definitions:
    # Every table downstream of the vault: raw tables, dbt models, features, scores, monitoring.
    warehouse_tables = [
        key
        for asset in [*raw_assets, dbt_models, *feature_assets, *scoring_assets]
        for key in asset.keys
    ]

    return dg.Definitions(
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
                identifier_names(catalogue.sources().values()),
                also_scan={FEATURES_KEY: [QUARANTINE_TABLE]},
            ),
            *model_checks,
            *monitoring_checks,
        ],
        # One process per run, steps in order: DuckDB has one writer at a time anyway, the parallel
        # work (CV, drift) goes to Dask, and a subprocess per step would pay ~5 s of imports each.
        executor=dg.in_process_executor,
    )
