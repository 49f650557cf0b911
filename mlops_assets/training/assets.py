"""Dagster wiring of training and scoring: `models/default_classifier`, `models/loss_regressor`,
`predictions/loan_default_scores`."""

from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from mlops_assets.features.assets import FEATURES_KEY
from mlops_assets.features.validation import FEATURE_TABLE, table_exists
from mlops_assets.markdown import md_table, placement_metadata
from mlops_assets.resources import WRITER_POOL, DaskResource, RegistryResource, WarehouseResource
from mlops_assets.settings import get_settings
from mlops_assets.training.dataset import NotEnoughLabels, load_training_data
from mlops_assets.training.diagnostics import markdown_image, plot_model, robustness
from mlops_assets.training.registry import content_version
from mlops_assets.training.scoring import (
    MODEL,
    SCORES_TABLE,
    challenger_version,
    score_applications,
)
from mlops_assets.training.search import CV_STRATEGIES, is_classifier
from mlops_assets.training.trainer import (
    PRIMARY,
    TrainingConfig,
    TrainingOutcome,
    settle,
    train_model,
    trained_before,
)
from mlops_assets.warehouse import scalar, table_version

MODELS = ("default_classifier", "loss_regressor")
SCORES_KEY = dg.AssetKey(["predictions", "loan_default_scores"])


class TrainConfig(dg.Config):
    cv: str = Field(default="stratified_kfold", description=f"One of {', '.join(CV_STRATEGIES)}.")
    folds: int = Field(default=3, ge=2, description="Folds of k-fold or time-series CV.")
    holdout_share: float = Field(default=0.2, gt=0, lt=1, description="Latest share held out.")
    max_rows: int = Field(
        default=100_000,
        ge=100,
        description="Labelled rows trained on: above this, a uniform sample (the same rows every "
        "run), still split by time. Bounds training memory and time; scoring covers every row.",
    )
    seed: int = 42
    bootstrap_rounds: int = Field(default=200, ge=10)
    margin: float = Field(
        default=0.005, description="Relative gain on the primary metric the challenger needs."
    )
    guard_tolerance: float = Field(
        default=0.02, description="Relative loss allowed on any guard metric."
    )


def _metadata(outcome: TrainingOutcome, model: str) -> dict:
    card = outcome.card.data
    trials = sorted(outcome.search.trials, key=lambda t: (t.candidate, str(t.params)))
    metadata = {
        "version": card["version"],
        "retrained": True,
        "candidate": card["candidate"],
        "params": dg.MetadataValue.json(card["params"]),
        "new_version": outcome.new,
        "promoted": outcome.decision.promoted,
        "decision": outcome.decision.reason,
        "champion_before": outcome.decision.champion_version or "none",
        "training_data_version": card["training_data_version"],
        "train_rows": card["rows"]["train"],
        "holdout_rows": card["rows"]["holdout"],
        "labelled_rows": card["rows"].get("labelled", 0),
        "search_seconds": round(outcome.seconds["search"], 2),
        "placement": placement_metadata(outcome.search.placement),
        "candidates": dg.MetadataValue.md(
            md_table(
                ("candidate", "params", "train score", "cv score", "gap"),
                [
                    (
                        t.candidate,
                        t.params,
                        f"{t.train_score:.4f}",
                        f"{t.cv_score:.4f}",
                        f"{t.train_score - t.cv_score:+.4f}",
                    )
                    for t in trials
                ],
            )
        ),
        "holdout_metrics": dg.MetadataValue.md(
            md_table(
                ("metric", "value", "95% CI", "champion before"),
                [
                    (
                        name,
                        f"{value:.4f}",
                        "[{:.4f}, {:.4f}]".format(
                            *outcome.intervals.get(name, (float("nan"),) * 2)
                        ),
                        f"{outcome.decision.champion_metrics[name]:.4f}"
                        if outcome.decision.champion_metrics
                        else "-",
                    )
                    for name, value in outcome.holdout_metrics.items()
                ],
            )
        ),
    }
    for name, value in outcome.holdout_metrics.items():
        metadata[f"holdout/{name}"] = dg.MetadataValue.float(float(value))
    metadata["primary_metric"] = PRIMARY[model]
    return metadata


