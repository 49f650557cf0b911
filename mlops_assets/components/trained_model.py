"""``TrainedModel``: one supervised model, declared in YAML.

From its table, target and task the platform derives the rest: the input signature, the
preprocessing, the search on Dask, the registry, the champion/challenger gate, robustness,
plots, scoring by champion and shadow, and the daily drift report of its inputs and score.
"""

from __future__ import annotations

from typing import Any, Literal

import dagster as dg
from pydantic import Field

from mlops_assets.components.scaffold import DefsYamlScaffolder
from mlops_assets.training.spec import CardSpec, FairnessSpec, GateSpec, ModelSpec, ValidationSpec


class Validation(dg.Model, dg.Resolvable):
    cv: Literal["stratified_kfold", "time_series", "leave_one_out"] = "stratified_kfold"
    folds: int = Field(default=3, ge=2)
    holdout_share: float = Field(default=0.2, gt=0, lt=1)
    max_rows: int = Field(default=100_000, ge=100)


class Gate(dg.Model, dg.Resolvable):
    primary: str | None = None
    guards: list[str] | None = None
    margin: float = Field(default=0.005, ge=0)
    guard_tolerance: float = Field(default=0.02, ge=0)
    significance: float = Field(
        default=0.05, gt=0, lt=1, description="Level of the paired test the gain must pass."
    )


class Fairness(dg.Model, dg.Resolvable):
    min_disparate_impact: float = Field(
        default=0.8, ge=0, le=1, description="Four-fifths rule: lowest/highest approval rate."
    )
    max_equalized_odds_difference: float = Field(default=0.1, ge=0, le=1)
    tolerance: float = Field(
        default=0.02, ge=0, description="Worsening against the champion the gate allows."
    )


class Card(dg.Model, dg.Resolvable):
    intended_use: str = ""
    out_of_scope_use: str = ""
    limitations: list[str] = Field(default_factory=list)


class TrainedModelScaffolder(DefsYamlScaffolder):
    """``dg scaffold defs mlops_assets.components.TrainedModel models/<name>``: a defs.yaml
    to fill in, every optional attribute shown with its default."""

    TEMPLATE = """\
    type: {type}

    attributes:
      name: {name}
      description: What the model predicts, for whom.
      task: classification          # or regression
      table: schema.table           # a warehouse table or dbt model
      id_column: id                 # one row per id
      time_column: created_at       # the holdout is the latest rows by this
      target: label                 # labelled rows: target is not null
      # features: [a, b, c]         # default: every other column
      # where: {{column: value}}      # only these labelled rows are learnt from
      # candidates: [logistic_l2, random_forest, hist_gradient_boosting]
      # validation: {{cv: stratified_kfold, folds: 3, holdout_share: 0.2}}
      # gate: {{primary: roc_auc, margin: 0.005, guard_tolerance: 0.02}}
      # scores_table: predictions.{name}
      # monitor: true
      # drift: {{num_stattest: anderson, per_column_threshold: {{income: 0.2}}}}  # monitor defaults
      # protected_attributes: [age_band]   # fairness measured on; no model input unless...
      # use_protected: []                  # ...listed here, with a justification:
      # use_protected_justification: ""
      # fairness: {{min_disparate_impact: 0.8, max_equalized_odds_difference: 0.1, tolerance: 0.02}}
      # card:
      #   intended_use: Who may use the scores, for what.
      #   out_of_scope_use: What they must not be used for.
      #   limitations: [What the model does not know.]
      # reasons: {{feature: Human-readable reason when it raises the score}}
    """


@dg.scaffold_with(TrainedModelScaffolder)
class TrainedModel(dg.Component, dg.Resolvable, dg.Model):
    """One supervised model: trained, registered, gated, scored and monitored."""

    name: str = Field(description="Model name: models/<name> in the graph and the registry.")
    task: Literal["classification", "regression"]
    table: str = Field(description="schema.table the model learns from and scores.")
    id_column: str
    time_column: str
    target: str
    description: str = ""
    features: list[str] | None = Field(
        default=None, description="Input columns; default: every column but id, time, target."
    )
    where: dict[str, bool | int | float | str] = Field(
        default_factory=dict,
        description="Labelled rows learnt from: those where each column equals its value.",
    )
    candidates: list[str] | None = Field(
        default=None, description="Names from the candidate catalogue; default: the task's."
    )
    validation: Validation = Field(default_factory=Validation)
    gate: Gate = Field(default_factory=Gate)
    scores_table: str | None = Field(default=None, description="Default predictions.<name>.")
    monitor: bool = True
    drift: dict[str, Any] = Field(
        default_factory=dict,
        description="The daily monitor's default config: stattest, num_stattest, cat_stattest, "
        "text_stattest, per_column_stattest, threshold, num_threshold, cat_threshold, "
        "text_threshold, per_column_threshold, strict_evidently... (a run's config overrides).",
    )
    protected_attributes: list[str] = Field(
        default_factory=list,
        description="Columns fairness is measured on: no model input unless in use_protected.",
    )
    use_protected: list[str] = Field(
        default_factory=list, description="Protected attributes used as inputs all the same."
    )
    use_protected_justification: str = Field(
        default="", description="Why use_protected is needed: required with it, in the card."
    )
    fairness: Fairness = Field(default_factory=Fairness)
    card: Card = Field(default_factory=Card)
    reasons: dict[str, str] = Field(
        default_factory=dict, description="Feature -> adverse reason text (default generated)."
    )

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(
            name=self.name,
            task=self.task,
            table=self.table,
            id_column=self.id_column,
            time_column=self.time_column,
            target=self.target,
            features=tuple(self.features) if self.features is not None else None,
            where=dict(self.where),
            candidates=tuple(self.candidates) if self.candidates is not None else None,
            validation=ValidationSpec(**self.validation.model_dump()),
            gate=GateSpec(
                **{
                    **self.gate.model_dump(),
                    "guards": tuple(self.gate.guards) if self.gate.guards is not None else None,
                }
            ),
            scores_table=self.scores_table,
            monitor=self.monitor,
            description=self.description,
            protected_attributes=tuple(self.protected_attributes),
            use_protected=tuple(self.use_protected),
            use_protected_justification=self.use_protected_justification,
            fairness=FairnessSpec(**self.fairness.model_dump()),
            card=CardSpec(
                **{**self.card.model_dump(), "limitations": tuple(self.card.limitations)}
            ),
            reasons=dict(self.reasons),
            drift=dict(self.drift),
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from mlops_assets.components.landing_source import feed_identifier_names
        from mlops_assets.monitoring.assets import build_monitor_defs
        from mlops_assets.training.assets import build_model_defs
        from mlops_assets.training.candidates import check_candidates

        spec = self.spec
        check_candidates(spec)
        names = feed_identifier_names(context)
        parts = [build_model_defs(spec, names)]
        if spec.monitor:
            parts.append(build_monitor_defs(spec, names))
        return dg.Definitions.merge(*parts)
