"""Train one model end to end: search, refit the winner, evaluate on the holdout, register,
and decide champion or challenger."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from mlops_assets.faults import crash_point
from mlops_assets.monitoring.reference import reference_attachments
from mlops_assets.training import metrics as m
from mlops_assets.training.dataset import TrainingData
from mlops_assets.training.diagnostics import robustness
from mlops_assets.training.registry import ModelCard, Registry, RegistryError
from mlops_assets.training.search import SearchResult, make_model, predict, search
from mlops_assets.training.spec import ModelSpec

PACKAGE = Path(__file__).resolve().parents[1]
LIBRARIES = ("scikit-learn", "skops", "numpy", "pandas", "duckdb", "pandera", "dask")
ROBUSTNESS_ROWS = 1_000  # holdout rows the robustness scenarios perturb


@dataclass(frozen=True)
class TrainingConfig:
    """How one training runs: the model's declared validation and gate (see
    :meth:`for_model`), the seed and the bootstrap."""

    cv: str = "stratified_kfold"
    folds: int = 3
    holdout_share: float = 0.2
    max_rows: int = 100_000  # labelled rows trained on: a uniform sample above this
    seed: int = 42
    bootstrap_rounds: int = 200
    margin: float = 0.005  # relative gain on the primary metric the challenger needs
    guard_tolerance: float = 0.02  # relative loss allowed on any guard metric

    @classmethod
    def for_model(cls, spec: ModelSpec, **overrides) -> TrainingConfig:
        """The configuration ``spec`` declares (validation and gate), ``overrides`` on top."""
        declared = {
            "cv": spec.validation.cv,
            "folds": spec.validation.folds,
            "holdout_share": spec.validation.holdout_share,
            "max_rows": spec.validation.max_rows,
            "margin": spec.gate.margin,
            "guard_tolerance": spec.gate.guard_tolerance,
        }
        return cls(**{**declared, **overrides})


def code_version() -> str:
    """Hash of the code that defines features and models."""
    digest = hashlib.sha256()
    for path in sorted([*PACKAGE.glob("training/*.py"), *PACKAGE.glob("features/*.py")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def manifest_version(manifest: Path) -> str | None:
    """Hash of the dbt models' checksums in the manifest (not its timestamps)."""
    if not manifest.exists():
        return None
    nodes = json.loads(manifest.read_text())["nodes"]
    sums = sorted((key, node["checksum"]["checksum"]) for key, node in nodes.items())
    return hashlib.sha256(json.dumps(sums).encode()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        **{name: metadata.version(name) for name in LIBRARIES},
    }


# The champion's version, its metrics on the holdout, and why it was refused (if it was).
Champion = tuple[str | None, dict | None, str | None]


@dataclass
class Decision:
    promoted: bool
    reason: str
    champion_version: str | None
    champion_metrics: dict | None = None
    champion_refused: str | None = None  # why the champion did not verify (gated as absent)


@dataclass
class TrainingOutcome:
    card: ModelCard
    new: bool
    search: SearchResult
    holdout_metrics: dict
    intervals: dict
    decision: Decision
    seconds: dict[str, float] = field(default_factory=dict)
    model: object = None
    threshold: float | None = None


def evaluate(model, data: TrainingData, threshold: float | None) -> dict:
    """``model``'s metrics on ``data``'s holdout."""
    prediction = predict(model, data.x_holdout, data.model.is_classifier)
    if data.model.is_classifier:
        return m.classification_metrics(data.y_holdout, prediction, threshold)
    return m.regression_metrics(data.y_holdout, prediction)


def _relative_gain(metric: str, new: float, old: float) -> float:
    """How much better ``new`` is than ``old``, as a share of ``old`` (positive = better)."""
    sign = 1 if ModelSpec.higher_is_better(metric) else -1
    return sign * (new - old) / max(abs(old), 1e-12)


