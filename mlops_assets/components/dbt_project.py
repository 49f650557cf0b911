"""``DbtProject``: the dbt project in ``dbt_project/`` as assets.

Every dbt model is an asset keyed ``[schema, name]`` (``staging/stg_applications``), every
dbt test a check on its model (error severity: blocking); a dbt source table in schema
``raw`` is the raw asset of the feed of that name, whatever the source is called. Builds
attach row counts, column schemas and column lineage, read from DuckDB once dbt has exited.
Each model also gets the blocking check ``no_direct_identifiers``.
"""

from __future__ import annotations

import dagster as dg

from mlops_assets.components.landing_source import feed_identifier_names


class DbtProject(dg.Component, dg.Resolvable, dg.Model):
    """The dbt project: its models as assets, its tests as checks."""

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from mlops_assets.security.checks import build_identifier_checks
        from mlops_assets.transform.assets import build_dbt_assets

        models = build_dbt_assets()
        return dg.Definitions(
            assets=[models],
            asset_checks=[
                build_identifier_checks(list(models.keys), feed_identifier_names(context))
            ],
        )
