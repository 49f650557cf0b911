"""Dagster wiring of one declared model: ``build_model_defs(spec)`` gives its training asset
`models/<name>` with its robustness check, and its scores asset (keyed like its scores table)
with the scores table's identifier check."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field

from mlops_assets.features.validation import table_exists
from mlops_assets.markdown import md_list, md_table, placement_metadata
from mlops_assets.resources import WRITER_POOL, DaskResource, RegistryResource, WarehouseResource
from mlops_assets.security.checks import build_identifier_checks
from mlops_assets.sql import table
from mlops_assets.training.candidates import check_candidates
from mlops_assets.training.dataset import NotEnoughLabels, load_training_data
from mlops_assets.training.diagnostics import markdown_image, plot_model, robustness
from mlops_assets.training.explain import TOP_REASONS
from mlops_assets.training.fairness import fairness_table, fairness_verdict, plot_fairness
from mlops_assets.training.model_card import has_card, recorded_robustness, summary, write_card
from mlops_assets.training.reasons import reasons_table, write_reasons
from mlops_assets.training.registry import ModelCard, Registry, content_version
from mlops_assets.training.scoring import challenger_version, score_model
from mlops_assets.training.search import CV_STRATEGIES
from mlops_assets.training.spec import ModelSpec
from mlops_assets.training.trainer import (
    ROBUSTNESS_ROWS,
    TrainingConfig,
    TrainingOutcome,
    _champion_input,
    settle,
    train_model,
    trained_before,
)
from mlops_assets.transform.resource import PlatformDbtCli
from mlops_assets.warehouse import scalar, table_version


class TrainConfig(dg.Config):
    """Run-time overrides of the model's declared validation and gate (unset: as declared)."""

    cv: str | None = Field(default=None, description=f"One of {', '.join(CV_STRATEGIES)}.")
    folds: int | None = Field(default=None, ge=2, description="Folds of k-fold or time-series CV.")
    holdout_share: float | None = Field(
        default=None, gt=0, lt=1, description="Latest share held out."
    )
    max_rows: int | None = Field(
        default=None,
        ge=100,
        description="Labelled rows trained on: above this, a uniform sample (the same rows every "
        "run), still split by time. Bounds training memory and time; scoring covers every row.",
    )
    seed: int = 42
    bootstrap_rounds: int = Field(default=200, ge=10)
    margin: float | None = Field(
        default=None, description="Relative gain on the primary metric the challenger needs."
    )
    guard_tolerance: float | None = Field(
        default=None, description="Relative loss allowed on any guard metric."
    )

    def training(self, spec: ModelSpec) -> TrainingConfig:
        set_here = {name: v for name, v in self.model_dump().items() if v is not None}
        return TrainingConfig.for_model(spec, **set_here)


def model_key(spec: ModelSpec) -> dg.AssetKey:
    return dg.AssetKey(["models", spec.name])


def table_key(table: str) -> dg.AssetKey:
    """The asset of a warehouse table ``schema.name``: its key mirrors the table."""
    return dg.AssetKey(table.split("."))


def _metadata(outcome: TrainingOutcome, spec: ModelSpec) -> dict:
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
    metadata["primary_metric"] = spec.primary
    return metadata


def _model_card(
    models: Registry, spec: ModelSpec, card: ModelCard, directory: Path, *, rebuild: bool
) -> Path:
    """The version's model card (card.md and card.html under ``directory``, its reports
    folder), written after the gate decided on it (``rebuild``) or when missing."""
    if rebuild or not has_card(directory):
        verdict = models.verdict(spec.name, card.version)
        write_card(directory, card.data, verdict, primary=spec.primary)
    return directory / "card.html"


ROBUSTNESS = "robustness"


def robustness_report(
    models: Registry, spec: ModelSpec, warehouse: WarehouseResource, version: str
) -> tuple[dict, str]:
    """The robustness scenarios of ``version`` and when they were measured: those training
    sealed in its model.json, or, for a version registered before they were recorded,
    computed now on the newest labelled rows, given as its own signature takes them (it may
    have taken an attribute as input that is protected since)."""
    card = models.verify(spec.name, version)
    report = recorded_robustness(card.data)
    if report is not None:
        return report, "at training (model.json)"
    fitted = models.load(spec.name, version)
    with warehouse.connect(read_only=True) as con:
        # The newest labelled rows of a sample: no need to read the whole table.
        data = load_training_data(
            con, spec, max_rows=5 * ROBUSTNESS_ROWS, max_population=ROBUSTNESS_ROWS
        )
    rows = _champion_input(card, data).head(ROBUSTNESS_ROWS)
    report = robustness(fitted, rows, data.spec, spec.is_classifier, seed=0)
    return report, "now (model.json records none)"


