"""The landing sources: which columns each file must have, how raw values are typed, and what
happens to personal data before anything is written.

Personal data never reaches a raw table:

* ``pseudonymise``: the customer id is replaced by ``customer_key`` = HMAC-SHA256 of the
  normalised id under the keyring's secret (deterministic, so joins work; not reversible);
* ``identifiers``: direct identifiers — and the quasi-identifiers that the models get only in
  generalised form — go encrypted to ``vault.customer_pii``;
* ``generalised``: what may leave the vault boundary instead (age band for date of birth; the
  region, already in the feed, stands for the address and city).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache

import yaml

from mlops_assets.settings import DBT_PROJECT_DIR
from mlops_assets.sql import ident, literal

DIRECT_IDENTIFIER = "direct_identifier"
QUASI_IDENTIFIER = "quasi_identifier"
SENSITIVE = "sensitive"
NOT_PERSONAL = "none"
CLASSIFICATIONS = (DIRECT_IDENTIFIER, QUASI_IDENTIFIER, SENSITIVE, NOT_PERSONAL)


@cache
def timestamp_formats() -> tuple[str, ...]:
    """The date formats the feeds use: one list, kept in dbt_project.yml for dbt and Python."""
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    return tuple(project["vars"]["timestamp_formats"])


def parse_timestamp_sql(column: str) -> str:
    """SQL parsing the text column ``column`` with any of the feeds' date formats."""
    formats_sql = ", ".join(literal(f) for f in timestamp_formats())
    return f"try_strptime(trim({ident(column)}), [{formats_sql}])"


def age_band_sql(birth: str, at: str) -> str:
    """Ten-year age band at ``at`` (e.g. registration) from a birth date, both feed text."""
    age_sql = (
        f"floor(date_diff('day', {parse_timestamp_sql(birth)}, {parse_timestamp_sql(at)}) / 365.25)"
    )
    return (
        f"case when {age_sql} is null then null when {age_sql} < 18 then 'under 18' "
        f"when {age_sql} < 25 then '18-24' when {age_sql} < 35 then '25-34' "
        f"when {age_sql} < 45 then '35-44' when {age_sql} < 55 then '45-54' "
        f"when {age_sql} < 65 then '55-64' else '65+' end"
    )


@dataclass(frozen=True)
class SourceSpec:
    """A landing source: ``<landing>/<name>/<YYYY-MM-DD>.csv`` files loaded into ``raw.<name>``."""

    name: str
    columns: dict[str, str]  # required column in the file -> DuckDB type it is cast to on load
    required_values: tuple[str, ...]  # columns that must not be empty in any row
    description: str
    pseudonymise: str | None = None  # id column replaced by customer_key
    identifiers: tuple[str, ...] = ()  # columns that go to the vault, never to raw
    generalised: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (type, SQL)
    classification: dict[str, str] = field(default_factory=dict)  # raw column -> class

    @property
    def table(self) -> str:
        return f"raw.{self.name}"

    @property
    def has_personal_data(self) -> bool:
        return bool(self.pseudonymise or self.identifiers)

    @property
    def raw_columns(self) -> dict[str, str]:
        """The columns of ``raw.<name>`` (before the lineage columns): no identifiers."""
        kept = {
            c: t
            for c, t in self.columns.items()
            if c not in self.identifiers and c != self.pseudonymise
        }
        key = {"customer_key": "VARCHAR"} if self.pseudonymise else {}
        return {**key, **kept, **{c: t for c, (t, _) in self.generalised.items()}}

    def classify(self, column: str) -> str:
        return self.classification.get(column, NOT_PERSONAL)


