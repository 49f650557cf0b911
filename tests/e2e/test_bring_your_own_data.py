"""Bring your own data, as a team adopting the platform does: in its own clone, scaffold a
feed and a model with `dg scaffold defs`, fill in their YAML, add a dbt staging model, land
files, and `mlops run`. No Python file of `mlops_assets/` is touched.

The data is a public dataset that ships with scikit-learn (the Wisconsin breast-cancer
diagnostic samples, 569 rows, 30 measurements), landed as one CSV per day.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pytest
import yaml
from sklearn.datasets import load_breast_cancer

from mlops_assets.settings import PROJECT_ROOT
from tests.conftest import BIN

pytestmark = pytest.mark.costly  # started first (tests/conftest.py)

FEED = "cell_samples"
MODEL = "malignancy"
DAYS = 20
FIRST_DAY = date(2025, 1, 1)

STAGING_SQL = """\
-- One row per sample; the measurements as they arrived, the sampling time parsed.
select
    trim(sample_id) as sample_id,
    cast(taken_at as timestamp) as taken_at,
    {measurements},
    malignant
from {{{{ source('lab', 'cell_samples') }}}}
"""
SOURCES_YML = """\
version: 2
sources:
  - name: lab  # any name: a source table in schema raw is the feed's raw asset
    schema: raw
    tables:
      - name: cell_samples
"""


def _clone(destination: Path) -> Path:
    """The project's files as a team's clone has them (tracked or not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = PROJECT_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def _python_files(project: Path) -> dict[str, str]:
    return {
        str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((project / "mlops_assets").rglob("*.py"))
    }


def _samples() -> tuple[list[str], list[str]]:
    """The dataset as landing CSV lines (one header, one line per sample), sampled over
    ``DAYS`` days, and its measurement column names."""
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" ", "_"))
    measurements = [c for c in frame.columns if c != "target"]
    frame["malignant"] = (frame.pop("target") == 0).astype(int)  # sklearn: 0 = malignant
    frame.insert(0, "sample_id", [f"S{i:04d}" for i in range(len(frame))])
    days = np.arange(len(frame)) % DAYS
    frame.insert(1, "taken_at", [f"{FIRST_DAY + timedelta(days=int(d))} 09:00:00" for d in days])
    frame["day"] = days
    return frame, measurements


def _run(*args: str, project: Path, home: Path, timeout: float = 900):
    env = {
        **os.environ,
        "PYTHONPATH": str(project),  # the clone's code, not this checkout's
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        "VIRTUAL_ENV": str(BIN.parent),
        "MLOPS_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
    }
    return subprocess.run(
        list(args), cwd=project, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def adopted(tmp_path_factory):
    """A clone with a new feed, staging model and model; its landing files; one `mlops run`."""
    root = tmp_path_factory.mktemp("adopter")
    project = _clone(root / "project")
    home = root / "home"
    before = _python_files(project)

    scaffold = _run(
        str(BIN / "dg"), "scaffold", "defs", "mlops_assets.components.LandingSource",
        f"sources/{FEED}", project=project, home=home,
    )  # fmt: skip
    assert scaffold.returncode == 0, scaffold.stdout + scaffold.stderr
    frame, measurements = _samples()
    feed_yaml = project / "mlops_assets" / "defs" / "sources" / FEED / "defs.yaml"
    declared = yaml.safe_load(feed_yaml.read_text())
    declared["attributes"].update(
        description="Cell nuclei measurements of a biopsy sample, with the diagnosis.",
        columns={
            "sample_id": "VARCHAR",
            "taken_at": "VARCHAR",
            **dict.fromkeys(measurements, "DOUBLE"),
            "malignant": "INTEGER",
        },
        required=["sample_id", "taken_at", "malignant"],
    )
    feed_yaml.write_text(yaml.safe_dump(declared, sort_keys=False))

    staging = project / "dbt_project" / "models" / "staging" / FEED
    staging.mkdir()
    (staging / "_lab__sources.yml").write_text(SOURCES_YML)
    (staging / f"stg_{FEED}.sql").write_text(
        STAGING_SQL.format(measurements=",\n    ".join(measurements))
    )

    scaffold = _run(
        str(BIN / "dg"), "scaffold", "defs", "mlops_assets.components.TrainedModel",
        f"models/{MODEL}", project=project, home=home,
    )  # fmt: skip
    assert scaffold.returncode == 0, scaffold.stdout + scaffold.stderr
    model_yaml = project / "mlops_assets" / "defs" / "models" / MODEL / "defs.yaml"
    declared = yaml.safe_load(model_yaml.read_text())
    declared["attributes"].update(
        description="Whether a biopsy sample is malignant.",
        task="classification",
        table=f"staging.stg_{FEED}",
        id_column="sample_id",
        time_column="taken_at",
        target="malignant",
        candidates=["logistic_l2", "random_forest"],
    )
    model_yaml.write_text(yaml.safe_dump(declared, sort_keys=False))

    landing = home / "landing" / FEED
    landing.mkdir(parents=True)
    columns = [c for c in frame.columns if c != "day"]
    for day, rows in frame.groupby("day"):
        lines = rows[columns].to_csv(index=False, lineterminator="\n")
        if day == 3:  # one line a team would get wrong: a diagnosis that is not a number
            lines += "S9999,2025-01-04 09:00:00," + ",".join(["1.0"] * len(measurements)) + ",yes\n"
        (landing / f"{FIRST_DAY + timedelta(days=int(day))}.csv").write_text(lines)

    run = _run(str(BIN / "mlops"), "run", "--json", project=project, home=home)
    return project, home, before, run, len(frame)


def test_the_new_feed_loads_with_a_balanced_ledger_and_its_bad_line_quarantined(adopted):
    _, home, _, run, samples = adopted
    summary = json.loads(run.stdout)
    assert run.returncode == 0 and summary["ok"], run.stdout[-3000:] + run.stderr[-3000:]
    assert summary["checks"]["failed"] == []
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        loaded = con.execute(f"select count(*) from raw.{FEED}").fetchone()[0]
        quarantined = con.execute(f"select count(*) from quarantine.{FEED}").fetchone()[0]
        ledger = con.execute(
            "select count(*), sum(data_lines), sum(rows_loaded), sum(rows_quarantined) "
            "from audit.ingested_files where source = ?",
            [FEED],
        ).fetchone()
    assert (loaded, quarantined) == (samples, 1)
    assert ledger == (DAYS, samples + 1, samples, 1)


def test_the_new_model_is_trained_registered_gated_scored_and_monitored(adopted):
    project, home, _, _, samples = adopted
    listed = _run(str(BIN / "mlops"), "models", "list", "--json", project=project, home=home)
    assert listed.returncode == 0, listed.stderr
    versions = [v for v in json.loads(listed.stdout) if v["model"] == MODEL]
    assert [v["is_champion"] for v in versions] == [True]
    assert versions[0]["primary_metric"] == "roc_auc" and versions[0]["metrics"]["roc_auc"] > 0.9
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        scored = con.execute(
            f"select count(distinct sample_id) from predictions.{MODEL} where mode = 'champion'"
        ).fetchone()[0]
        reports = con.execute(
            "select count(*) from monitoring.drift_reports where model = ?", [MODEL]
        ).fetchone()[0]
    assert scored == samples
    assert reports > 0
    assert list((home / "reports" / "drift" / MODEL).glob("*.html"))


def test_no_python_file_of_the_platform_was_changed(adopted):
    project, _, before, _, _ = adopted
    assert _python_files(project) == before