def build_robustness_check(spec: ModelSpec) -> dg.AssetChecksDefinition:
    """Blocking check of the version the model asset last materialized (a separate step, so it
    is skipped, not failed, when there were too few labels to train): the robustness scenarios
    training recorded in its sealed model.json, computed now on the newest labelled rows only
    for a version registered before they were recorded."""
    key = model_key(spec)

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
        report, measured = robustness_report(registry.open(), spec, warehouse, version)
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
                "measured": measured,
            },
        )

    return robustness_check


FAIRNESS = "fairness"


def build_fairness_check(spec: ModelSpec) -> dg.AssetChecksDefinition:
    """Non-blocking check of the version the model asset last materialized: the fairness its
    training measured on the holdout (recorded in its sealed model.json) breaks none of the
    model's bounds. It alerts a reviewer and does not stop scoring: the gate already refuses a
    challenger less fair than the champion beyond the tolerance."""
    key = model_key(spec)
    bounds = spec.fairness
    measured = ", ".join(spec.protected_attributes)
    description = (
        f"Per protected attribute ({measured}) on the holdout: disparate-impact ratio at least "
        f"{bounds.min_disparate_impact:g} (four-fifths rule) and equalized-odds difference at "
        f"most {bounds.max_equalized_odds_difference:g}."
        if spec.is_classifier
        else f"Error by group of each protected attribute ({measured}), reported; no bound."
    )

    @dg.asset_check(asset=key, name=FAIRNESS, blocking=False, description=description)
    def fairness_check(
        context: dg.AssetCheckExecutionContext, registry: RegistryResource
    ) -> dg.AssetCheckResult:
        event = context.instance.get_latest_materialization_event(key)
        version = event.asset_materialization.metadata["version"].value
        fairness = registry.open().verified_card(spec.name, version).data.get("fairness")
        passed, problems = fairness_verdict(fairness)
        metadata = {"version": version, "violations": dg.MetadataValue.md(md_list(problems))}
        if isinstance(fairness, dict):
            metadata["fairness"] = dg.MetadataValue.md(fairness_table(fairness))
        return dg.AssetCheckResult(passed=passed, metadata=metadata)

    return fairness_check


def build_model_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    model = spec.name

    @dg.asset(
        key=model_key(spec),
        output_required=False,  # too few labels yet: nothing to materialize, and no failure
        deps=[table_key(spec.table)],
        group_name="training",
        kinds={"scikit-learn", "dask"},
        description=(spec.description + "\n\n" if spec.description else "")
        + f"Trains `{model}` ({spec.task} of `{spec.target}` on `{spec.table}`): candidates "
        "cross-validated on Dask, the winner refit and judged on a time-ordered holdout, "
        "registered with its model card, and promoted only if it beats the champion on "
        f"{spec.primary} significantly, keeps its guards and is no less fair (champion/"
        "challenger gate).",
    )
    def train(
        context: dg.AssetExecutionContext,
        config: TrainConfig,
        warehouse: WarehouseResource,
        dask: DaskResource,
        registry: RegistryResource,
        dbt: PlatformDbtCli,
    ) -> Iterator[dg.MaterializeResult]:
        training = config.training(spec)
        with warehouse.connect(read_only=True) as con:
            try:
                data = load_training_data(
                    con, spec, holdout_share=training.holdout_share, max_rows=training.max_rows
                )
            except NotEnoughLabels as reason:
                # Not a failure: labels arrive weeks after the rows. Nothing is materialized,
                # so scoring waits too, and the previous champion stays.
                context.log.warning(f"{model} not trained: {reason}")
                return
        manifest = Path(dbt.target_dir) / "manifest.json"
        models = registry.open()
        previous = trained_before(models, data, training, manifest)
        if previous is not None:
            # Unchanged data (and config, code, libraries): the search would pick the same
            # winner. Same data version, so nothing downstream counts it as new. A version
            # whose run died before the gate decided on it is decided now.
            settled = settle(models, data, previous, training)
            log = context.log.warning if settled and settled.champion_refused else context.log.info
            reports = Path(registry.reports_path) / model / previous.version
            page = _model_card(models, spec, previous, reports, rebuild=settled is not None)
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
                    "model_card": dg.MetadataValue.path(str(page)),
                },
                data_version=dg.DataVersion(previous.version),
            )
            return
        with dask.client() as client:
            outcome = train_model(data, models, training, client=client, manifest=manifest)
        log = context.log.warning if outcome.decision.champion_refused else context.log.info
        log(f"{model} {outcome.card.version}: {outcome.decision.reason}")
        metadata = _metadata(outcome, spec)
        plots_dir = Path(registry.reports_path) / model / outcome.card.version
        fairness = outcome.card.data.get("fairness")
        if outcome.new or not plots_dir.exists():
            plot_model(outcome.model, data, outcome.threshold, plots_dir, seed=training.seed)
            if fairness:
                plot_fairness(fairness, plots_dir)
        if fairness:
            metadata["fairness"] = dg.MetadataValue.md(fairness_table(fairness))
            metadata["fairness_violations"] = dg.MetadataValue.md(md_list(fairness["violations"]))
        for path in sorted(plots_dir.glob("*.png")):
            metadata[f"plot/{path.stem}"] = dg.MetadataValue.md(markdown_image(path))
        metadata["reports"] = dg.MetadataValue.path(str(plots_dir))
        page = _model_card(models, spec, outcome.card, plots_dir, rebuild=True)
        metadata["model_card"] = dg.MetadataValue.path(str(page))
        metadata["model_card_summary"] = dg.MetadataValue.md(
            md_table(
                ("field", "value"),
                summary(
                    outcome.card.data,
                    models.verdict(model, outcome.card.version),
                    primary=spec.primary,
                    champion=models.champion(model) == outcome.card.version,
                ),
            )
        )
        yield dg.MaterializeResult(
            metadata=metadata,
            data_version=dg.DataVersion(outcome.card.version),
        )

    return train


