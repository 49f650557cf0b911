"""``DbtProject``: the dbt project in ``dbt_project/`` as assets.

Every dbt model is an asset keyed ``[schema, name]`` (``staging/stg_applications``), every
dbt test a check on its model (error severity: blocking); a dbt source table in schema
``raw`` is the raw asset of the feed of that name, whatever the source is called. Builds
attach row counts, column schemas and column lineage, read from DuckDB once dbt has exited.
Each model also gets the blocking check ``no_direct_identifiers``.

Under `dg dev` (and `dagster dev`) the project is parsed again when the definitions load and
its files changed since the manifest was parsed, so edits to the SQL show up on reload. Not on
every load, as dagster-dbt's ``prepare_if_dev`` does: each run the UI launches loads the
definitions in a process of its own, and would pay a `dbt parse` (15 s here) to find the
manifest its code server already has.
"""

from __future__ import annotations

import os

import dagster as dg

from mlops_assets.components.landing_source import feed_identifier_names


class DbtProject(dg.Component, dg.Resolvable, dg.Model):
    """The dbt project: its models as assets, its tests as checks."""

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from dagster_dbt.dbt_project import using_dagster_dev

        from mlops_assets.security.checks import build_identifier_checks
        from mlops_assets.transform.assets import build_dbt_assets
        from mlops_assets.transform.parse import prepare_dbt_manifest

        if using_dagster_dev():
            prepare_dbt_manifest(os.environ, if_changed=True)
        models = build_dbt_assets()
        return dg.Definitions(
            assets=[models],
            asset_checks=[
                build_identifier_checks(list(models.keys), feed_identifier_names(context))
            ],
        )
