"""The domain as declared: every landing feed and every model, as their component instances in
``mlops_assets/defs/`` say. Wiring and the CLI ask here; stage logic is handed the specs.

TEMPORARY: until the components land, the loan domain is listed here.
"""

from __future__ import annotations

from functools import cache

from mlops_assets.ingestion.sources import SOURCE_SPECS, SourceSpec
from mlops_assets.training.spec import ModelSpec


class UnknownModel(LookupError):
    """A model name that no TrainedModel instance declares."""


_LOAN_FEATURES = (
    "amount", "log_amount", "term_months", "instalment", "annual_income", "log_annual_income",
    "loan_to_income", "payment_to_income", "debt_to_income", "bureau_score", "open_accounts",
    "delinq_2yrs", "employment_years", "employment_band", "purpose", "home_ownership", "channel",
    "age_band", "region", "education", "marital_status", "dependents", "customer_tenure_days",
    "prior_applications", "prior_defaults", "prior_repaid", "days_since_prior_application",
)  # fmt: skip


@cache
def sources() -> dict[str, SourceSpec]:
    """Every landing feed, by name."""
    return dict(SOURCE_SPECS)


@cache
def models() -> dict[str, ModelSpec]:
    """Every model, by name, in declaration order."""
    common = dict(
        table="features.loan_features",
        id_column="application_id",
        time_column="applied_at",
        features=_LOAN_FEATURES,
    )
    specs = (
        ModelSpec(
            name="default_classifier",
            task="classification",
            target="defaulted",
            scores_table="predictions.loan_default_scores",
            **common,
        ),
        ModelSpec(
            name="loss_regressor",
            task="regression",
            target="loss_amount",
            where={"defaulted": True},
            **common,
        ),
    )
    return {spec.name: spec for spec in specs}


def model(name: str) -> ModelSpec:
    """The model called ``name``; UnknownModel (naming the declared ones) if there is none."""
    try:
        return models()[name]
    except KeyError:
        raise UnknownModel(
            f"no model called {name!r}: the models are {', '.join(models())}"
        ) from None