def build_scores_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    key = table_key(spec.scores)
    model = spec.name
    score = "probability of the positive class" if spec.is_classifier else "prediction"
    metric = "roc_auc" if spec.is_classifier else "rmse"

    @dg.asset(
        key=key,
        deps=[table_key(spec.table), model_key(spec)],
        group_name="scoring",
        pool=WRITER_POOL,
        output_required=False,  # no champion yet (a new deployment): nothing to score with
        kinds={"duckdb", "scikit-learn", "dask"},
        description=f"`{model}`'s scores ({score}) of every row of `{spec.table}` by the "
        "champion, and by the challenger in shadow mode (`mode = 'shadow'`): "
        f"{spec.id_column}, score, model_version, mode, scored_at.",
    )
    def scores(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        registry: RegistryResource,
        dask: DaskResource,
    ) -> Iterator[dg.MaterializeResult]:
        models = registry.open()
        champion = models.champion(model)
        if champion is None:
            # Not a failure: the daily pipeline runs before the first (weekly) training does.
            context.log.warning(f"{model} has no champion yet: nothing scored")
            return
        with warehouse.connect() as con:
            # What the scores are a function of: the model's table and the two model versions.
            inputs = content_version(
                {
                    "features": table_version(con, spec.table),
                    "champion": champion,
                    "shadow": challenger_version(models, model),
                }
            )
            if inputs == _latest_metadata(context, key, "inputs_version") and (
                table_exists(con, spec.scores)
            ):
                context.log.info(
                    f"{spec.table} and {model}'s versions unchanged since the last scoring: "
                    "not re-scored"
                )
                yield dg.MaterializeResult(
                    metadata={
                        "inputs_version": inputs,
                        "rescored": False,
                        "dagster/row_count": scalar(
                            con, f"select count(*) from {table(spec.scores)}"
                        ),
                    },
                    data_version=dg.DataVersion(inputs),
                )
                return
            report = score_model(
                con, models, spec, client_factory=dask.client, chunk_rows=dask.chunk_rows
            )
        metadata = {
            "inputs_version": inputs,
            "rescored": True,
            "dagster/row_count": report.rows,
            "champion": report.champion,
            "shadow": report.challenger or "none",
            "dagster/table_name": spec.scores,
            "placement": placement_metadata(report.placement),
            "ab_comparison": dg.MetadataValue.md(_ab_table(report.ab, metric)),
        }
        for mode, values in report.ab.items():
            metadata[f"live_{metric}/{mode}"] = dg.MetadataValue.float(values["value"])
        test = report.ab.get("shadow", {}).get("test")
        if test and test["p_value"] is not None:
            metadata[f"live_{metric}/shadow_gain"] = dg.MetadataValue.float(test["difference"])
            metadata[f"live_{metric}/shadow_p_value"] = dg.MetadataValue.float(test["p_value"])
        yield dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(inputs))

    return scores


