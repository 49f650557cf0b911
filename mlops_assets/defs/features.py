"""The feature table of the loan models (``features/loan_features``) and its checks."""

import dagster as dg

from mlops_assets.components.landing_source import feed_identifier_names
from mlops_assets.features.assets import FEATURES_KEY, loan_features
from mlops_assets.features.validation import QUARANTINE_TABLE
from mlops_assets.security.checks import build_identifier_checks


@dg.definitions
def features(context: dg.ComponentLoadContext) -> dg.Definitions:
    return dg.Definitions(
        assets=[loan_features],
        asset_checks=[
            build_identifier_checks(
                [FEATURES_KEY],
                feed_identifier_names(context),
                also_scan={FEATURES_KEY: [QUARANTINE_TABLE]},
            )
        ],
    )
