"""``LandingSource``: one landing feed, declared in YAML.

Files arrive as ``<landing>/<name>/<YYYY-MM-DD>.csv`` and load into ``raw.<name>``, with
everything a feed gets: the ledger (each file exactly once), line accounting, quarantine with
reasons, personal data sealed before anything is written, the landing sensor, the identifier
scan, and the table's column schema in the UI.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from mlops_assets.components.scaffold import DefsYamlScaffolder
from mlops_assets.ingestion.sources import SourceSpec


class PersonalData(dg.Model, dg.Resolvable):
    pseudonymise: str | None = Field(
        default=None,
        description="Id column replaced by a keyed hash (customer_key): joins work, the id "
        "never reaches the warehouse.",
    )
    identifiers: list[str] = Field(
        default_factory=list, description="Columns that go encrypted to the vault, never to raw."
    )
    generalised: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Columns that leave the vault instead of identifiers, each a registered "
        "kind over declared columns, e.g. {kind: age_band, birth: date_of_birth, at: "
        "registered_at} (mlops_assets/ingestion/generalise.py).",
    )
    classification: dict[str, str] = Field(
        default_factory=dict,
        description="Class of each raw column: direct_identifier, quasi_identifier, sensitive "
        "or none (the default).",
    )


class LandingSourceScaffolder(DefsYamlScaffolder):
    """``dg scaffold defs mlops_assets.components.LandingSource sources/<name>``."""

    TEMPLATE = """\
    type: {type}

    attributes:
      name: {name}                  # <landing>/{name}/<YYYY-MM-DD>.csv -> raw.{name}
      description: What one row of this feed is.
      columns:                      # header name -> DuckDB type it is cast to
        id: VARCHAR
        created_at: VARCHAR         # dates stay text in raw: staging parses them
        amount: DOUBLE
      required: [id, created_at]    # a line with one of these empty is quarantined
      # personal_data:
      #   pseudonymise: customer_id
      #   identifiers: [full_name, email]
      #   classification: {{amount: sensitive}}
    """


@dg.scaffold_with(LandingSourceScaffolder)
class LandingSource(dg.Component, dg.Resolvable, dg.Model):
    """One landing feed loaded into ``raw.<name>``."""

    name: str = Field(description="Feed name: landing folder, raw table and asset key.")
    description: str = ""
    columns: dict[str, str] = Field(description="Expected header -> DuckDB type.")
    required: list[str] = Field(default_factory=list, description="Columns never empty.")
    personal_data: PersonalData | None = None

    @property
    def spec(self) -> SourceSpec:
        """The feed as a plain spec, checked: plain names, known types and generalisers."""
        return SourceSpec.from_data(self.model_dump(exclude_none=True))

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from mlops_assets.ingestion.assets import build_source_defs

        return build_source_defs(self.spec, feed_identifier_names(context))


def declared_feeds(context: dg.ComponentLoadContext) -> list[SourceSpec]:
    """Every LandingSource instance of the project ``context`` loads."""
    return [c.spec for c in context.component_tree.get_all_components(of_type=LandingSource)]


def feed_identifier_names(context: dg.ComponentLoadContext) -> frozenset[str]:
    """The identifier column names of every declared feed: what no table downstream of the
    vault may have (the ``no_direct_identifiers`` checks)."""
    from mlops_assets.ingestion.sources import identifier_names

    return identifier_names(declared_feeds(context))
