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
        metrics = METRICS[self.task]
        for metric in (self.primary, *self.guards):
            if metric not in metrics:
                raise SpecError(
                    f"model {self.name}: {metric!r} is not a {self.task} metric "
                    f"({', '.join(metrics)})"
                )

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
