"""The feature table of the loan models (``features/loan_features``) and its checks."""

import dagster as dg

from mlops_assets.components.landing_source import declared_feeds, feed_identifier_names

# The stage modules (pandera, Dask) are imported when the definitions are built, not when the
# component tree is read: the CLI reads it for the declared feeds and models alone.


@dg.definitions
def features(context: dg.ComponentLoadContext) -> dg.Definitions:
    from mlops_assets.features.assets import FEATURES_KEY, loan_features
    from mlops_assets.features.validation import QUARANTINE_TABLE
    from mlops_assets.security.checks import build_identifier_checks

    refuse_clashing_feeds(f.name for f in declared_feeds(context))
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


def refuse_clashing_feeds(feeds) -> None:
    """A feed's quarantine is ``quarantine.<feed>``: a feed named like the feature table would
    share its quarantine table (and break the feature step, or lose its quarantined lines)."""
    from mlops_assets.features.validation import QUARANTINE_TABLE

    for feed in feeds:
        if f"quarantine.{feed}" == QUARANTINE_TABLE:
            raise ValueError(
                f"feed {feed}: its quarantine would be {QUARANTINE_TABLE}, the feature "
                "table's: name the feed otherwise"
            )
