"""The platform's Dagster component types. An instance is a ``defs.yaml`` under
``mlops_assets/defs/``: ``dg scaffold defs mlops_assets.components.<Type> <path>`` writes one.

* ``LandingSource``: one landing feed (files -> ``raw.<name>``, ledger, quarantine, vault);
* ``TrainedModel``: one supervised model (train, register, gate, score, monitor);
* ``DbtProject``: the dbt project, its models as assets with table metadata.
"""

from mlops_assets.components.dbt_project import DbtProject
from mlops_assets.components.landing_source import LandingSource
from mlops_assets.components.trained_model import TrainedModel

__all__ = ["DbtProject", "LandingSource", "TrainedModel"]
