"""The landing sources: which columns each file must have and how raw values are typed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceSpec:
    """A landing source: ``<landing>/<name>/<YYYY-MM-DD>.csv`` files loaded into ``raw.<name>``."""

    name: str
    columns: dict[str, str]  # required column -> DuckDB type it is cast to on load
    required_values: tuple[str, ...]  # columns that must not be empty in any row
    description: str

    @property
    def table(self) -> str:
        return f"raw.{self.name}"


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
            description="Customer master data as registered, including personal data.",
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
        ),
    )
}

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
