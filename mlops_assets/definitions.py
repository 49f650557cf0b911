"""The code location: every component instance and definition under ``mlops_assets/defs/``
(feeds, dbt, features, models, health, automation), bound to one environment's settings.

:func:`build_definitions` binds them to ``settings``; ``defs`` is what a code location loads
(``dg``, ``dagster``, the webserver, the daemon): the environment's settings, resolved once,
when the definitions load (not at import).
"""

import importlib
import warnings

import dagster as dg

from mlops_assets.automation import with_policies
from mlops_assets.resources import bind
from mlops_assets.settings import PROJECT_ROOT, Settings, get_settings

# The modules the defs folder's components and definitions build from. Each imports them only
# when it builds (listing or scaffolding components imports none), and none reads the dbt
# manifest when imported: `mlops run`, when it must wait for `dbt parse` before it can build the
# dbt assets, imports them meanwhile (:func:`import_stages`).
STAGE_MODULES = (
    "mlops_assets.ingestion.assets",
    "mlops_assets.transform.assets",
    "mlops_assets.security.checks",
    "mlops_assets.features.assets",
    "mlops_assets.training.assets",
    "mlops_assets.monitoring.assets",
    "mlops_assets.ops.assets",
)


def import_stages() -> None:
    """Import :data:`STAGE_MODULES` (and so Dagster's dbt integration, scikit-learn, Pandera)."""
    for name in STAGE_MODULES:
        importlib.import_module(name)


def build_definitions(settings: Settings) -> dg.Definitions:
    """Everything declared in the defs folder, with its freshness policies and automation
    conditions, its resources and landing days bound to ``settings``."""
    declared = dg.load_from_defs_folder(project_root=PROJECT_ROOT)
    with warnings.catch_warnings():  # Dagster calls its own map_asset_specs a preview
        warnings.simplefilter("ignore", dg.PreviewWarning)
        declared = declared.map_asset_specs(func=with_policies)
    # One process per run, steps in order: DuckDB has one writer at a time anyway, the parallel
    # work (CV, drift) goes to Dask, and a subprocess per step would pay ~5 s of imports each.
    in_process = dg.Definitions(executor=dg.in_process_executor)
    return bind(dg.Definitions.merge(declared, in_process), settings)


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(get_settings())