ROBUSTNESS = "robustness"
ROBUSTNESS_ROWS = 1_000


def build_robustness_check(model: str) -> dg.AssetChecksDefinition:
    """Blocking check of the version the model asset last materialized (a separate step, so it
    is skipped, not failed, when there were too few labels to train)."""
    key = dg.AssetKey(["models", model])

    @dg.asset_check(
        asset=key,
        name=ROBUSTNESS,
        blocking=True,
        description="Predictions stay finite (and probabilities in [0, 1]) under noise, 30% "
        "missing values, extreme and negative values, and unseen categories.",
    )
    def robustness_check(
        context: dg.AssetCheckExecutionContext,
        warehouse: WarehouseResource,
        registry: RegistryResource,
    ) -> dg.AssetCheckResult:
        event = context.instance.get_latest_materialization_event(key)
        version = event.asset_materialization.metadata["version"].value
        fitted = registry.open().load(model, version)
        with warehouse.connect(read_only=True) as con:
            # The newest labelled rows of a sample: no need to read the whole table.
            data = load_training_data(
                con, model, max_rows=5 * ROBUSTNESS_ROWS, max_population=ROBUSTNESS_ROWS
            )
        report = robustness(
            fitted, data.x_holdout.head(ROBUSTNESS_ROWS), data.spec, is_classifier(model), seed=0
        )
        failed = [name for name, r in report.items() if not (r["finite"] and r["in_range"])]
        return dg.AssetCheckResult(
            passed=not failed,
            metadata={
                "version": version,
                "scenarios": dg.MetadataValue.md(
                    md_table(
                        ("scenario", "finite", "in range", "mean |change|"),
                        [
                            (name, r["finite"], r["in_range"], f"{r['mean_abs_change']:.4f}")
                            for name, r in report.items()
                        ],
                    )
                ),
                "failed_scenarios": ", ".join(failed) or "none",
            },
        )

    return robustness_check


def build_model_asset(model: str) -> dg.AssetsDefinition:
    key = dg.AssetKey(["models", model])

    @dg.asset(
        key=key,
        output_required=False,  # too few labels yet: nothing to materialize, and no failure
        deps=[FEATURES_KEY],
        group_name="training",
        kinds={"scikit-learn", "dask"},
        description=f"Trains `{model}`: candidates cross-validated on Dask, the winner refit "
        "and judged on a time-ordered holdout, registered under $MLOPS_HOME/models, and "
        "promoted only if it beats the champion (champion/challenger gate).",
    )
    def train(
        context: dg.AssetExecutionContext,
        config: TrainConfig,
        warehouse: WarehouseResource,
        dask: DaskResource,
        registry: RegistryResource,
    ) -> Iterator[dg.MaterializeResult]:
        with warehouse.connect(read_only=True) as con:
            try:
                data = load_training_data(
                    con, model, holdout_share=config.holdout_share, max_rows=config.max_rows
                )
            except NotEnoughLabels as reason:
                # Not a failure: labels arrive weeks after applications. Nothing is
                # materialized, so scoring waits too, and the previous champion stays.
                context.log.warning(f"{model} not trained: {reason}")
                return
        settings = get_settings()
        training = TrainingConfig(**config.model_dump())
        manifest = settings.dbt_target_dir / "manifest.json"
        models = registry.open()
        previous = trained_before(models, data, training, manifest)
        if previous is not None:
            # Unchanged data (and config, code, libraries): the search would pick the same
            # winner. Same data version, so nothing downstream counts it as new. A version
            # whose run died before the gate decided on it is decided now.
            settled = settle(models, data, previous, training)
            log = context.log.warning if settled and settled.champion_refused else context.log.info
            log(
                f"{model}: training data {data.version} unchanged since version "
                f"{previous.version}: not retrained"
                + (f"; gate: {settled.reason}" if settled else "")
            )
            yield dg.MaterializeResult(
                metadata={
                    "version": previous.version,
                    "retrained": False,
                    "decision": settled.reason
                    if settled
                    else "unchanged: trained on the same data before",
                    "champion": models.champion(model) or "none",
                    "training_data_version": data.version,
                },
                data_version=dg.DataVersion(previous.version),
            )
            return
        with dask.client() as client:
            outcome = train_model(data, models, training, client=client, manifest=manifest)
        log = context.log.warning if outcome.decision.champion_refused else context.log.info
        log(f"{model} {outcome.card.version}: {outcome.decision.reason}")
        metadata = _metadata(outcome, model)
        plots_dir = settings.reports_dir / model / outcome.card.version
        if outcome.new or not plots_dir.exists():
            plot_model(outcome.model, data, outcome.threshold, plots_dir, seed=config.seed)
        for path in sorted(plots_dir.glob("*.png")):
            metadata[f"plot/{path.stem}"] = dg.MetadataValue.md(markdown_image(path))
        metadata["reports"] = dg.MetadataValue.path(str(plots_dir))
        yield dg.MaterializeResult(
            metadata=metadata,
            data_version=dg.DataVersion(outcome.card.version),
        )

    return train


