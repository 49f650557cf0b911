"""The landing sources: which columns each file must have, how raw values are typed, and what
happens to personal data before anything is written.

Personal data never reaches a raw table:

* ``pseudonymise``: the customer id is replaced by ``customer_key`` = HMAC-SHA256 of the
  normalised id under the keyring's secret (deterministic, so joins work; not reversible);
* ``identifiers``: direct identifiers — and the quasi-identifiers that the models get only in
  generalised form — go encrypted to ``vault.customer_pii``;
* ``generalised``: what may leave the vault boundary instead (age band for date of birth; the
  region, already in the feed, stands for the address and city), declared as data
  (:mod:`mlops_assets.ingestion.generalise`).

A spec is validated when it is made, from code or from plain data (:meth:`SourceSpec.from_data`,
what a LandingSource component's YAML gives): names are plain, types are from
:data:`COLUMN_TYPES`, and every column it refers to is one of its columns.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mlops_assets.ingestion.generalise import Generaliser, SpecError, check_name, shown


class Classification(StrEnum):
    """How personal a raw column is (the UI's column tags)."""

    DIRECT_IDENTIFIER = "direct_identifier"
    QUASI_IDENTIFIER = "quasi_identifier"
    SENSITIVE = "sensitive"
    NONE = "none"


# The DuckDB types a landing column may be cast to on load.
COLUMN_TYPES = (
    "VARCHAR",
    "BOOLEAN",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "FLOAT",
    "DOUBLE",
    "DATE",
    "TIMESTAMP",
)
PSEUDONYM = "customer_key"
# The keys of a feed declared as data (:meth:`SourceSpec.from_data`).
SOURCE_KEYS = frozenset({"name", "description", "columns", "required", "personal_data"})
PERSONAL_DATA_KEYS = frozenset({"pseudonymise", "identifiers", "generalised", "classification"})


@dataclass(frozen=True)
class SourceSpec:
    """A landing source: ``<landing>/<name>/<YYYY-MM-DD>.csv`` files loaded into ``raw.<name>``."""

    name: str
    columns: dict[str, str]  # required column in the file -> DuckDB type it is cast to on load
    required_values: tuple[str, ...]  # columns that must not be empty in any row
    description: str
    pseudonymise: str | None = None  # id column replaced by customer_key
    identifiers: tuple[str, ...] = ()  # columns that go to the vault, never to raw
    generalised: dict[str, Generaliser] = field(default_factory=dict)  # raw column -> how
    classification: dict[str, Classification] = field(default_factory=dict)  # raw column -> class

    def __post_init__(self) -> None:
        check_name(self.name, "source name")
        where = f"source {self.name}"
        if len(self.columns) < 2:
            raise SpecError(f"{where}: declare at least two columns (a CSV file has two or more)")
        for column, dtype in self.columns.items():
            check_name(column, f"{where}: column")
            if dtype not in COLUMN_TYPES:
                raise SpecError(
                    f"{where}: column {column} has type {shown(dtype)}; the types are "
                    f"{', '.join(COLUMN_TYPES)}"
                )
        for what, names in (
            ("required", self.required_values),
            ("identifiers", self.identifiers),
            ("pseudonymise", [self.pseudonymise] if self.pseudonymise is not None else []),
            *(
                (f"generalised {name} ({g.kind})", list(g.columns.values()))
                for name, g in self.generalised.items()
            ),
        ):
            unknown = [c for c in names if not isinstance(c, str) or c not in self.columns]
            if unknown:
                raise SpecError(
                    f"{where}: {what} names {', '.join(map(shown, unknown))}, not a declared column"
                )
        if self.identifiers and not self.pseudonymise:
            raise SpecError(
                f"{where}: identifiers go to the vault under the pseudonym — declare the column "
                "to pseudonymise too"
            )
        if self.pseudonymise in self.identifiers:
            raise SpecError(f"{where}: {self.pseudonymise} is pseudonymised, not an identifier")
        kept = [c for c in self.columns if c not in self.identifiers and c != self.pseudonymise]
        for name in self.generalised:
            check_name(name, f"{where}: generalised value")
            if name in kept or (self.pseudonymise and name == PSEUDONYM):
                raise SpecError(f"{where}: generalised {name} would replace a raw column")
        if self.pseudonymise and PSEUDONYM in kept:
            raise SpecError(f"{where}: column {PSEUDONYM} is the pseudonym's; rename it")
        for column, kind in self.classification.items():
            if column not in self.raw_columns:
                raise SpecError(f"{where}: classification names {shown(column)}, not a raw column")
            if kind not in set(Classification):
                raise SpecError(
                    f"{where}: classification {shown(kind)} of {column} is unknown: the "
                    f"classes are {', '.join(Classification)}"
                )

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> SourceSpec:
        """A spec from plain data, as a LandingSource component declares it::

            name: payments
            description: Card payments, one file per day.
            columns: {payment_id: VARCHAR, customer_id: VARCHAR, amount: DOUBLE, ...}
            required: [payment_id]
            personal_data:  # optional
              pseudonymise: customer_id
              identifiers: [full_name, date_of_birth]
              generalised: {age_band: {kind: age_band, birth: date_of_birth, at: paid_at}}
              classification: {customer_key: quasi_identifier, amount: sensitive}

        Types may be written in any case. :class:`SpecError` says what is wrong."""
        data = _mapping(data, "a source", SOURCE_KEYS, {"name", "columns"})
        where = f"source {shown(data['name'])}"
        columns = _mapping(data["columns"], f"{where}: columns")
        personal = _mapping(
            data.get("personal_data") or {},
            f"{where}: personal_data",
            PERSONAL_DATA_KEYS,
        )
        generalised = _mapping(personal.get("generalised") or {}, f"{where}: generalised")
        return cls(
            name=data["name"],
            columns={c: t.upper() if isinstance(t, str) else t for c, t in columns.items()},
            required_values=tuple(_names(data.get("required"), f"{where}: required")),
            description=str(data.get("description") or ""),
            pseudonymise=personal.get("pseudonymise"),
            identifiers=tuple(_names(personal.get("identifiers"), f"{where}: identifiers")),
            generalised={n: Generaliser.from_data(g) for n, g in generalised.items()},
            classification=dict(
                _mapping(personal.get("classification") or {}, f"{where}: classification")
            ),
        )

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
        key = {PSEUDONYM: "VARCHAR"} if self.pseudonymise else {}
        return {**key, **kept, **{c: g.type for c, g in self.generalised.items()}}

    def classify(self, column: str) -> str:
        return str(self.classification.get(column, Classification.NONE))


def _mapping(
    value: Any,
    what: str,
    allowed: frozenset[str] | None = None,
    needed: frozenset[str] | set[str] = frozenset(),
) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{what} must be a mapping")
    unknown = [k for k in value if allowed is not None and k not in allowed]
    if unknown:
        raise SpecError(
            f"{what}: unknown key(s) {', '.join(map(shown, unknown))}; the keys are "
            f"{', '.join(sorted(allowed or ()))}"
        )
    missing = sorted(needed - set(value))
    if missing:
        raise SpecError(f"{what}: missing {', '.join(missing)}")
    return value


def _names(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise SpecError(f"{what} must be a list of column names")
    return list(value)


def identifier_name(column: str) -> str:
    """A column name reduced for comparison with identifier names, whatever its spelling:
    compatibility forms and accents decomposed (fullwidth letters, ``é``), case folded, then only
    a-z and digits kept: ``E-Mail``, ``EMAIL``, fullwidth Email -> email; ``FullName`` -> fullname.
    """
    return re.sub(r"[^a-z0-9]+", "", unicodedata.normalize("NFKD", column).casefold())


def identifier_names(specs: Iterable[SourceSpec]) -> frozenset[str]:
    """The :func:`identifier_name` of every column that identifies a person in one of ``specs``
    (vaulted or pseudonymised there): a feed without personal data refuses a file with an extra
    column so named, and no warehouse table may have a column so named."""
    return frozenset(
        identifier_name(column)
        for spec in specs
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
