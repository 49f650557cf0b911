"""`mlops run`'s start-up: dbt parses in its own process while the run plans, imports and (when
the published manifest is current) builds its definitions; a start-up that fails leaves no
parse behind."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

import mlops_assets.definitions
import mlops_assets.run.execute as execute
from mlops_assets.run.plan import RunPlan, RunSetupError
from mlops_assets.settings import Settings
from mlops_assets.transform import parse


class Stop(Exception):
    """Raised by the stubbed definitions: the run goes no further."""


@pytest.fixture
def events(monkeypatch) -> list[str]:
    """What the start-up did, in order: the parse's start, wait and cancel, the plan and the
    definitions (which stop the run)."""
    events: list[str] = []

    class Parse:
        def __init__(self, environ, for_build=None) -> None:
            events.append("parse started")

        def wait(self) -> Path:
            events.append("parse waited")
            return parse.MANIFEST

        def cancel(self) -> None:
            events.append("parse cancelled")

    def plan(settings) -> RunPlan:
        events.append("planned")
        return RunPlan(new_days=["2025-01-01"])

    def definitions(settings):
        events.append("definitions built")
        raise Stop

    monkeypatch.setattr(parse, "DbtParse", Parse)
    monkeypatch.setattr(parse, "build_state_is_current", lambda environ, for_build: False)
    monkeypatch.setattr(execute, "plan_run", plan)
    monkeypatch.setattr(mlops_assets.definitions, "build_definitions", definitions)
    return events


@pytest.mark.parametrize("current", [True, False])
def test_the_definitions_wait_for_the_parse_only_when_the_manifest_is_not_current(
    events, monkeypatch, tmp_path, current
):
    monkeypatch.setattr(parse, "manifest_is_current", lambda: current)
    with pytest.raises(Stop):
        execute.run_pipeline(Settings(home=tmp_path))
    waited = ["parse waited"] if not current else []
    assert events == [
        "parse started",
        "planned",
        *waited,
        "definitions built",
        "parse cancelled",
    ]


def test_a_run_whose_build_state_is_current_starts_no_parse(events, monkeypatch, tmp_path):
    """The build's target directory holds the state a parse for this build left (an earlier
    run in this home, the dbt project unchanged): no dbt process at all before the build."""
    settings = Settings(home=tmp_path)
    asked = []

    def current(environ, for_build) -> bool:
        asked.append(for_build)
        return True

    monkeypatch.setattr(parse, "build_state_is_current", current)
    monkeypatch.setattr(parse, "manifest_is_current", lambda: True)
    with pytest.raises(Stop):
        execute.run_pipeline(settings)
    assert events == ["planned", "definitions built"]
    vars_ = parse.build_vars(str(settings.warehouse_path), settings.duckdb_memory_limit)
    assert asked == [(vars_, settings.dbt_target_dir)]


def test_a_project_edited_while_the_run_starts_is_parsed_before_the_definitions(
    events, monkeypatch, tmp_path
):
    """The build's state was current when the run started, but a file of the dbt project
    changed before the definitions were built: the run parses then, and waits for it."""
    monkeypatch.setattr(parse, "build_state_is_current", lambda environ, for_build: True)
    monkeypatch.setattr(parse, "manifest_is_current", lambda: False)
    with pytest.raises(Stop):
        execute.run_pipeline(Settings(home=tmp_path))
    assert events == [
        "planned",
        "parse started",
        "parse waited",
        "definitions built",
        "parse cancelled",
    ]


def test_a_run_that_cannot_start_stops_its_parse(events, monkeypatch, tmp_path):
    def refused(settings) -> RunPlan:
        events.append("refused")
        raise RunSetupError("no landing files")

    monkeypatch.setattr(execute, "plan_run", refused)
    with pytest.raises(RunSetupError):
        execute.run_pipeline(Settings(home=tmp_path))
    assert events == ["parse started", "refused", "parse cancelled"]


def test_cancelling_a_parse_stops_dbt_and_leaves_no_private_directory(monkeypatch, tmp_path):
    import sys

    sleeper = tmp_path / "dbt"
    sleeper.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    sleeper.chmod(0o755)
    manifest = tmp_path / "target" / "manifest.json"
    monkeypatch.setattr(parse, "dbt_executable", lambda: str(sleeper))
    monkeypatch.setattr(parse, "MANIFEST", manifest)
    running = parse.DbtParse({})
    running.cancel()
    assert running._process.returncode is not None  # killed, not left to sleep
    assert list(manifest.parent.iterdir()) == [] and not manifest.exists()


@pytest.fixture
def collector():
    """The garbage collector's state put back after the test: on, nothing frozen."""
    yield
    gc.unfreeze()
    gc.enable()


@pytest.mark.parametrize("ends_process", [True, False])
def test_a_run_that_ends_its_process_sets_up_with_the_collector_off_then_freezes_the_set_up(
    events, monkeypatch, tmp_path, collector, ends_process
):
    seen: list[tuple[bool, int]] = []  # in the definitions: collector on, objects frozen

    def definitions(settings):
        seen.append((gc.isenabled(), gc.get_freeze_count()))
        raise Stop

    monkeypatch.setattr(mlops_assets.definitions, "build_definitions", definitions)
    with pytest.raises(Stop):
        execute.run_pipeline(Settings(home=tmp_path), ends_process=ends_process)
    assert seen == [(not ends_process, 0)]
    assert gc.isenabled()  # on again, also after a set-up that failed
    assert (gc.get_freeze_count() > 0) == ends_process
