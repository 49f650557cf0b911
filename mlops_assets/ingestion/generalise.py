"""Generalised replacements: what a feed keeps in raw instead of a quasi-identifier (an age band
instead of a date of birth). A feed declares them as data — a kind from :data:`GENERALISERS` and
the feed columns it reads — never as SQL, so a declaration (YAML) cannot put SQL text anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml

from mlops_assets.settings import DBT_PROJECT_DIR
from mlops_assets.sql import ident, literal

# A declared name (feed, column, generalised value): what DuckDB, the landing folder and a
# lower-cased CSV header all take as it is. A leading "_" is the loader's (lineage, staging).
PLAIN_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}\Z")


class SpecError(ValueError):
    """A declaration (a feed's columns, types, personal data) that cannot be used, and why."""


def shown(value: object) -> str:
    """A declared value for a message: quoted, control characters escaped."""
    return repr(value) if isinstance(value, str) else repr(str(value))


def check_name(value: object, what: str) -> str:
    """``value`` if it is a plain name, else :class:`SpecError` naming ``what``."""
    if not isinstance(value, str) or not PLAIN_NAME.match(value):
        raise SpecError(
            f"{what} {shown(value)} is not a plain name: lower-case a-z, digits and _, starting "
            "with a letter, at most 63 characters"
        )
    return value


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


def year_sql(date: str) -> str:
    """The year of a date (feed text in any of the feeds' formats)."""
    return f"year({parse_timestamp_sql(date)})"


@dataclass(frozen=True)
class Kind:
    """A generaliser: the DuckDB type it yields, the feed columns it reads (by parameter) and
    the SQL it builds from their (validated) names."""

    type: str
    parameters: tuple[str, ...]
    sql: Callable[..., str]


GENERALISERS: dict[str, Kind] = {
    "age_band": Kind("VARCHAR", ("birth", "at"), age_band_sql),
    "year": Kind("INTEGER", ("date",), year_sql),
}


@dataclass(frozen=True)
class Generaliser:
    """A generalised value: ``kind`` over the feed columns ``columns`` (parameter -> column),
    e.g. ``Generaliser("age_band", {"birth": "date_of_birth", "at": "registered_at"})``."""

    kind: str
    columns: Mapping[str, str]

    def __post_init__(self) -> None:
        if self.kind not in GENERALISERS:
            raise SpecError(
                f"generaliser kind {shown(self.kind)} is unknown: the kinds are "
                f"{', '.join(GENERALISERS)}"
            )
        wanted = GENERALISERS[self.kind].parameters
        if set(self.columns) != set(wanted):
            raise SpecError(
                f"generaliser {self.kind} takes the columns {', '.join(wanted)}; "
                f"given {', '.join(map(shown, self.columns)) or 'none'}"
            )
        for parameter, column in self.columns.items():
            check_name(column, f"generaliser {self.kind}: {parameter}")

    @classmethod
    def from_data(cls, data: Any) -> Generaliser:
        """From a mapping like ``{kind: age_band, birth: date_of_birth, at: registered_at}``."""
        if not isinstance(data, Mapping) or "kind" not in data:
            raise SpecError(
                "a generalised value is declared as {kind: <kind>, <parameter>: <column>...} "
                f"with a kind of {', '.join(GENERALISERS)}"
            )
        columns = {k: v for k, v in data.items() if k != "kind"}
        return cls(data["kind"], columns)

    @property
    def type(self) -> str:
        return GENERALISERS[self.kind].type

    def sql(self) -> str:
        """The SQL computing the value from the staged record (columns as the feed names them)."""
        return GENERALISERS[self.kind].sql(**self.columns)
