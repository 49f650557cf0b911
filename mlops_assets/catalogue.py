"""The domain as declared: every landing feed and every model, as their component instances
under ``mlops_assets/defs/`` say (``LandingSource`` and ``TrainedModel``). Dagster wiring gets
them from its load context; the CLI and ``mlops run`` ask here. Stage logic is handed specs.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from mlops_assets.ingestion.sources import SourceSpec
from mlops_assets.training.spec import ModelSpec

DEFS_DIR = Path(__file__).resolve().parent / "defs"


class UnknownModel(LookupError):
    """A model name that no TrainedModel instance declares."""


@cache
def _tree():
    import dagster as dg

    return dg.ComponentTree.for_project(DEFS_DIR)


@cache
def sources() -> dict[str, SourceSpec]:
    """Every landing feed, by name."""
    from mlops_assets.components import LandingSource

    return {c.spec.name: c.spec for c in _tree().get_all_components(of_type=LandingSource)}


@cache
def models() -> dict[str, ModelSpec]:
    """Every model, by name."""
    from mlops_assets.components import TrainedModel

    return {c.spec.name: c.spec for c in _tree().get_all_components(of_type=TrainedModel)}


def model(name: str) -> ModelSpec:
    """The model called ``name``; UnknownModel (naming the declared ones) if there is none."""
    try:
        return models()[name]
    except KeyError:
        raise UnknownModel(
            f"no model called {name!r}: the models are {', '.join(models())}"
        ) from None