def _ab_table(ab: dict, metric: str) -> str:
    """The live A/B comparison: each mode's metric, and the shadow's paired test against the
    champion (its gain, 95 % interval and p-value)."""
    rows = []
    for mode, values in ab.items():
        test = values.get("test") or {}
        method = "DeLong" if test.get("method") == "delong" else "paired bootstrap"
        cells = ("", "", "", "")
        if test:
            cells = ("n/a", "", "", method)  # one class only, or no paired rows
        if test.get("p_value") is not None:
            low, high = test["ci"]
            cells = (
                f"{test['difference']:+.4f}",
                f"[{low:+.4f}, {high:+.4f}]",
                f"{test['p_value']:.3g}",
                method,
            )
        rows.append((mode, values["labelled"], f"{values['value']:.4f}", *cells))
    return md_table(
        ("mode", "labelled rows", metric, "gain over champion (positive = better)",
         "95 % interval", "p-value (not better)", "test"),
        rows,
    )  # fmt: skip


def _latest_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey, name: str):
    """A metadata value of the latest materialization of ``key`` (None if there is none)."""
    event = context.instance.get_latest_materialization_event(key)
    value = event.asset_materialization.metadata.get(name) if event else None
    return value.value if value is not None else None


def build_reasons_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    """The reason codes of a classifier's flagged rows, keyed like their table."""
    reasons = reasons_table(spec)
    key = table_key(reasons)
    model = spec.name

    @dg.asset(
        key=key,
        # What the reasons are a function of: the scores, the rows explained and the champion.
        deps=[table_key(spec.scores), table_key(spec.table), model_key(spec)],
        group_name="scoring",
        pool=WRITER_POOL,
        output_required=False,  # no champion yet: nothing scored, nothing to explain
        kinds={"duckdb", "shap", "dask"},
        description=f"The top {TOP_REASONS} adverse reasons (SHAP contributions that raise the "
        f"score most) of every row `{model}`'s champion scored at or above its threshold: "
        f"{spec.id_column}, model_version, rank, feature, contribution, reason.",
    )
    def reason_codes(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        registry: RegistryResource,
        dask: DaskResource,
    ) -> Iterator[dg.MaterializeResult]:
        models = registry.open()
        champion = models.champion(model)
        with warehouse.connect() as con:
            if champion is None or not table_exists(con, spec.scores):
                context.log.warning(f"{model} has no champion or no scores yet: no reasons")
                return
            inputs = content_version(
                {
                    "scores": table_version(con, spec.scores),
                    "features": table_version(con, spec.table),
                    "champion": champion,
                }
            )
            if inputs == _latest_metadata(context, key, "inputs_version") and table_exists(
                con, reasons
            ):
                context.log.info(f"{spec.scores} unchanged since the last reasons: not redone")
                yield dg.MaterializeResult(
                    metadata={
                        "inputs_version": inputs,
                        "recomputed": False,
                        "dagster/row_count": scalar(con, f"select count(*) from {table(reasons)}"),
                    },
                    data_version=dg.DataVersion(inputs),
                )
                return
            report = write_reasons(
                con, models, spec, client_factory=dask.client, chunk_rows=dask.chunk_rows
            )
        if not report.explained + report.reused:
            context.log.info(f"no row scored at or above {model}'s threshold: no reasons")
        yield dg.MaterializeResult(
            metadata={
                "inputs_version": inputs,
                "recomputed": True,
                "dagster/row_count": report.rows,
                "dagster/table_name": reasons,
                "champion": report.version,
                "threshold": dg.MetadataValue.float(report.threshold),
                "rows_explained": report.explained,
                "rows_reused": report.reused,  # stored reasons of the same version and score
                "explainer": report.method,
                "seconds": dg.MetadataValue.float(report.seconds),
                "placement": placement_metadata(report.placement),
            },
            data_version=dg.DataVersion(inputs),
        )

    return reason_codes


def build_model_defs(spec: ModelSpec, identifier_names: frozenset[str]) -> dg.Definitions:
    """Everything Dagster runs for the model ``spec``: its training asset with its robustness
    check and (when it declares protected attributes) its fairness check, its scores asset,
    and the check that the scores table holds no column named like one of
    ``identifier_names`` (every feed's) and no identifier-shaped value."""
    check_candidates(spec)
    scores = build_scores_asset(spec)
    # A regressor has no threshold, so no flagged rows to give reasons for.
    reasons = [build_reasons_asset(spec)] if spec.is_classifier else []
    return dg.Definitions(
        assets=[build_model_asset(spec), scores, *reasons],
        asset_checks=[
            build_robustness_check(spec),
            *([build_fairness_check(spec)] if spec.protected_attributes else []),
            build_identifier_checks(
                [*scores.keys, *(k for a in reasons for k in a.keys)], identifier_names
            ),
        ],
    )
