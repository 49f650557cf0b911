"""`mlops run` end to end: exit codes, summary, Dagster history, idempotence. The runs go
through the CLI's command in the test's process (its console script is run as a process by the
crash, race, storage and bring-your-own-data tests)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from functools import partial

import dagster as dg
import duckdb
import pytest

from mlops_assets import catalogue
from mlops_assets.sample_data.generator import GeneratorConfig, generate
from mlops_assets.text import printable
from tests.conftest import (
    CLUSTER_CHUNK_ROWS,
    ODD_LANDING_ENTRIES,
    SMALL,
    mlops,
    mlops_here,
    run_here,
)

pytestmark = pytest.mark.costly  # started first (tests/conftest.py)

SCHEMAS = ("raw", "staging", "intermediate", "marts", "quarantine", "audit")


def fingerprint(warehouse) -> dict[str, tuple]:
    """Row count and an order-independent content hash of every table."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = con.execute(
            "select table_schema || '.' || table_name from information_schema.tables "
            "where table_schema in (select unnest(?))",
            [list(SCHEMAS)],
        ).fetchall()
        return {
            t: con.execute(f"select count(*), sum(hash(x)::hugeint) from {t} as x").fetchone()
            for (t,) in tables
        }


def _monitored() -> set[str]:
    """The models whose daily drift report the run writes."""
    return {name for name, spec in catalogue.models().items() if spec.monitor}


def test_run_materializes_everything_and_reports_it(pipeline_run):
    summary = pipeline_run.summary
    assert summary["ok"] is True
    assert len(summary["ingested_days"]) == SMALL.days
    assert summary["failed_steps"] == []
    assert summary["checks"]["failed_blocking"] == []
    assert summary["checks"]["passed"] >= 40
    assert not [n for n in summary["notices"] if "not materialized" in n]
    assert set(summary["stage_seconds"]) == {
        "ingestion", "transform", "features", "training", "scoring", "monitoring", "checks"
    }  # fmt: skip
    tables = summary["tables"]
    assert tables["raw.applications"] > SMALL.days * SMALL.rows_per_day * 0.8
    assert tables["marts.loan_applications"] > 0
    assert tables["quarantine.applications"] >= 0
    # Every application of the mart is either a clean feature row or a quarantined one.
    assert (
        tables["features.loan_features"] + tables["quarantine.loan_features"]
        == tables["marts.loan_applications"]
    )
    assert tables["features.loan_features"] > 0
    # The first run has a champion and no challenger yet: one score per application.
    assert tables["predictions.loan_default_scores"] == tables["features.loan_features"]
    monitored = _monitored()
    # One drift report per monitored model and day.
    assert tables["monitoring.drift_reports"] == SMALL.days * len(monitored)
    drift_day = SMALL.start_date + timedelta(days=SMALL.drift_from_day)
    drifted = summary["drifted_days"]  # model -> the run's days its monitor found drifted
    assert drifted and set(drifted) <= monitored
    assert all(min(days) >= str(drift_day) for days in drifted.values()), drifted


def test_odd_landing_entries_are_refused_by_name_and_never_fail_the_run(pipeline_run):
    """Before, `2025-02-30.csv` crashed the run while Dagster created it, and a name with a
    trailing line break loaded its day twice."""
    summary = pipeline_run.summary
    assert summary["ok"] is True
    refused = [r.split(": ", 1)[0] for r in summary["refused_files"]]
    assert sorted(refused) == sorted(map(printable, ODD_LANDING_ENTRIES))
    with duckdb.connect(str(pipeline_run.warehouse), read_only=True) as con:
        ledger = con.execute("select path from audit.refused_files").fetchall()
        loaded = con.execute("select distinct _source_file from raw.outcomes").fetchall()
    assert sorted(p for (p,) in ledger) == sorted(refused)
    # Exactly the other files were read: none twice under another name, none through a link.
    landing = pipeline_run.home / "landing"
    listed = {f"outcomes/{f.name}" for f in (landing / "outcomes").iterdir()}
    assert {p for (p,) in loaded} == listed - set(ODD_LANDING_ENTRIES)