# Dates stay text in raw: feeds mix formats, and parsing them is staging's job (dbt), so raw keeps
# exactly what arrived. Numbers are typed here: a value that is not a number is quarantined.
SOURCE_SPECS: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        SourceSpec(
            name="customers",
            columns={
                "customer_id": "VARCHAR",
                "full_name": "VARCHAR",
                "email": "VARCHAR",
                "phone": "VARCHAR",
                "national_id": "VARCHAR",
                "date_of_birth": "VARCHAR",
                "street_address": "VARCHAR",
                "city": "VARCHAR",
                "region": "VARCHAR",
                "education": "VARCHAR",
                "marital_status": "VARCHAR",
                "dependents": "INTEGER",
                "registered_at": "VARCHAR",
            },
            required_values=("customer_id",),
            description="Customer master data as registered; identifiers are in the vault.",
            pseudonymise="customer_id",
            identifiers=(
                "full_name",
                "email",
                "phone",
                "national_id",
                "street_address",
                "date_of_birth",
                "city",
            ),
            generalised={"age_band": ("VARCHAR", age_band_sql("date_of_birth", "registered_at"))},
            classification={
                "customer_key": QUASI_IDENTIFIER,
                "age_band": QUASI_IDENTIFIER,
                "region": QUASI_IDENTIFIER,
                "dependents": SENSITIVE,
                "marital_status": SENSITIVE,
            },
        ),
        SourceSpec(
            name="applications",
            columns={
                "application_id": "VARCHAR",
                "customer_id": "VARCHAR",
                "applied_at": "VARCHAR",
                "amount": "DOUBLE",
                "term_months": "INTEGER",
                "purpose": "VARCHAR",
                "annual_income": "DOUBLE",
                "employment_length": "VARCHAR",
                "home_ownership": "VARCHAR",
                "debt_to_income": "DOUBLE",
                "bureau_score": "INTEGER",
                "open_accounts": "INTEGER",
                "delinq_2yrs": "INTEGER",
                "channel": "VARCHAR",
            },
            required_values=("application_id", "customer_id", "applied_at"),
            description="Loan applications as submitted, one file per day.",
            pseudonymise="customer_id",
            classification={
                "customer_key": QUASI_IDENTIFIER,
                "annual_income": SENSITIVE,
                "debt_to_income": SENSITIVE,
                "bureau_score": SENSITIVE,
                "delinq_2yrs": SENSITIVE,
            },
        ),
        SourceSpec(
            name="outcomes",
            columns={
                "application_id": "VARCHAR",
                "observed_at": "VARCHAR",
                "defaulted": "INTEGER",
                "loss_amount": "DOUBLE",
            },
            required_values=("application_id", "observed_at", "defaulted"),
            description="Default labels and loss amounts, arriving weeks after the application.",
            classification={"defaulted": SENSITIVE, "loss_amount": SENSITIVE},
        ),
    )
}


def identifier_name(column: str) -> str:
    """A column name reduced for comparison with identifier names, whatever its spelling:
    compatibility forms and accents decomposed (fullwidth letters, ``é``), case folded, then only
    a-z and digits kept: ``E-Mail``, ``EMAIL``, fullwidth Email -> email; ``FullName`` -> fullname.
    """
    return re.sub(r"[^a-z0-9]+", "", unicodedata.normalize("NFKD", column).casefold())


# Names of the columns that identify a person in some feed (vaulted or pseudonymised there): a
# feed without personal data refuses a file with an extra column so named.
IDENTIFIER_COLUMNS = frozenset(
    identifier_name(column)
    for spec in SOURCE_SPECS.values()
    for column in (*spec.identifiers, *filter(None, [spec.pseudonymise]))
)

# Columns the loader adds to every raw table: where each row came from.
LINEAGE_COLUMNS = {
    "_extra_columns": "JSON",
    "_source_file": "VARCHAR",
    "_line_number": "BIGINT",
    "_loaded_at": "TIMESTAMP",
}
LINEAGE_DESCRIPTIONS = {
    "_extra_columns": "Columns the file had beyond the expected ones, as JSON.",
    "_source_file": "Landing file the row came from, relative to the landing directory.",
    "_line_number": "Line of that file.",
    "_loaded_at": "When the file was loaded.",
}
