"""The single composition point: every asset, check and resource of the platform."""

from __future__ import annotations

import dagster as dg

from mlops_assets.ingestion.assets import landing_assets, raw_assets
from mlops_assets.resources import default_resources
from mlops_assets.transform.assets import build_dbt_assets

defs = dg.Definitions(
    assets=[*landing_assets, *raw_assets, build_dbt_assets()],
    resources=default_resources(),
)
