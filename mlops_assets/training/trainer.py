"""Train one model end to end: search, refit the winner, evaluate on the holdout, register,
and decide champion or challenger."""

from __future__ import annotations

import hashlib
import importlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_assets.faults import crash_point
from mlops_assets.monitoring.reference import reference_attachments
from mlops_assets.training import metrics as m
from mlops_assets.training.dataset import FeatureSpec, TrainingData, as_model_input
from mlops_assets.training.diagnostics import robustness
from mlops_assets.training.explain import (
    Explanation,
    explanation_summary,
    global_explanation,
    load_shap,
)
from mlops_assets.training.fairness import compare_fairness, measure_fairness
from mlops_assets.training.registry import ModelCard, Registry, RegistryError
from mlops_assets.training.search import SearchResult, make_model, predict, search
from mlops_assets.training.significance import PairedTest, paired_test
from mlops_assets.training.spec import ModelSpec

PACKAGE = Path(__file__).resolve().parents[1]
# Lineage of a version: what fits and serialises it, and what measures its fairness and explains it.
LIBRARIES = (
    *("scikit-learn", "skops", "numpy", "pandas", "duckdb", "pandera", "dask"),
    *("fairlearn", "shap"),
)
ROBUSTNESS_ROWS = 1_000  # holdout rows the robustness scenarios perturb
# What stores the winner (its skops file), imported while the workers search, with shap.
LATER_IMPORTS = ("skops.io",)


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


@dataclass(frozen=True)
class Champion:
    """The current champion on the holdout a challenger is gated on: its version, and its
    metrics, scores (aligned with the holdout rows), threshold and fairness there. All None
    when there is no champion; only the version and why it was refused when it does not
    verify."""

    version: str | None = None
    metrics: dict | None = None
    prediction: np.ndarray | None = None
    threshold: float | None = None
    fairness: dict | None = None
    refused: str | None = None


@dataclass
class Decision:
    promoted: bool
    reason: str
    champion_version: str | None
    champion_metrics: dict | None = None
    champion_refused: str | None = None  # why the champion did not verify (gated as absent)
    test: PairedTest | None = None  # the paired test of the primary metric against the champion
    fairness_worse: list[str] | None = None  # None: fairness not compared (no champion)

    def details(self) -> dict:
        """What gate.json records beside the verdict: the test and the fairness comparison,
        and the champion it was gated against (its version and holdout metrics)."""
        return {
            "test": self.test.as_dict() if self.test else None,
            "fairness": None if self.fairness_worse is None else {"worse": self.fairness_worse},
            "champion": {"version": self.champion_version, "metrics": self.champion_metrics}
            if self.champion_version
            else None,
        }


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
    prediction: np.ndarray | None = None  # the model's scores of the holdout rows
    explanation: Explanation | None = None  # the SHAP values of a holdout sample


def holdout_metrics(data: TrainingData, prediction: np.ndarray, threshold: float | None) -> dict:
    """The metrics of ``prediction``, a model's scores of ``data``'s holdout rows."""
    if data.model.is_classifier:
        return m.classification_metrics(data.y_holdout, prediction, threshold)
    return m.regression_metrics(data.y_holdout, prediction)


def _relative_gain(metric: str, new: float, old: float) -> float:
    """How much better ``new`` is than ``old``, as a share of ``old`` (positive = better)."""
    sign = 1 if ModelSpec.higher_is_better(metric) else -1
    return sign * (new - old) / max(abs(old), 1e-12)


