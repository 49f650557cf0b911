"""Jobs, schedules and sensors over everything declared (see mlops_assets.automation); the
freshness policies and automation conditions are attached when the definitions are bound
(:func:`mlops_assets.definitions.build_definitions`)."""

import dagster as dg


@dg.definitions
def jobs_and_triggers() -> dg.Definitions:
    from mlops_assets import automation

    return dg.Definitions(
        jobs=automation.jobs, schedules=automation.schedules, sensors=automation.sensors
    )