def gate(
    spec: ModelSpec, challenger: dict, champion: dict | None, config: TrainingConfig
) -> tuple[bool, str]:
    """Promote only when the challenger beats the champion on the primary metric by the margin
    and loses no more than the tolerance on any guard metric (both relative to the champion's
    value, so they mean the same for an AUC and for an RMSE in currency)."""
    if champion is None:
        return True, "first model: no champion yet"
    primary = spec.primary
    gain = _relative_gain(primary, challenger[primary], champion[primary])
    if gain < config.margin:
        return (
            False,
            f"{primary} {challenger[primary]:.4f} vs champion {champion[primary]:.4f}: "
            f"gain {gain:+.2%} < margin {config.margin:.2%}",
        )
    for guard in spec.guards:
        loss = -_relative_gain(guard, challenger[guard], champion[guard])
        if loss > config.guard_tolerance:
            return (
                False,
                f"guard {guard} worse by {loss:.2%} > tolerance {config.guard_tolerance:.2%}",
            )
    return (
        True,
        f"{primary} {challenger[primary]:.4f} beats champion {champion[primary]:.4f} by "
        f"{gain:+.2%}; guards within {config.guard_tolerance:.2%}",
    )


def training_definition(data: TrainingData, config: TrainingConfig, manifest: Path | None) -> dict:
    """What defines a model version before the search picks the winner: the task, table and
    target, the data, the validation, the seed, the feature signature, the dbt manifest, code
    and libraries."""
    return {
        "task": data.model.task,
        "table": data.model.table,
        "target": data.model.target,
        "where": data.model.where,
        "seed": config.seed,
        "validation": {
            "cv": config.cv,
            "folds": config.folds,
            "holdout_share": config.holdout_share,
        },
        "training_data_version": data.version,
        "signature": {
            "features": data.spec.columns,
            "dtypes": data.spec.dtypes(),
            "protected": {
                "measured_only": list(data.spec.protected),
                "used_as_input": list(data.model.use_protected),
                "justification": data.model.use_protected_justification,
            },
        },
        "dbt_manifest_version": manifest_version(manifest) if manifest else None,
        "code_version": code_version(),
        "libraries": library_versions(),
    }


def trained_before(
    registry: Registry, data: TrainingData, config: TrainingConfig, manifest: Path | None
) -> ModelCard | None:
    """The registered version this training would reproduce, if any: the search is
    deterministic for a seed, so the same definition gives the same winner and version. A
    version that does not verify (unsealed, tampered) does not count: the model is retrained
    and :meth:`Registry.register` replaces it."""
    wanted = json.loads(json.dumps(training_definition(data, config, manifest), default=str))
    name = data.model.name
    for card in reversed(registry.versions(name)):
        if all(card.data.get(field) == value for field, value in wanted.items()):
            return card if registry.verifies(name, card.version) else None
    return None


def _decide(
    registry: Registry,
    spec: ModelSpec,
    card: ModelCard,
    holdout: dict,
    champion: Champion,
    config: TrainingConfig,
) -> Decision:
    """The champion/challenger gate on a registered version; the verdict is recorded with the
    version, last, so a run that dies before it is decided again by the next run.

    A champion that does not verify is gated as absent. That gives whoever can write the
    registry nothing more than deleting champion.json would, while failing here would keep the
    refused champion in place, and every scoring failing, until a person intervened; the
    version promoted over it is one this training registered and sealed."""
    champion_version, champion_metrics, refused = champion
    model = spec.name
    if card.version == champion_version:
        reason = "already champion" + (
            f"; its refused files were replaced by this training ({refused})" if refused else ""
        )
        decision = Decision(False, reason, champion_version, champion_metrics, refused)
    else:
        promote, reason = gate(spec, holdout, champion_metrics, config)
        if refused:
            reason = f"champion {champion_version} gated as absent, it does not verify: {refused}"
        if promote:
            registry.promote(
                model,
                card.version,
                reason=reason,
                by="champion/challenger gate",
                metrics_before=champion_metrics,
                metrics_after=holdout,
            )
        decision = Decision(promote, reason, champion_version, champion_metrics, refused)
        crash_point("training.promoted")
    registry.record_verdict(model, card.version, decision.promoted, decision.reason)
    return decision


def _champion_on(registry: Registry, data: TrainingData) -> Champion:
    """The current champion's version and its metrics on ``data``'s holdout (None, None when
    there is no champion yet): what a challenger is gated against. A champion that does not
    verify has no metrics, and the reason it was refused."""
    name = data.model.name
    version = registry.champion(name)
    if version is None:
        return None, None, None
    try:
        champion = registry.load(name, version)
    except RegistryError as error:
        return version, None, str(error)
    threshold = registry.card(name, version).data.get("threshold")
    return version, evaluate(champion, data, threshold), None