def gate(
    spec: ModelSpec,
    challenger: dict,
    champion: dict | None,
    config: TrainingConfig,
    test: PairedTest | None = None,
    fairness_worse: list[str] = (),
    violations: list[str] = (),
) -> tuple[bool, str]:
    """Promote only when the challenger beats the champion on the primary metric by the margin
    and significantly (``test``, the paired test on the same holdout, at the model's
    significance level; no test, no promotion), loses no more than the tolerance on any guard
    metric (margin and tolerance relative to the champion's value, so they mean the same for an
    AUC and for an RMSE in currency), and makes fairness no worse than the champion's beyond
    the fairness tolerance (``fairness_worse``: what is worse). The first model is promoted,
    the fairness bounds it breaks (``violations``) named in the reason."""
    if champion is None:
        return True, "first model: no champion yet" + _broken(violations)
    primary = spec.primary
    gain = _relative_gain(primary, challenger[primary], champion[primary])
    versus = f"{primary} {challenger[primary]:.4f} vs champion {champion[primary]:.4f}"
    if gain < config.margin:
        return False, f"{versus}: gain {gain:+.2%} < margin {config.margin:.2%}"
    significance = spec.gate.significance
    if test is None or not test.significant(significance):
        tested = _described(test) if test else "no paired test"
        return False, f"{versus}: gain {gain:+.2%} not significant at {significance:g} ({tested})"
    for guard in spec.guards:
        loss = -_relative_gain(guard, challenger[guard], champion[guard])
        if loss > config.guard_tolerance:
            return (
                False,
                f"guard {guard} worse by {loss:.2%} > tolerance {config.guard_tolerance:.2%}",
            )
    if fairness_worse:
        return False, (
            f"fairness worse than the champion's beyond {spec.fairness.tolerance:g}: "
            + "; ".join(fairness_worse)
        )
    return (
        True,
        f"{primary} {challenger[primary]:.4f} beats champion {champion[primary]:.4f} by "
        f"{gain:+.2%}, significant at {significance:g} ({_described(test)}); guards within "
        f"{config.guard_tolerance:.2%}; fairness not worse",
    )


def _broken(violations: list[str]) -> str:
    return f"; fairness bounds broken: {'; '.join(violations)}" if violations else ""


def _described(test: PairedTest) -> str:
    method = "DeLong" if test.method == "delong" else "paired bootstrap"
    low, high = test.ci
    return (
        f"{method} p = {test.p_value:.3g}, difference {test.difference:+.4f}, "
        f"{test.level:.0%} interval [{low:+.4f}, {high:+.4f}]"
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
    data: TrainingData,
    card: ModelCard,
    prediction: np.ndarray,
    champion: Champion,
    config: TrainingConfig,
) -> Decision:
    """The champion/challenger gate on a registered version (``card``, with its holdout metrics,
    threshold and fairness; ``prediction``: its scores of ``data``'s holdout rows, which the
    champion scored too); the verdict is recorded with the version, last, so a run that dies
    before it is decided again by the next run.

    A champion that does not verify is gated as absent. That gives whoever can write the
    registry nothing more than deleting champion.json would, while failing here would keep the
    refused champion in place, and every scoring failing, until a person intervened; the
    version promoted over it is one this training registered and sealed."""
    spec = data.model
    model = spec.name
    refused = champion.refused
    if card.version == champion.version:
        reason = "already champion" + (
            f"; its refused files were replaced by this training ({refused})" if refused else ""
        )
        decision = Decision(False, reason, champion.version, champion.metrics, refused)
    else:
        fairness = card.data.get("fairness")
        fairness = fairness if isinstance(fairness, dict) else {}
        test, worse = None, None
        if champion.metrics is not None:
            test = paired_test(
                spec.primary,
                data.y_holdout,
                champion.prediction,
                prediction,
                thresholds=(champion.threshold, card.data.get("threshold")),
                rounds=config.bootstrap_rounds,
                seed=config.seed,
            )
            worse = compare_fairness(fairness, champion.fairness, spec.fairness)
        violations = fairness.get("violations") or []
        promote, reason = gate(
            spec, card.metrics, champion.metrics, config, test, worse or [], violations
        )
        if refused:
            reason = (
                f"champion {champion.version} gated as absent, it does not verify: {refused}"
                + _broken(violations)
            )
        if promote:
            registry.promote(
                model,
                card.version,
                reason=reason,
                by="champion/challenger gate",
                metrics_before=champion.metrics,
                metrics_after=card.metrics,
            )
        decision = Decision(
            promote, reason, champion.version, champion.metrics, refused, test, worse
        )
        crash_point("training.promoted")
    registry.record_verdict(
        model, card.version, decision.promoted, decision.reason, **decision.details()
    )
    return decision


def _champion_on(registry: Registry, data: TrainingData, config: TrainingConfig) -> Champion:
    """The current champion on ``data``'s holdout (its metrics, scores and fairness there, at
    the threshold of its own card): what a challenger is gated against. Empty when there is no
    champion yet; a champion that does not verify has only its version and why it was
    refused."""
    name = data.model.name
    version = registry.champion(name)
    if version is None:
        return Champion()
    try:
        champion = registry.load(name, version)
    except RegistryError as error:
        return Champion(version, refused=str(error))
    card = registry.card(name, version)
    threshold = card.data.get("threshold")
    prediction = predict(champion, _champion_input(card, data), data.model.is_classifier)
    fairness = measure_fairness(
        data.y_holdout,
        prediction,
        data.groups_holdout,
        threshold=threshold,
        bounds=data.model.fairness,
        rounds=0,
        seed=config.seed,
    )
    metrics = holdout_metrics(data, prediction, threshold)
    return Champion(version, metrics, prediction, threshold, fairness)


