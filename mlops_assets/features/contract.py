"""The feature contract: one Pandera model is the single source of truth.

It declares every column of ``features.loan_features`` — dtype, nullability, range, allowed
categories, its description, its role for the models (``key``, ``feature``, ``label``, or
``protected``: a protected attribute, whose groups fairness is measured on, no model input by
default) and its
privacy classification — plus the cross-column rules and a statistical check. Validation, the
column schema the Dagster UI shows, and the list of model inputs are all read from it.

Missing values, per column: nullable features stay null here and are imputed inside the model
pipeline (so training and scoring impute the same way); ``employment_band`` spells missing as
'unknown'; the history counts are never null (no history is 0). The label columns are null
until the outcome arrives.
"""

import pandas as pd
import pandera.pandas as pa
import pyarrow
from pandera import extensions
from pandera.typing import Series

from mlops_assets.features.engineering import EMPLOYMENT_BANDS

PURPOSES = (
    "debt_consolidation",
    "credit_card",
    "home_improvement",
    "car",
    "small_business",
    "medical",
    "other",
    "green_energy",
)
TERMS = (36, 60)
HOME_OWNERSHIP = ("RENT", "MORTGAGE", "OWN", "OTHER")
CHANNELS = ("web", "mobile", "branch", "broker")
AGE_BANDS = ("under 18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
REGIONS = ("central", "east", "north", "south", "west")
EDUCATION = ("high_school", "bachelor", "master", "doctorate")
MARITAL_STATUS = ("single", "married", "divorced", "widowed")

# Floats are Arrow-backed: NULL is a missing value (allowed where a column is nullable) and NaN
# is a value that fails the column's range, as does an infinity. Every float has a range.
Float = pd.ArrowDtype(pyarrow.float64())

# A feature that is mostly missing means a feed broke, not that applicants stopped answering:
# below this share of values the whole column fails (every nullable feature, unless exempt).
MIN_COMPLETENESS = 0.5
# Plausible share of defaults among labelled loans of a consumer book, checked once at least
# this many labels are known (fewer would make the rate too noisy to judge).
DEFAULT_RATE_BAND = (0.005, 0.5)
MIN_LABELS_FOR_RATE = 200


@extensions.register_check_method(statistics=["min_share"], supported_types=pd.Series)
def min_completeness(series: pd.Series, *, min_share: float) -> bool:
    """At least ``min_share`` of the column's values are present (not null, not NaN)."""
    return bool(series.notna().mean() >= min_share)


def _field(
    description: str,
    *,
    role: str = "feature",
    classification: str = "none",
    may_be_empty: bool = False,
    **checks,
):
    """A contract column. A nullable feature must be mostly present (``min_completeness``)
    unless ``may_be_empty``: a column that is legitimately empty in some data (no returning
    customer yet, no label yet) is exempt."""
    if checks.get("nullable") and role in ("feature", "protected") and not may_be_empty:
        checks["min_completeness"] = MIN_COMPLETENESS
    return pa.Field(
        description=description,
        metadata={"role": role, "classification": classification},
        **checks,
    )


class LoanFeatures(pa.DataFrameModel):
    """One row per loan application: point-in-time features, and the label when known."""

    application_id: Series[str] = _field(
        "Application key (unique).", role="key", unique=True, str_length={"min_value": 1}
    )
    customer_key: Series[str] = _field(
        "Pseudonymous customer key (HMAC-SHA256, hex); never a direct identifier.",
        role="key",
        classification="quasi_identifier",
        str_matches=r"^[0-9a-f]{64}$",
    )
    applied_at: Series[pd.Timestamp] = _field(
        "When the application was submitted: every feature is as of this moment.", role="time"
    )

    amount: Series[Float] = _field(
        "Requested amount; null when the feed sent an impossible one.",
        nullable=True,
        gt=0,
        le=1_000_000,
    )
    log_amount: Series[Float] = _field(
        "ln(1 + amount): tames the right skew.", nullable=True, ge=0, le=14
    )
    term_months: Series[pd.Int64Dtype] = _field("Loan term in months.", isin=list(TERMS))
    instalment: Series[Float] = _field(
        "Monthly principal instalment: amount / term_months.", nullable=True, gt=0, le=1_000_000
    )
    annual_income: Series[Float] = _field(
        "Declared annual income; null when missing or impossible.",
        classification="sensitive",
        nullable=True,
        gt=0,
        le=100_000_000,
    )
    log_annual_income: Series[Float] = _field(
        "ln(1 + annual_income).", classification="sensitive", nullable=True, ge=0, le=19
    )
    loan_to_income: Series[Float] = _field(
        "amount / annual_income.", classification="sensitive", nullable=True, ge=0, le=100
    )
    payment_to_income: Series[Float] = _field(
        "Monthly instalment / monthly income.",
        classification="sensitive",
        nullable=True,
        ge=0,
        le=100,
    )
    debt_to_income: Series[Float] = _field(
        "Debt-to-income ratio in percent.",
        classification="sensitive",
        nullable=True,
        ge=0,
        le=100,
    )
    bureau_score: Series[pd.Int64Dtype] = _field(
        "Credit bureau score.",
        classification="sensitive",
        nullable=True,
        ge=300,
        le=850,
    )
    open_accounts: Series[pd.Int64Dtype] = _field(
        "Open credit accounts.", nullable=True, ge=0, le=200
    )
    delinq_2yrs: Series[pd.Int64Dtype] = _field(
        "Delinquencies in the past two years.",
        classification="sensitive",
        nullable=True,
        ge=0,
        le=100,
    )
    employment_years: Series[pd.Int64Dtype] = _field(
        "Employment length in whole years (10 = ten or more).", nullable=True, ge=0, le=10
    )
    employment_band: Series[str] = _field(
        "Employment length band; 'unknown' when not declared.", isin=list(EMPLOYMENT_BANDS)
    )
    purpose: Series[str] = _field("Loan purpose (the product catalogue).", isin=list(PURPOSES))
    home_ownership: Series[str] = _field(
        "RENT, MORTGAGE, OWN or OTHER.", nullable=True, isin=list(HOME_OWNERSHIP)
    )
    channel: Series[str] = _field("Application channel.", isin=list(CHANNELS))
    age_band: Series[str] = _field(
        "Age band at registration (generalised from the date of birth).",
        role="protected",
        classification="quasi_identifier",
        nullable=True,
        isin=list(AGE_BANDS),
    )
    region: Series[str] = _field(
        "Coarse region of residence.",
        role="protected",
        classification="quasi_identifier",
        nullable=True,
        isin=list(REGIONS),
    )
    education: Series[str] = _field("Highest education level.", nullable=True, isin=list(EDUCATION))
    marital_status: Series[str] = _field(
        "Marital status.",
        role="protected",
        classification="sensitive",
        nullable=True,
        isin=list(MARITAL_STATUS),
    )
    dependents: Series[pd.Int64Dtype] = _field(
        "Number of dependents.", classification="sensitive", nullable=True, ge=0, le=20
    )
    customer_tenure_days: Series[pd.Int64Dtype] = _field(
        "Days from the customer's registration to this application.", nullable=True, ge=0, le=36_500
    )
    prior_applications: Series[pd.Int64Dtype] = _field(
        "The customer's applications submitted before this one.", ge=0
    )
    prior_defaults: Series[pd.Int64Dtype] = _field(
        "Earlier loans of the customer known to have defaulted before the application day.",
        classification="sensitive",
        ge=0,
    )
    prior_repaid: Series[pd.Int64Dtype] = _field(
        "Earlier loans of the customer known to have been repaid before the application day.",
        classification="sensitive",
        ge=0,
    )
    days_since_prior_application: Series[Float] = _field(
        "Days since the customer's previous application; null for a first application.",
        nullable=True,
        may_be_empty=True,
        gt=0,
        le=36_500,
    )
    is_labelled: Series[pd.BooleanDtype] = _field(
        "Whether the outcome is known.", role="label", classification="sensitive"
    )
    defaulted: Series[pd.BooleanDtype] = _field(
        "Whether the loan defaulted; null while unlabelled.",
        role="label",
        classification="sensitive",
        nullable=True,
    )
    loss_amount: Series[Float] = _field(
        "Loss on default (0 when repaid); null while unlabelled.",
        role="label",
        classification="sensitive",
        nullable=True,
        ge=0,
        le=1_000_000,
    )
    outcome_observed_at: Series[pd.Timestamp] = _field(
        "Day the outcome became known; null while unlabelled.",
        role="label",
        classification="sensitive",
        nullable=True,
    )

    @pa.dataframe_check(name="history_consistent")
    def history_consistent(cls, df: pd.DataFrame) -> Series[bool]:
        """Known outcomes of earlier loans cannot outnumber the earlier applications."""
        return df["prior_defaults"] + df["prior_repaid"] <= df["prior_applications"]

    @pa.dataframe_check(name="label_consistent")
    def label_consistent(cls, df: pd.DataFrame) -> Series[bool]:
        """A label is present exactly when the outcome is known, and so is its date."""
        known = df["is_labelled"].fillna(False).astype(bool)  # a null flag fails not_nullable
        return (
            (df["defaulted"].notna() == known)
            & (df["loss_amount"].notna() == known)
            & (df["outcome_observed_at"].notna() == known)
        )

    @pa.dataframe_check(name="loss_within_loan")
    def loss_within_loan(cls, df: pd.DataFrame) -> Series[bool]:
        """Only a defaulted loan has a loss, and the loss never exceeds the amount lent."""
        loss = df["loss_amount"]
        repaid_without_loss = ~(df["defaulted"].fillna(False).astype(bool)) & (loss.fillna(0) > 0)
        above_amount = (loss > df["amount"]).fillna(False)
        return ~(repaid_without_loss | above_amount)

    @pa.dataframe_check(name="outcome_after_application")
    def outcome_after_application(cls, df: pd.DataFrame) -> Series[bool]:
        """An outcome is observed no earlier than the application's day."""
        observed = df["outcome_observed_at"]
        return observed.isna() | (observed >= df["applied_at"].dt.normalize())

    @pa.dataframe_check(name="default_rate_plausible")
    def default_rate_plausible(cls, df: pd.DataFrame) -> bool:
        """Statistical: the default rate of labelled loans lies in DEFAULT_RATE_BAND."""
        labels = df["defaulted"].dropna()
        if len(labels) < MIN_LABELS_FOR_RATE:
            return True
        low, high = DEFAULT_RATE_BAND
        return bool(low <= labels.astype(bool).mean() <= high)

    class Config:
        name = "loan_features"
        strict = True  # an unexpected column is a failure too