def settle(
    registry: Registry, data: TrainingData, card: ModelCard, config: TrainingConfig
) -> Decision | None:
    """Gate a version that :func:`trained_before` found registered but never decided on (its
    run died in between), or decided on against a champion that no longer verifies; None when
    there is nothing to decide."""
    name = data.model.name
    champion = registry.champion(name)
    if registry.verdict(name, card.version) is not None and (
        champion is None or registry.verifies(name, champion)
    ):
        return None
    return _decide(registry, data.model, card, card.metrics, _champion_on(registry, data), config)


def train_model(
    data: TrainingData,
    registry: Registry,
    config: TrainingConfig,
    *,
    client=None,
    manifest: Path | None = None,
) -> TrainingOutcome:
    seconds: dict[str, float] = {}
    classifier = data.model.is_classifier
    started = time.perf_counter()
    result = search(data, cv=config.cv, folds=config.folds, seed=config.seed, client=client)
    seconds["search"] = time.perf_counter() - started
    crash_point("training.searched")
    winner = max(result.best().values(), key=lambda t: np.nan_to_num(t.cv_score, nan=-np.inf))

    started = time.perf_counter()
    model = make_model(
        winner.candidate, winner.params, data.spec, config.seed, classifier, config.folds
    ).fit(data.x_train, data.y_train)
    seconds["refit"] = time.perf_counter() - started
    started = time.perf_counter()
    threshold = (
        m.best_threshold(data.y_train, predict(model, data.x_train, True)) if classifier else None
    )
    holdout = evaluate(model, data, threshold)
    intervals = m.bootstrap_intervals(
        data.y_holdout,
        predict(model, data.x_holdout, classifier),
        threshold=threshold,
        rounds=config.bootstrap_rounds,
        seed=config.seed,
    )
    seconds["holdout metrics"] = time.perf_counter() - started

    definition = {
        "candidate": winner.candidate,
        "params": winner.params,
        **training_definition(data, config, manifest),
    }
    champion = _champion_on(registry, data)
    details = {
        "metrics": holdout,
        "metric_intervals": intervals,
        "threshold": threshold,
        "cv_score": winner.cv_score,
        "train_score": winner.train_score,
        "split_at": str(data.split_at),
        "applied_until": str(data.applied_until),
        "rows": {
            "train": len(data.y_train),
            "holdout": len(data.y_holdout),
            "labelled": data.labelled_rows,
        },
        "reference": reference_values(data),
        "card": card_texts(data.model),
        "search": [asdict(trial) for trial in result.trials],
    }
    started = time.perf_counter()
    details["robustness"] = robustness(
        model, data.x_holdout.head(ROBUSTNESS_ROWS), data.spec, classifier, seed=config.seed
    )
    seconds["robustness"] = time.perf_counter() - started
    started = time.perf_counter()
    card, new = registry.register(
        data.model.name,
        model,
        definition,
        details,
        attachments=reference_attachments(
            data.population,
            data.spec,
            predict(model, data.population[data.unseen], classifier),
        ),
    )
    seconds["register"] = time.perf_counter() - started
    crash_point("training.registered")
    if not new and registry.verdict(data.model.name, card.version) is not None and not champion[2]:
        decision = Decision(False, "unchanged: this version is already registered", *champion)
    else:  # new, registered by a run that died before the gate, or the champion is refused
        decision = _decide(registry, data.model, card, holdout, champion, config)
    return TrainingOutcome(
        card, new, result, holdout, intervals, decision, seconds, model, threshold
    )


def card_texts(spec: ModelSpec) -> dict:
    """What the model card says about use, in the team's words (from the declaration)."""
    return {
        "description": spec.description,
        "intended_use": spec.card.intended_use,
        "out_of_scope_use": spec.card.out_of_scope_use,
        "limitations": list(spec.card.limitations),
    }


def reference_values(data: TrainingData) -> dict:
    """Typical training values (median, most frequent), the baseline of explanations."""
    x = data.x_train
    return {
        **{c: float(x[c].median()) if x[c].notna().any() else None for c in data.spec.numeric},
        **{c: (x[c].mode().iloc[0] if x[c].notna().any() else None) for c in data.spec.categorical},
    }
