"""Landing days: the daily partitions of the raw tables and of everything computed per day.

Factories partition by :data:`LANDING_DAYS`, the default range; when the definitions load,
:func:`mlops_assets.resources.bind` gives them the range the environment configures
(``MLOPS_FIRST_LANDING_DATE``, ``MLOPS_LANDING_HORIZON_DAYS``). Nothing here reads it.
"""

import dagster as dg

from mlops_assets.settings import DEFAULT_FIRST_LANDING_DATE, DEFAULT_LANDING_HORIZON_DAYS


def landing_days(first_day: str, horizon_days: int) -> dg.DailyPartitionsDefinition:
    """Days from ``first_day`` to the latest a landing file may be named for: today + the
    horizon (``end_offset=1`` would end them today)."""
    return dg.DailyPartitionsDefinition(start_date=first_day, end_offset=horizon_days + 1)


LANDING_DAYS = landing_days(DEFAULT_FIRST_LANDING_DATE, DEFAULT_LANDING_HORIZON_DAYS)