model_assets = [build_model_asset(model) for model in MODELS]
model_checks = [build_robustness_check(model) for model in MODELS]


@dg.asset(
    key=SCORES_KEY,
    deps=[FEATURES_KEY, dg.AssetKey(["models", "default_classifier"])],
    group_name="scoring",
    pool=WRITER_POOL,
    output_required=False,  # no champion yet (a new deployment): nothing to score with
    kinds={"duckdb", "scikit-learn", "dask"},
    description="Default scores of every application by the champion, and by the challenger in "
    "shadow mode (`mode = 'shadow'`): application_id, score, model_version, mode, scored_at.",
)
def loan_default_scores(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    registry: RegistryResource,
    dask: DaskResource,
) -> Iterator[dg.MaterializeResult]:
    models = registry.open()
    champion = models.champion(MODEL)
    if champion is None:
        # Not a failure: the daily pipeline runs before the first (weekly) training does.
        context.log.warning(f"{MODEL} has no champion yet: nothing scored")
        return
    with warehouse.connect() as con:
        # What the scores are a function of: the features and the two model versions.
        inputs = content_version(
            {
                "features": table_version(con, FEATURE_TABLE),
                "champion": champion,
                "shadow": challenger_version(models),
            }
        )
        if inputs == _latest_metadata(context, SCORES_KEY, "inputs_version") and table_exists(
            con, SCORES_TABLE
        ):
            context.log.info("features and models unchanged since the last scoring: not re-scored")
            yield dg.MaterializeResult(
                metadata={
                    "inputs_version": inputs,
                    "rescored": False,
                    "dagster/row_count": scalar(con, f"select count(*) from {SCORES_TABLE}"),
                },
                data_version=dg.DataVersion(inputs),
            )
            return
        report = score_applications(con, models, client_factory=dask.client)
    metadata = {
        "inputs_version": inputs,
        "rescored": True,
        "dagster/row_count": report.rows,
        "champion": report.champion,
        "shadow": report.challenger or "none",
        "dagster/table_name": SCORES_TABLE,
        "placement": placement_metadata(report.placement),
        "ab_comparison": dg.MetadataValue.md(
            md_table(
                ("mode", "labelled applications", "roc_auc"),
                [(mode, v["labelled"], f"{v['roc_auc']:.4f}") for mode, v in report.ab.items()],
            )
        ),
    }
    for mode, values in report.ab.items():
        metadata[f"live_roc_auc/{mode}"] = dg.MetadataValue.float(values["roc_auc"])
    yield dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(inputs))


def _latest_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey, name: str):
    """A metadata value of the latest materialization of ``key`` (None if there is none)."""
    event = context.instance.get_latest_materialization_event(key)
    value = event.asset_materialization.metadata.get(name) if event else None
    return value.value if value is not None else None


scoring_assets = [loan_default_scores]
