"""The platform's component types: listed and checked by `dg`, scaffolded ready to fill in, and
refusing a declaration that cannot work with a message naming it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mlops_assets import catalogue
from mlops_assets.components import DbtProject, LandingSource, TrainedModel
from mlops_assets.settings import PROJECT_ROOT
from tests.conftest import BIN

TYPES = {
    "mlops_assets.components.DbtProject",
    "mlops_assets.components.LandingSource",
    "mlops_assets.components.TrainedModel",
}


def dg_cli(*args: str, tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`dg` as a user runs it from the project, this environment's `dbt` on PATH."""
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        "VIRTUAL_ENV": str(BIN.parent),
        "DAGSTER_HOME": str(tmp_path),
        "MLOPS_HOME": str(tmp_path),
    }
    return subprocess.run(
        [str(BIN / "dg"), *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_dg_lists_the_platform_component_types(tmp_path):
    result = dg_cli("list", "components", "--json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = {item["key"] for item in json.loads(result.stdout)["items"]}
    assert listed >= TYPES


def test_dg_check_defs_validates_every_instance_and_loads_the_definitions(tmp_path):
    from mlops_assets.transform.parse import prepare_dbt_manifest

    prepare_dbt_manifest(os.environ, if_changed=True)
    result = dg_cli("check", "defs", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_the_feeds_and_models_are_the_instances_in_the_defs_folder():
    defs_dir = PROJECT_ROOT / "mlops_assets" / "defs"
    declared = {
        path.parent.name: yaml.safe_load(path.read_text())["type"]
        for path in defs_dir.rglob("defs.yaml")
    }
    feeds = {n for n, t in declared.items() if t.endswith(".LandingSource")}
    models = {n for n, t in declared.items() if t.endswith(".TrainedModel")}
    assert feeds == set(catalogue.sources()) == {"customers", "applications", "outcomes"}
    assert models == set(catalogue.models()) == {"default_classifier", "loss_regressor"}
    assert catalogue.model("default_classifier").is_classifier
    assert not catalogue.model("loss_regressor").is_classifier
    with pytest.raises(catalogue.UnknownModel, match="default_classifier, loss_regressor"):
        catalogue.model("no_such_model")


@pytest.mark.parametrize("component", [LandingSource, TrainedModel])
def test_a_scaffolded_instance_is_valid_as_written_and_named_after_its_folder(component, tmp_path):
    target = tmp_path / "my_thing"
    from dagster.components.scaffold.scaffold import get_scaffolder

    get_scaffolder(component).scaffold(
        dg.ScaffoldRequest(
            type_name=f"mlops_assets.components.{component.__name__}",
            target_path=target,
            scaffold_format="yaml",
            project_root=None,  # not in a project: the template alone
            params=None,
        )
    )
    written = yaml.safe_load((target / "defs.yaml").read_text())
    assert written["type"] == f"mlops_assets.components.{component.__name__}"
    instance = component.resolve_from_yaml(yaml.safe_dump(written["attributes"]))
    assert instance.spec.name == "my_thing"


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"name": "Bad Name"}, "model name"),
        ({"task": "ranking"}, "task"),
        ({"table": "features; drop table x"}, "schema.table"),
        ({"target": "application_id"}, "three columns"),
        ({"features": ["amount", "defaulted"]}, "features may not include"),
        ({"gate": {"primary": "rmse"}}, "not a classification metric"),
    ],
)
def test_a_model_declaration_that_cannot_work_is_refused_naming_the_problem(attributes, message):
    declared = {
        "name": "m",
        "task": "classification",
        "table": "features.loan_features",
        "id_column": "application_id",
        "time_column": "applied_at",
        "target": "defaulted",
        **attributes,
    }
    with pytest.raises(Exception, match=message):
        TrainedModel.resolve_from_yaml(yaml.safe_dump(declared)).spec  # noqa: B018


def test_a_model_with_an_unknown_candidate_fails_when_its_definitions_build():
    from mlops_assets.training.candidates import check_candidates

    spec = TrainedModel.resolve_from_yaml(
        yaml.safe_dump(
            {
                "name": "m",
                "task": "regression",
                "table": "a.b",
                "id_column": "i",
                "time_column": "t",
                "target": "y",
                "candidates": ["ridge", "no_such_estimator"],
            }
        )
    ).spec
    with pytest.raises(ValueError, match="no_such_estimator"):
        check_candidates(spec)


def test_the_dbt_project_component_has_no_attributes_to_get_wrong():
    assert DbtProject.resolve_from_yaml("{}") is not None


def test_a_feed_named_like_the_feature_table_is_refused():
    """Its quarantine table would be the feature table's: the feature step failed on it."""
    from mlops_assets.defs.features import refuse_clashing_feeds

    refuse_clashing_feeds(["cell_samples", *catalogue.sources()])
    with pytest.raises(ValueError, match="feed loan_features: its quarantine would be"):
        refuse_clashing_feeds(["cell_samples", "loan_features"])


def test_a_scaffold_outside_the_defs_folder_is_refused(tmp_path):
    """`dg scaffold defs ... ../../escape` wrote a defs.yaml outside mlops_assets/defs/."""
    from dagster.components.scaffold.scaffold import get_scaffolder

    with pytest.raises(ValueError, match="an instance goes under"):
        get_scaffolder(TrainedModel).scaffold(
            dg.ScaffoldRequest(
                type_name="mlops_assets.components.TrainedModel",
                target_path=PROJECT_ROOT / "mlops_assets" / "defs" / ".." / ".." / "escape",
                scaffold_format="yaml",
                project_root=PROJECT_ROOT,
                params=None,
            )
        )
    assert not (PROJECT_ROOT / "escape").exists()
