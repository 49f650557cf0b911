"""The platform's dbt resource knows the version of the dbt it runs without starting it, and
the parse started before Dagster is imported writes where Dagster reads."""

from importlib import metadata

import dagster_dbt.core.resource as dbt_core_resource
import pytest

from mlops_assets.transform.assets import PlatformDbtCli, dbt_project, dbt_resource
from mlops_assets.transform.parse import MANIFEST


def test_the_venvs_dbt_version_is_the_installed_package_without_running_dbt(monkeypatch):
    def no_dbt(*args, **kwargs):
        raise AssertionError(f"dbt was started: {args}")

    monkeypatch.setattr(dbt_core_resource, "check_output", no_dbt)
    resource = dbt_resource()
    assert str(resource._cli_version) == metadata.version("dbt-core")


def test_another_dbt_executable_is_still_asked(monkeypatch, tmp_path):
    other = tmp_path / "dbt"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    asked = []

    def fake_dbt(args, **kwargs):
        asked.append(args)
        return b"Core:\n  - installed: 1.10.3\n"

    monkeypatch.setattr(dbt_core_resource, "check_output", fake_dbt)
    resource = PlatformDbtCli(project_dir=dbt_project, dbt_executable=str(other))
    assert str(resource._cli_version) == "1.10.3"
    assert asked == [[str(other), "--version"]]


def test_the_early_parse_writes_the_manifest_dagster_loads():
    assert dbt_project.manifest_path == MANIFEST


def test_a_project_that_does_not_parse_fails_with_dbts_message(monkeypatch, tmp_path):
    from mlops_assets.transform import parse

    (tmp_path / "dbt_project.yml").write_text("name: 'broken'\nversion: '1.0'\nprofile: [\n")
    monkeypatch.setattr(parse, "DBT_PROJECT_DIR", tmp_path)
    monkeypatch.setattr(parse, "MANIFEST", tmp_path / "target" / "manifest.json")
    with pytest.raises(parse.DbtParseError, match=r"dbt parse failed \(exit \d\)") as failed:
        parse.DbtParse().wait()
    assert "Syntax error near line 4" in str(failed.value)
    assert "\x1b" not in str(failed.value)  # no terminal colour codes in the message
