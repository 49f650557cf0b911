"""Dagster wiring of one declared model: ``build_model_defs(spec)`` gives its training asset
`models/<name>` with its robustness check, and its scores asset (keyed like its scores table)
with the scores table's identifier check."""

import contextlib
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
from mlops_assets.training.dataset import NotEnoughLabels, TrainingData, load_training_data
from mlops_assets.training.diagnostics import markdown_image, plot_model, robustness
from mlops_assets.training.explain import TOP_REASONS
from mlops_assets.training.fairness import fairness_table, fairness_verdict, plot_fairness
from mlops_assets.training.model_card import has_card, recorded_robustness, summary, write_card
from mlops_assets.training.reasons import reasons_table, write_reasons
from mlops_assets.training.registry import ModelCard, Registry, content_version
from mlops_assets.training.scoring import challenger_version, score_model
from mlops_assets.training.search import (
    CV_STRATEGIES,
    PARALLEL_SEARCH_FROM_ROWS,
    searches_on_cluster,
)
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


def version_metadata(
    models: Registry, spec: ModelSpec, version: str, reports: Path, run: dict
) -> dict:
    """What the model asset shows of ``version``, read from what is sealed (its model.json,
    read back from the registry, and the gate's verdict) and its ``reports`` folder (plots,
    model card): the same for the run that trained the version and for a later run that found
    its data unchanged, so the latest materialization always shows the current version in
    full. ``run``: what this run did (retrained or not, and why), shown after the version."""
    card = models.verified_card(spec.name, version)
    data = card.data
    verdict = models.verdict(spec.name, version) or {}
    against = verdict.get("champion") or {}
    before = against.get("metrics")
    intervals = data.get("metric_intervals") or {}
    trials = sorted(data.get("search", []), key=lambda t: (t["candidate"], str(t["params"])))
    champion = models.champion(spec.name)
    metadata = {
        "version": card.version,
        **run,
        "candidate": data["candidate"],
        "params": dg.MetadataValue.json(data["params"]),
        "promoted": verdict.get("promoted"),
        "gate_decision": verdict.get("reason") or "not decided yet",
        "champion": champion or "none",
        "champion_before": against.get("version") or "none",
        "training_data_version": data["training_data_version"],
        "train_rows": data["rows"]["train"],
        "holdout_rows": data["rows"]["holdout"],
        "labelled_rows": data["rows"].get("labelled", 0),
        "search_seconds": data.get("search_seconds", "not recorded"),
        "placement": placement_metadata(data.get("search_placement", {})),
        "candidates": dg.MetadataValue.md(
            md_table(
                ("candidate", "params", "train score", "cv score", "gap"),
                [
                    (
                        t["candidate"],
                        t["params"],
                        f"{t['train_score']:.4f}",
                        f"{t['cv_score']:.4f}",
                        f"{t['train_score'] - t['cv_score']:+.4f}",
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
                        "[{:.4f}, {:.4f}]".format(*intervals.get(name, (float("nan"),) * 2)),
                        f"{before[name]:.4f}" if before and name in before else "-",
                    )
                    for name, value in card.metrics.items()
                ],
            )
        ),
    }
    for name, value in card.metrics.items():
        metadata[f"holdout/{name}"] = dg.MetadataValue.float(float(value))
    metadata["primary_metric"] = spec.primary
    fairness = data.get("fairness")
    if fairness:
        metadata["fairness"] = dg.MetadataValue.md(fairness_table(fairness))
        metadata["fairness_violations"] = dg.MetadataValue.md(md_list(fairness["violations"]))
    for path in sorted(reports.glob("*.png")):
        metadata[f"plot/{path.stem}"] = dg.MetadataValue.md(markdown_image(path))
    metadata["reports"] = dg.MetadataValue.path(str(reports))
    metadata["model_card"] = dg.MetadataValue.path(str(reports / "card.html"))
    metadata["model_card_summary"] = dg.MetadataValue.md(
        md_table(
            ("field", "value"),
            summary(data, verdict or None, primary=spec.primary, champion=champion == card.version),
        )
    )
    return metadata


