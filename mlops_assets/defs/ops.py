"""Pipeline health (``monitoring/pipeline_runs``) and the alert on a failed run."""

import dagster as dg

from mlops_assets.ops.assets import build_ops_defs


@dg.definitions
def ops() -> dg.Definitions:
    return build_ops_defs()
