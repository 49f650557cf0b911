"""The code location loads, and its graph is what we meant it to be (a snapshot to review)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.settings import PROJECT_ROOT
from mlops_assets.transform.parse import prepare_dbt_manifest
from tests.conftest import BIN

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.txt"


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    prepare_dbt_manifest(os.environ, if_changed=True)
    from mlops_assets.definitions import defs

    return defs()


def describe_graph(defs: dg.Definitions) -> str:
    graph = defs.resolve_asset_graph()
    lines = []
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        parents = ", ".join(sorted(p.to_user_string() for p in node.parent_keys)) or "-"
        partitioned = " [daily partitions]" if node.partitions_def else ""
        lines.append(f"{key.to_user_string()} ({node.group_name}){partitioned} <- {parents}")
    for check in sorted(graph.asset_check_keys, key=lambda k: k.to_user_string()):
        blocking = " [blocking]" if graph.get_check_spec(check).blocking else ""
        lines.append(f"check {check.to_user_string()}{blocking}")
    return "\n".join(lines) + "\n"


def test_asset_graph_matches_snapshot(defs):
    """Review changes to this snapshot like code: regenerate with UPDATE_SNAPSHOTS=1."""
    described = describe_graph(defs)
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(described)
    assert described == SNAPSHOT.read_text()


def test_lineage_runs_from_landing_to_features(defs):
    graph = defs.resolve_asset_graph()
    upstream = graph.get_ancestor_asset_keys(dg.AssetKey(["features", "loan_features"]))
    assert dg.AssetKey(["marts", "loan_applications"]) in upstream
    for source in ("customers", "applications", "outcomes"):
        assert dg.AssetKey(["landing", source]) in upstream
        assert dg.AssetKey(["raw", source]) in upstream
        assert dg.AssetKey(["staging", f"stg_{source}"]) in upstream


def test_error_severity_dbt_tests_block_and_warnings_do_not(defs):
    graph = defs.resolve_asset_graph()
    checks = {k.name: graph.get_check_spec(k) for k in graph.asset_check_keys}
    assert checks["unique_stg_applications_application_id"].blocking
    purpose = next(name for name in checks if name.startswith("accepted_values_stg_applications_p"))
    assert not checks[purpose].blocking


def test_dagster_definitions_validate_passes(tmp_path, defs):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "MLOPS_HOME": str(tmp_path)}
    result = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def test_every_column_in_the_ui_schema_is_classified(defs):
    graph = defs.resolve_asset_graph()
    allowed = {"direct_identifier", "quasi_identifier", "sensitive", "none"}
    for key in graph.get_all_asset_keys():
        schema = graph.get(key).metadata.get("dagster/column_schema")
        if schema is None:
            continue  # landing folders have no columns
        tags = {c.name: c.tags.get("classification") for c in schema.columns}
        unclassified = {name for name, tag in tags.items() if tag not in allowed}
        assert not unclassified, f"{key.to_user_string()}: {sorted(unclassified)}"
    marts = graph.get(dg.AssetKey(["marts", "loan_applications"])).metadata
    tags = {c.name: c.tags["classification"] for c in marts["dagster/column_schema"].columns}
    assert tags["customer_key"] == "quasi_identifier"
    assert tags["annual_income"] == "sensitive"
    assert "direct_identifier" not in tags.values()


def test_every_table_downstream_of_the_vault_has_the_identifier_check(defs):
    graph = defs.resolve_asset_graph()
    checked = {k.asset_key for k in graph.asset_check_keys if k.name == "no_direct_identifiers"}
    tables = {
        key
        for key in graph.get_all_asset_keys()
        if key.path[0] not in ("landing", "models")  # every warehouse table
        # ... the platform writes: pipeline health is written from Dagster's event log
        # (asset and check names, counts), by a sensor, not by a run that could check it.
        and key != dg.AssetKey(["monitoring", "pipeline_runs"])
    }
    assert checked == tables


def test_schedules_are_partition_aware_and_freshness_is_declared(defs):
    from datetime import datetime

    from mlops_assets import catalogue

    models = [dg.AssetKey(["models", name]) for name in catalogue.models()]
    scores = [dg.AssetKey(spec.scores.split(".")) for spec in catalogue.models().values()]
    reports = [
        dg.AssetKey(["monitoring", name, "drift_report"])
        for name, spec in catalogue.models().items()
        if spec.monitor
    ]
    assert reports  # the loan classifier is monitored
    daily = defs.resolve_schedule_def("daily_pipeline_schedule")
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2025, 3, 18, 6), repository_def=defs.get_repository_def()
    )
    [request] = daily.evaluate_tick(context).run_requests
    assert request.partition_key == "2025-03-17"  # yesterday's landing day
    daily_keys = defs.resolve_job_def("daily_pipeline").asset_layer.selected_asset_keys
    assert set(reports) | set(scores) <= daily_keys
    assert not set(models) & daily_keys  # retraining is weekly, not daily
    weekly = defs.resolve_schedule_def("weekly_retraining_schedule")
    assert weekly.cron_schedule == "0 7 * * 1"
    weekly_keys = defs.resolve_job_def("weekly_retraining").asset_layer.selected_asset_keys
    assert set(models) | set(scores) <= weekly_keys
    graph = defs.resolve_asset_graph()
    marts = dg.AssetKey(["marts", "loan_applications"])
    features = dg.AssetKey(["features", "loan_features"])
    for key, hours in ((marts, 36), (features, 36), *((model, 9 * 24) for model in models)):
        policy = graph.get(key).freshness_policy
        assert policy.fail_window.to_timedelta().total_seconds() == hours * 3600


def test_under_dg_dev_the_definitions_parse_dbt_only_when_its_project_changed(
    defs, monkeypatch, tmp_path
):
    """`dg dev` loads the definitions in its code server and again in each run it launches:
    dbt parses only when its project changed since the published manifest was parsed. Outside
    `dg dev` (`mlops run` parses for its build itself) the definitions never start dbt."""
    from mlops_assets.definitions import build_definitions
    from mlops_assets.settings import Settings
    from mlops_assets.transform import parse

    started, current = [], [True]

    class Parse:
        def __init__(self, environ, for_build=None) -> None:
            started.append(for_build)

        def wait(self) -> Path:
            return parse.MANIFEST

    monkeypatch.setattr(parse, "DbtParse", Parse)
    monkeypatch.setattr(parse, "manifest_is_current", lambda: current[0])
    settings = Settings(home=tmp_path)
    monkeypatch.setenv("DAGSTER_IS_DEV_CLI", "1")
    build_definitions(settings)
    assert started == []
    current[0] = False
    build_definitions(settings)
    assert started == [None]
    monkeypatch.delenv("DAGSTER_IS_DEV_CLI")
    build_definitions(settings)
    assert started == [None]


def test_the_stages_imported_while_dbt_parses_are_all_the_definitions_are_built_from(
    tmp_path, defs
):
    """`mlops run` imports STAGE_MODULES while it waits for `dbt parse`, so none may read the
    dbt manifest the parse is writing; building the definitions afterwards (which reads it)
    imports none of the platform's modules but the defs folder and its component types, and
    none of the heavy libraries (a stage missing from the list would be imported after the
    parse, on the run's critical path, instead of beside it)."""
    script = (
        "import json, sys\n"
        "from mlops_assets.definitions import build_definitions, import_stages\n"
        "from pathlib import Path\n"
        "from mlops_assets.settings import Settings\n"
        "opened = []\n"
        "sys.addaudithook(lambda e, a: opened.append(str(a[0])) if e == 'open' else None)\n"
        "import_stages()\n"
        "assert not [p for p in opened if p.endswith('manifest.json')], opened\n"
        "before = set(sys.modules)\n"
        f"build_definitions(Settings(home=Path({str(tmp_path)!r})))\n"
        "assert [p for p in opened if p.endswith('manifest.json')], 'no manifest read'\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [str(BIN / "python"), "-c", script],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    imported = json.loads(result.stdout.splitlines()[-1])
    loader = ("mlops_assets.defs", "mlops_assets.components")  # the folder and its components
    stages = {m for m in imported if m.startswith("mlops_assets.") and not m.startswith(loader)}
    assert not stages
    # (dbt's manifest classes are imported as the manifest is read.)
    heavy = {"sklearn", "scipy", "dagster_dbt", "pandera", "pandas", "dask", "shap"}
    assert not {m.split(".")[0] for m in imported} & heavy
