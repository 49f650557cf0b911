"""Everything the platform runs, loaded by ``dg`` (and by mlops_assets.definitions):

* ``sources/<feed>/defs.yaml``: LandingSource instances, one per landing feed;
* ``models/<model>/defs.yaml``: TrainedModel instances, one per model;
* ``transform/``: the dbt project; ``features.py``: the feature table and its contract;
* ``automation.py``, ``ops.py``, ``resources.py``: jobs, schedules and sensors; pipeline health
  and alerts; the resources and the executor every run uses.
"""
