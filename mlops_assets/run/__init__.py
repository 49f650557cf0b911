"""`mlops run`: what to run (:mod:`.plan`), launching Dagster in this process and reading its
events (:mod:`.execute`), the summary (:mod:`.report`), runs whose process died
(:mod:`.recovery`), and the Dagster instance of a home (:mod:`.instance`).

Settings reach Dagster as arguments, never through the environment: the caller resolves
:class:`~mlops_assets.settings.Settings` once, and the run binds the definitions' resources and
landing days to them (:func:`mlops_assets.resources.bind`) and opens the home's instance
(:func:`.instance.dagster_instance`).
"""

from mlops_assets.run.execute import run_pipeline
from mlops_assets.run.plan import RunSetupError
from mlops_assets.run.report import RunReport

__all__ = ["RunReport", "RunSetupError", "run_pipeline"]
