"""Pipeline health (``monitoring/pipeline_runs``) and the alert on a failed run."""

import dagster as dg


@dg.definitions
def ops() -> dg.Definitions:
    from mlops_assets.ops.assets import build_ops_defs

    return build_ops_defs()