def _champion_input(card: ModelCard, data: TrainingData) -> pd.DataFrame:
    """``data``'s holdout rows as the champion's signature takes them. A champion trained while
    a protected attribute was one of its inputs (before it was declared protected) gets it from
    the holdout's groups; its columns come in its own order."""
    signature = card.data.get("signature") or {}
    features, dtypes = signature.get("features"), signature.get("dtypes")
    if not features or features == list(data.x_holdout.columns):
        return data.x_holdout
    extra = [c for c in features if c not in data.x_holdout and c in data.groups_holdout]
    numeric = tuple(c for c in extra if dtypes[c] == "float64")
    groups = as_model_input(
        data.groups_holdout, FeatureSpec(numeric, tuple(c for c in extra if c not in numeric))
    )
    return pd.concat([data.x_holdout, groups], axis=1)[features]


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
    champion = _champion_on(registry, data, config)
    model = registry.load(name, card.version)
    prediction = predict(model, data.x_holdout, data.model.is_classifier)
    return _decide(registry, data, card, prediction, champion, config)


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
    champion = Champion()

    def meanwhile() -> None:
        """What needs no winner, done while the workers search: the champion on the holdout,
        and the imports of what explains and stores the winner (seconds each in a process
        that has loaded Dagster), instead of after the search, when nothing else runs."""
        nonlocal champion
        started = time.perf_counter()
        champion = _champion_on(registry, data, config)
        seconds["gate"] = time.perf_counter() - started
        load_shap()
        for module in LATER_IMPORTS:
            importlib.import_module(module)

    started = time.perf_counter()
    result = search(
        data,
        cv=config.cv,
        folds=config.folds,
        seed=config.seed,
        client=client,
        meanwhile=meanwhile,
    )
    # The step's time in the search, what ran meanwhile included (the champion's "gate" too).
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
    prediction = predict(model, data.x_holdout, classifier)
    holdout = holdout_metrics(data, prediction, threshold)
    intervals = m.bootstrap_intervals(
        data.y_holdout,
        prediction,
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
        "search_seconds": round(seconds["search"], 2),
        "search_placement": dict(sorted(result.placement.items())),
    }
    if data.model.protected_attributes:
        started = time.perf_counter()
        details["fairness"] = measure_fairness(
            data.y_holdout,
            prediction,
            data.groups_holdout,
            threshold=threshold,
            bounds=data.model.fairness,
            rounds=config.bootstrap_rounds,
            seed=config.seed,
        )
        seconds["fairness"] = time.perf_counter() - started
    started = time.perf_counter()
    details["robustness"] = robustness(
        model, data.x_holdout.head(ROBUSTNESS_ROWS), data.spec, classifier, seed=config.seed
    )
    seconds["robustness"] = time.perf_counter() - started
    started = time.perf_counter()
    explanation = global_explanation(model, data, seed=config.seed)
    details["explanation"] = explanation_summary(explanation)
    seconds["explanation"] = time.perf_counter() - started
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
    started = time.perf_counter()
    if (
        not new
        and registry.verdict(data.model.name, card.version) is not None
        and not champion.refused
    ):
        decision = Decision(
            False, "unchanged: this version is already registered", champion.version,
            champion.metrics,
        )  # fmt: skip
    else:  # new, registered by a run that died before the gate, or the champion is refused
        decision = _decide(registry, data, card, prediction, champion, config)
    seconds["gate"] += time.perf_counter() - started
    return TrainingOutcome(
        card, new, result, holdout, intervals, decision, seconds, model, threshold, prediction,
        explanation,
    )  # fmt: skip


def card_texts(spec: ModelSpec) -> dict:
    """What the model card says about use, in the team's words (from the declaration)."""
    return {
        "description": spec.description,
        "intended_use": spec.card.intended_use,
        "out_of_scope_use": spec.card.out_of_scope_use,
        "limitations": list(spec.card.limitations),
    }


def reference_values(data: TrainingData) -> dict:
    """Typical training values (median, most frequent): what a reason code compares a value
    with ("higher than typical")."""
    x = data.x_train
    return {
        **{c: float(x[c].median()) if x[c].notna().any() else None for c in data.spec.numeric},
        **{c: (x[c].mode().iloc[0] if x[c].notna().any() else None) for c in data.spec.categorical},
    }