def test_run_is_recorded_in_the_dagster_instance_under_mlops_home(pipeline_run):
    instance = dg.DagsterInstance.from_config(str(pipeline_run.home / "dagster"))
    run = instance.get_run_by_id(pipeline_run.summary["run_id"])
    assert run.status == dg.DagsterRunStatus.SUCCESS
    marts = instance.get_latest_materialization_event(dg.AssetKey(["marts", "loan_applications"]))
    metadata = marts.asset_materialization.metadata
    rows = pipeline_run.summary["tables"]["marts.loan_applications"]
    assert metadata["dagster/row_count"].value == rows
    # Column-level lineage from dbt: the tenure comes from both intermediate models.
    deps = metadata["dagster/column_lineage"].value.deps_by_column["customer_tenure_days"]
    assert {d.asset_key.to_user_string() for d in deps} == {
        "intermediate/int_applications_labelled",
        "intermediate/int_customer_profiles",
    }
    raw_days = instance.get_materialized_partitions(dg.AssetKey(["raw", "applications"]))
    assert len(raw_days) == SMALL.days


def test_parallel_work_ran_on_the_cluster_at_dask_scheduler_address(pipeline_run):
    """The session's run had DASK_SCHEDULER_ADDRESS pointing at a `dask scheduler` with two
    `dask worker` processes: validation chunks, the search's fits, scoring chunks and drift
    days ran on those workers (each task reports the worker it ran on), none in the run's
    own process."""
    instance = dg.DagsterInstance.from_config(str(pipeline_run.home / "dagster"))
    workers = pipeline_run.workers
    placements, metadata = {}, {}
    drift_reports = [f"monitoring/{name}/drift_report" for name in _monitored()]
    for key in (
        "features/loan_features",
        "models/default_classifier",
        "models/loss_regressor",
        "predictions/loan_default_scores",
        *drift_reports,
    ):
        event = instance.get_latest_materialization_event(dg.AssetKey(key.split("/")))
        metadata[key] = event.asset_materialization.metadata
        placements[key] = metadata[key]["placement"].value
        assert placements[key], key
        assert set(placements[key]) <= workers, (key, placements[key], workers)
    assert set().union(*placements.values()) == workers  # both workers took part
    features = metadata["features/loan_features"]
    rows = features["rows_in"].value
    assert features["chunks"].value == -(-rows // CLUSTER_CHUNK_ROWS) > 1
    assert sum(placements["features/loan_features"].values()) == features["chunks"].value
    scored = pipeline_run.summary["tables"]["features.loan_features"]
    assert sum(placements["predictions/loan_default_scores"].values()) == -(
        -scored // CLUSTER_CHUNK_ROWS
    )
    for key in drift_reports:
        assert sum(placements[key].values()) == SMALL.days, key


def test_every_run_is_recorded_in_pipeline_health(pipeline_run):
    summary = pipeline_run.summary
    with duckdb.connect(str(pipeline_run.warehouse), read_only=True) as con:
        run = con.execute(
            "select status, trigger, seconds, checks_passed, checks_failed, rows_quarantined "
            "from monitoring.pipeline_runs where run_id = ?",
            [summary["run_id"]],
        ).fetchone()
        assets = {
            row[0]: row[1:]
            for row in con.execute(
                "select asset, partitions, step_seconds, rows_in, rows_out, rows_quarantined, "
                "quarantine_rate from monitoring.pipeline_run_assets where run_id = ?",
                [summary["run_id"]],
            ).fetchall()
        }
    status, trigger, seconds, passed, failed, quarantined = run
    # Non-blocking checks may fail (a fairness bound on the small data, a dbt warning): each is
    # recorded, and none blocks.
    assert (status, trigger, failed) == ("SUCCESS", "mlops run", len(summary["checks"]["failed"]))
    assert summary["checks"]["failed_blocking"] == []
    assert passed == summary["checks"]["passed"]
    assert 0 < seconds <= summary["seconds"]
    tables = summary["tables"]
    partitions, step_seconds, rows_in, rows_out, rows_q, rate = assets["raw/applications"]
    assert partitions == SMALL.days and step_seconds > 0
    assert (rows_out, rows_q) == (tables["raw.applications"], tables["quarantine.applications"])
    assert rows_in == rows_out + rows_q and rate == rows_q / rows_in
    _, _, rows_in, rows_out, rows_q, _ = assets["features/loan_features"]
    assert (rows_in, rows_out) == (
        tables["marts.loan_applications"],
        tables["features.loan_features"],
    )
    assert assets["marts/loan_applications"][3] == tables["marts.loan_applications"]
    assert quarantined >= rows_q + tables["quarantine.applications"]
    # ... and reported as the asset monitoring/pipeline_runs, plotted by the UI.
    instance = dg.DagsterInstance.from_config(str(pipeline_run.home / "dagster"))
    health = instance.get_latest_materialization_event(dg.AssetKey(["monitoring", "pipeline_runs"]))
    assert health is not None
    assert health.asset_materialization.metadata["status"].value == "SUCCESS"


def test_second_run_on_unchanged_files_changes_no_table(pipeline_run):
    before = fingerprint(pipeline_run.warehouse)
    summary = run_here(pipeline_run.home, "--no-table-metadata")
    assert summary["ingested_days"] == []
    assert fingerprint(pipeline_run.warehouse) == before
    # Unchanged features and labels: the models are not retrained and nothing is re-scored;
    # the data versions stay, so declarative automation sees nothing new either.
    instance = dg.DagsterInstance.from_config(str(pipeline_run.home / "dagster"))
    first_run = pipeline_run.summary["run_id"]
    for key, flag in [
        (["models", "default_classifier"], "retrained"),
        (["models", "loss_regressor"], "retrained"),
        (["predictions", "loan_default_scores"], "rescored"),
        (["features", "loan_features"], None),
    ]:
        records = instance.fetch_materializations(dg.AssetKey(key), limit=2).records
        assert [r.run_id for r in records] == [summary["run_id"], first_run]
        latest, previous = (r.asset_materialization for r in records)
        assert latest.tags["dagster/data_version"] == previous.tags["dagster/data_version"]
        if flag:
            assert latest.metadata[flag].value is False
            assert previous.metadata[flag].value is True


def test_a_bad_file_fails_the_run_alone_and_loses_no_good_row(tmp_path, monkeypatch):
    """Also: runs of few rows start no Dask workers, not even over as many days as drift
    reports fan out over (PARALLEL_FROM_DAYS): nothing to train or monitor on many rows."""
    from mlops_assets import resources
    from mlops_assets.monitoring.daily import PARALLEL_FROM_DAYS

    asked = []
    monkeypatch.setattr(resources, "_local_cluster", lambda n_workers: asked.append(n_workers))
    config = GeneratorConfig(days=PARALLEL_FROM_DAYS + 1, rows_per_day=20, seed=2)
    generate(config, tmp_path / "landing")
    (tmp_path / "landing" / "applications" / "2025-01-04.csv").write_bytes(b"\x00\x01garbage")
    result = mlops_here("run", "--json", home=tmp_path, monkeypatch=monkeypatch)
    assert result.returncode == 1, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert "raw/applications:files_ingested" in summary["checks"]["failed_blocking"]
    good_lines = sum(
        len(p.read_text().splitlines()) - 1
        for p in (tmp_path / "landing" / "applications").glob("*.csv")
        if p.name != "2025-01-04.csv"
    )
    tables = summary["tables"]
    assert tables["raw.applications"] + tables["quarantine.applications"] == good_lines
    assert "marts.loan_applications" not in tables  # blocked downstream of the failed check
    assert summary["checks"]["details"]["raw/applications:files_ingested"].startswith(
        "- applications/2025-01-04.csv: binary content"
    )
    # Pipeline health keeps the failed run too, with the check that failed.
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        status, failed = con.execute(
            "select status, failed_checks from monitoring.pipeline_runs where run_id = ?",
            [summary["run_id"]],
        ).fetchone()
    assert status == "FAILURE"
    assert "raw/applications:files_ingested" in failed

    # Once the file is fixed, the next run ingests that day only and succeeds.
    header = (tmp_path / "landing" / "applications" / "2025-01-03.csv").read_text().split("\n")[0]
    row = (
        "APP-90000000,CUS-0000001,2025-01-04 09:00:00,5000,36,car,50000,2 years,RENT,10,700,3,0,web"
    )
    (tmp_path / "landing" / "applications" / "2025-01-04.csv").write_text(f"{header}\n{row}\n")
    summary = run_here(tmp_path)
    assert summary["ingested_days"] == ["2025-01-04"]
    assert summary["tables"]["raw.applications"] == tables["raw.applications"] + 1
    assert summary["tables"]["marts.loan_applications"] > 0
    assert asked == []  # neither run nor its warm-up asked for a LocalCluster


def test_run_without_landing_files_says_what_to_do(tmp_path):
    result = mlops("run", home=tmp_path)
    assert result.returncode == 2
    assert "mlops generate" in result.stderr


def test_files_before_the_first_partition_are_refused_with_the_fix(tmp_path):
    generate(GeneratorConfig(days=1, rows_per_day=5, start_date=date(2024, 12, 30)), tmp_path / "l")
    (tmp_path / "landing").mkdir()
    (tmp_path / "l" / "applications").rename(tmp_path / "landing" / "applications")
    result = mlops("run", home=tmp_path)
    assert result.returncode == 2
    assert "MLOPS_FIRST_LANDING_DATE=2024-12-30" in result.stderr.replace("\n", "")


def test_run_trains_registers_and_scores_and_explains(pipeline_run, monkeypatch):
    cli = partial(mlops_here, home=pipeline_run.home, monkeypatch=monkeypatch)
    listed = json.loads(cli("models", "list", "--json").stdout)
    champions = {row["model"] for row in listed if row["is_champion"]}
    assert champions == {"default_classifier", "loss_regressor"}
    classifier = next(r for r in listed if r["model"] == "default_classifier")
    reports = pipeline_run.home / "reports" / "default_classifier" / classifier["version"]
    assert {p.stem for p in reports.glob("*.png")} >= {
        "roc", "precision_recall", "calibration", "confusion_matrix", "permutation_importance"
    }  # fmt: skip
    with duckdb.connect(str(pipeline_run.warehouse), read_only=True) as con:
        application_id = con.execute(
            "select application_id from predictions.loan_default_scores limit 1"
        ).fetchall()[0][0]
    explained = cli("explain", application_id, "--json")
    assert explained.returncode == 0, explained.stderr
    explanation = json.loads(explained.stdout)
    assert explanation["model_version"] == classifier["version"]
    assert 0 <= explanation["prediction"] <= 1
    assert len(explanation["contributions"]) == len(
        json.loads((pipeline_run.home / "models" / "default_classifier" / classifier["version"]
                    / "model.json").read_text())["signature"]["features"]
    )  # fmt: skip
    assert explanation["additivity_error"] < 1e-6
    assert explanation["expected_value"] + sum(
        c["contribution"] for c in explanation["contributions"]
    ) == pytest.approx(explanation["output"], abs=1e-6)
    missing = cli("explain", "APP-NOPE")
    assert missing.returncode == 1 and "no row with application_id APP-NOPE" in missing.stderr
    # Responsible-model outputs of a real run: fairness charts, the SHAP summary, the card, the
    # reason codes of the flagged applications, and `mlops models show`.
    model_json = json.loads((pipeline_run.home / "models" / "default_classifier"
                             / classifier["version"] / "model.json").read_text())  # fmt: skip
    assert set(model_json["fairness"]["attributes"]) == {"age_band", "marital_status", "region"}
    assert not {"age_band", "marital_status", "region"} & set(model_json["signature"]["features"])
    assert {p.stem for p in reports.glob("*.png")} >= {
        "shap_summary", "fairness_age_band", "fairness_marital_status", "fairness_region"
    }  # fmt: skip
    assert (reports / "card.html").stat().st_size > 0 and (reports / "card.md").exists()
    with duckdb.connect(str(pipeline_run.warehouse), read_only=True) as con:
        flagged, explained, ranks = con.execute(
            "select (select count(*) from predictions.loan_default_scores "
            "        where mode = 'champion' and score >= ?), "
            "count(distinct application_id), max(rank) "
            "from predictions.loan_default_scores_reasons",
            [model_json["threshold"]],
        ).fetchone()
    # (A flagged row whose every contribution is negative has no adverse reason: rare, see
    # tests/training/test_reasons.py for the exact accounting.)
    assert 0.9 * flagged <= explained <= flagged and ranks <= 4
    shown = cli("models", "show", "default_classifier")
    assert shown.returncode == 0, shown.stderr
    assert f"card: {reports / 'card.html'}" in shown.stdout.replace("\n", "")


def test_drift_is_reported_per_day_and_detected_from_the_drift_day(pipeline_run):
    """`mlops generate --drift-from-day 30` lowers incomes and adds a purpose from day 30: the
    daily reports find those columns drifted from that day on and not before, the run
    retrains once for the episode, and every day has its HTML report."""
    drift_day = SMALL.start_date + timedelta(days=SMALL.drift_from_day)
    model = "default_classifier"  # its inputs are the features that drift
    with duckdb.connect(str(pipeline_run.warehouse), read_only=True) as con:
        reports = con.execute(
            "select * from monitoring.drift_reports where model = ? order by day", [model]
        ).df()
        columns = con.execute(
            "select * from monitoring.drift_columns where model = ?", [model]
        ).df()
    landing_days = [SMALL.start_date + timedelta(days=i) for i in range(SMALL.days)]
    assert [d.date() for d in reports["day"]] == landing_days
    assert (reports["rows"] > 0).all() and reports["model_version"].nunique() == 1
    shifted = columns[columns["column_name"].isin(["annual_income", "log_annual_income"])]
    share = shifted.assign(after=shifted["day"].dt.date >= drift_day).groupby("after")["drifted"]
    assert share.mean()[True] >= 0.9, share.mean()
    assert share.mean()[False] <= 0.1, share.mean()
    before = reports[reports["day"].dt.date < drift_day]
    after = reports[reports["day"].dt.date >= drift_day]
    assert not before["dataset_drift"].any(), before[before["dataset_drift"]]
    assert after["dataset_drift"].mean() >= 0.5, after[["day", "share_drifted_columns"]]
    html = sorted((pipeline_run.home / "reports" / "drift" / model).glob("*.html"))
    assert len(html) == SMALL.days and max(p.stat().st_size for p in html) < 2_000_000
    # The sensor, evaluated on the run's own Dagster instance, retrains once for the episode.
    from mlops_assets.monitoring.assets import build_retrain_sensor

    retrain_on_drift = build_retrain_sensor(catalogue.model(model))
    with dg.DagsterInstance.from_config(str(pipeline_run.home / "dagster")) as instance:
        first = retrain_on_drift(dg.build_sensor_context(instance=instance))
        again = retrain_on_drift(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        messages = [e.user_message or "" for e in instance.all_logs(pipeline_run.summary["run_id"])]
    # Logged (and posted).
    assert any(m.startswith(f"ALERT drift: {model}: drift on") for m in messages)
    requested = [r.run_key for r in first.run_requests]
    assert len(requested) == 1 and requested[0] >= f"drift-{drift_day}", requested
    assert not again.run_requests