def _reports(
    models: Registry,
    spec: ModelSpec,
    card: ModelCard,
    data: TrainingData,
    directory: Path,
    *,
    outcome: TrainingOutcome | None = None,
    seed: int,
    new: bool,
    decided: bool,
) -> None:
    """The version's plots and model card in its reports folder ``directory``: plotted on the
    holdout (with the estimator, its holdout scores and SHAP values of the training
    ``outcome``, or the estimator loaded from the registry) for a ``new`` version or when
    missing, and the card written after them (it embeds them) when the gate has just
    ``decided`` on the version, or when missing."""
    plotted = new or not any(directory.glob("*.png"))
    if plotted:
        if outcome is not None:
            fitted, reused = outcome.model, (outcome.prediction, outcome.explanation)
        else:
            fitted, reused = models.load(spec.name, card.version), (None, None)
        plot_model(
            fitted,
            data,
            card.data.get("threshold"),
            directory,
            seed=seed,
            prediction=reused[0],
            explanation=reused[1],
        )
        fairness = card.data.get("fairness")
        if fairness:
            plot_fairness(fairness, directory)
    if plotted or decided or not has_card(directory):
        verdict = models.verdict(spec.name, card.version)
        write_card(directory, card.data, verdict, primary=spec.primary)


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
        f"cross-validated (on Dask from {PARALLEL_SEARCH_FROM_ROWS:,} training rows), the "
        "winner refit and judged on a time-ordered holdout, "
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
            # winner. Same data version, so nothing downstream counts it as new; the version's
            # full metadata, so the latest materialization shows it. A version whose run died
            # before the gate decided on it is decided now.
            settled = settle(models, data, previous, training)
            log = context.log.warning if settled and settled.champion_refused else context.log.info
            log(
                f"{model}: training data {data.version} unchanged since version "
                f"{previous.version}: not retrained"
                + (f"; gate: {settled.reason}" if settled else "")
            )
            card, trained, new, decided = previous, None, False, settled is not None
            run = {
                "retrained": False,
                "decision": settled.reason
                if settled
                else "unchanged: trained on the same data before",
            }
        else:
            on_cluster = searches_on_cluster(len(data.y_train), has_scheduler=dask.has_scheduler)
            with dask.client() if on_cluster else contextlib.nullcontext() as client:
                outcome = train_model(data, models, training, client=client, manifest=manifest)
            log = context.log.warning if outcome.decision.champion_refused else context.log.info
            log(f"{model} {outcome.card.version}: {outcome.decision.reason}")
            card, trained, new, decided = outcome.card, outcome, outcome.new, True
            run = {"retrained": True, "decision": outcome.decision.reason}
        reports = Path(registry.reports_path) / model / card.version
        _reports(
            models,
            spec,
            card,
            data,
            reports,
            outcome=trained,
            seed=training.seed,
            new=new,
            decided=decided,
        )
        yield dg.MaterializeResult(
            metadata=version_metadata(models, spec, card.version, reports, run),
            data_version=dg.DataVersion(card.version),
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
            previous = _latest_metadata(context, key)
            if _value(previous.get("inputs_version")) == inputs and table_exists(con, spec.scores):
                context.log.info(
                    f"{spec.table} and {model}'s versions unchanged since the last scoring: "
                    "not re-scored"
                )
                yield dg.MaterializeResult(
                    metadata={
                        **previous,  # what the scoring of these same inputs recorded
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


def _latest_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict:
    """The metadata of the latest materialization of ``key`` (empty if there is none). A step
    that finds its inputs unchanged records it again, so the latest materialization still
    shows the current content in full rather than a no-op."""
    event = context.instance.get_latest_materialization_event(key)
    return dict(event.asset_materialization.metadata) if event else {}


def _value(entry: dg.MetadataValue | None):
    return entry.value if entry is not None else None


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
            previous = _latest_metadata(context, key)
            if _value(previous.get("inputs_version")) == inputs and table_exists(con, reasons):
                context.log.info(f"{spec.scores} unchanged since the last reasons: not redone")
                yield dg.MaterializeResult(
                    metadata={
                        **previous,  # what the reasons of these same inputs recorded
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
