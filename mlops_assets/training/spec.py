"""What a supervised model is, declared: the table it learns from, its target and task, how it is
validated and gated. Everything else (input signature, preprocessing, search, registry, gate,
scoring, monitoring) is derived from this. A ``TrainedModel`` component instance builds one.

Plain Python, no Dagster: every stage takes the ``ModelSpec`` it works for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

CLASSIFICATION = "classification"
REGRESSION = "regression"
Task = Literal["classification", "regression"]

# The holdout metrics of each task (mlops_assets.training.metrics computes them): the gate
# ranks on one and guards others.
METRICS = {
    CLASSIFICATION: (
        *("accuracy", "precision", "recall", "f1"),
        *("roc_auc", "pr_auc", "brier", "log_loss"),
    ),
    REGRESSION: ("mse", "rmse", "mae", "r2"),
}
LOWER_IS_BETTER = frozenset({"brier", "log_loss", "mse", "rmse", "mae"})
DEFAULT_PRIMARY = {CLASSIFICATION: "roc_auc", REGRESSION: "rmse"}
DEFAULT_GUARDS = {CLASSIFICATION: ("pr_auc", "brier", "log_loss"), REGRESSION: ("mae", "r2")}

# A model name is a path segment, an asset key part and a table name: keep it plain.
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# ``schema.table``, both plain identifiers.
TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")


# Columns of a scores table and of the monitor's window, which a model's own columns may not be.
RESERVED_COLUMNS = frozenset({"score", "mode", "model_version", "scored_at"})
# Schemas the platform writes itself: no model's scores go there.
PLATFORM_SCHEMAS = frozenset({"raw", "vault", "audit", "quarantine", "monitoring"})


class SpecError(ValueError):
    """A model declaration that cannot work (named in the message, no data quoted)."""


@dataclass(frozen=True)
class ValidationSpec:
    cv: str = "stratified_kfold"  # stratified_kfold | time_series | leave_one_out
    folds: int = 3
    holdout_share: float = 0.2  # the latest share of labelled rows, by time
    max_rows: int = 100_000  # labelled rows trained on: a stable uniform sample above this


@dataclass(frozen=True)
class GateSpec:
    primary: str | None = None  # default: roc_auc (classification) or rmse (regression)
    guards: tuple[str, ...] | None = None  # default: the task's other metrics
    margin: float = 0.005  # relative gain on the primary metric the challenger needs
    guard_tolerance: float = 0.02  # relative loss allowed on any guard metric
    # The challenger's gain on the primary metric must be significant at this level on the
    # same holdout (a paired test: DeLong for ROC-AUC, a paired bootstrap otherwise).
    significance: float = 0.05


@dataclass(frozen=True)
class FairnessSpec:
    """Bounds on every protected attribute's group metrics (the ``fairness`` check) and how much
    worse than the champion's a challenger's may be (the gate)."""

    # Four-fifths rule: the lowest group's approval rate (score below the threshold) over the
    # highest group's.
    min_disparate_impact: float = 0.8
    max_equalized_odds_difference: float = 0.1
    tolerance: float = 0.02  # absolute worsening of either allowed against the champion


@dataclass(frozen=True)
class CardSpec:
    """What the model card says about use, in the team's words."""

    intended_use: str = ""
    out_of_scope_use: str = ""
    limitations: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: Task
    table: str  # schema.table: a warehouse table or a dbt model
    id_column: str
    time_column: str
    target: str  # labelled rows: target is not null (and ``where`` holds)
    features: tuple[str, ...] | None = None  # default: every other column of the table
    # Labelled rows are further restricted to those where each column equals its value (e.g.
    # a loss model learns only from defaulted loans): compared as parameters, never SQL text.
    where: dict[str, bool | int | float | str] = field(default_factory=dict)
    candidates: tuple[str, ...] | None = None  # default: the task's catalogue
    validation: ValidationSpec = field(default_factory=ValidationSpec)
    gate: GateSpec = field(default_factory=GateSpec)
    scores_table: str | None = None  # default: predictions.<name>
    monitor: bool = True
    description: str = ""
    # Columns of the table whose groups fairness is measured on. They are no model input unless
    # listed in ``use_protected``, which needs a written justification (shown in the card).
    protected_attributes: tuple[str, ...] = ()
    use_protected: tuple[str, ...] = ()
    use_protected_justification: str = ""
    fairness: FairnessSpec = field(default_factory=FairnessSpec)
    card: CardSpec = field(default_factory=CardSpec)
    # Feature -> the human-readable adverse reason shown when it raises a score most (default:
    # generated from the feature's name and value).
    reasons: dict[str, str] = field(default_factory=dict)
    # The daily monitor's default config (its keys: stattest, num_stattest, per_column_threshold,
    # strict_evidently...): a run's config overrides them. Checked where the monitor is built.
    drift: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise SpecError(
                f"model name {self.name!r}: use lower-case letters, digits and underscores "
                "(a letter first, at most 63)"
            )
        if self.task not in METRICS:
            raise SpecError(f"model {self.name}: task must be classification or regression")
        for label, table in (("table", self.table), ("scores_table", self.scores)):
            if not TABLE.match(table):
                raise SpecError(f"model {self.name}: {label} must be schema.table")
        if self.scores.split(".")[0] in PLATFORM_SCHEMAS or self.scores == self.table:
            raise SpecError(
                f"model {self.name}: scores_table may not be its own table nor in the "
                f"platform's schemas ({', '.join(sorted(PLATFORM_SCHEMAS))})"
            )
        named = [self.id_column, self.time_column, self.target, *self.where]
        reserved = sorted(RESERVED_COLUMNS & {*named, *(self.features or ())})
        if reserved:
            raise SpecError(
                f"model {self.name}: {', '.join(reserved)} are the scores' own column names: "
                "rename them in the table"
            )
        if len(set(named[:3])) < 3:
            raise SpecError(f"model {self.name}: id, time and target must be three columns")
        if self.features is not None and set(self.features) & set(named[:3]):
            raise SpecError(f"model {self.name}: features may not include the id, time or target")
        self._check_protected(named[:3])
        if not 0 < self.gate.significance < 1:
            raise SpecError(f"model {self.name}: gate significance must be between 0 and 1")
        bounds = self.fairness
        if not (
            0 <= bounds.min_disparate_impact <= 1
            and 0 <= bounds.max_equalized_odds_difference <= 1
            and bounds.tolerance >= 0
        ):
            raise SpecError(
                f"model {self.name}: fairness bounds: min_disparate_impact and "
                "max_equalized_odds_difference between 0 and 1, tolerance at least 0"
            )
        metrics = METRICS[self.task]
        for metric in (self.primary, *self.guards):
            if metric not in metrics:
                raise SpecError(
                    f"model {self.name}: {metric!r} is not a {self.task} metric "
                    f"({', '.join(metrics)})"
                )

    def _check_protected(self, keys: list[str]) -> None:
        for label, names in (
            ("protected_attributes", self.protected_attributes),
            ("use_protected", self.use_protected),
        ):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:  # the holdout's groups would hold the column twice: training failed
                raise SpecError(
                    f"model {self.name}: {label} lists {', '.join(repeated)} more than once"
                )
        protected = set(self.protected_attributes)
        if protected & set(keys):
            raise SpecError(
                f"model {self.name}: the id, time and target cannot be protected attributes"
            )
        unknown = sorted(set(self.use_protected) - protected)
        if unknown:
            raise SpecError(
                f"model {self.name}: use_protected names {', '.join(unknown)}, which are not "
                "among its protected_attributes"
            )
        if self.use_protected and not self.use_protected_justification.strip():
            raise SpecError(
                f"model {self.name}: using protected attributes as inputs "
                f"({', '.join(self.use_protected)}) needs use_protected_justification"
            )
        listed = sorted(set(self.features or ()) & set(self.measured_only))
        if listed:
            raise SpecError(
                f"model {self.name}: {', '.join(listed)} are protected attributes, measured "
                "for fairness and no model input: remove them from features, or list them in "
                "use_protected with a justification"
            )
        unlisted = [
            a for a in self.use_protected if self.features is not None and a not in self.features
        ]
        if unlisted:
            raise SpecError(
                f"model {self.name}: use_protected {', '.join(unlisted)} must also be listed in "
                "features (the inputs it opts in to)"
            )

    @property
    def measured_only(self) -> tuple[str, ...]:
        """The protected attributes kept out of the model's inputs (fairness is measured on
        them)."""
        return tuple(a for a in self.protected_attributes if a not in self.use_protected)

    @property
    def is_classifier(self) -> bool:
        return self.task == CLASSIFICATION

    @property
    def scores(self) -> str:
        """The table the model's champion and shadow scores go to."""
        return self.scores_table or f"predictions.{self.name}"

    @property
    def primary(self) -> str:
        return self.gate.primary or DEFAULT_PRIMARY[self.task]

    @property
    def guards(self) -> tuple[str, ...]:
        if self.gate.guards is not None:
            return tuple(self.gate.guards)
        return tuple(m for m in DEFAULT_GUARDS[self.task] if m != self.primary)

    @staticmethod
    def higher_is_better(metric: str) -> bool:
        return metric not in LOWER_IS_BETTER
