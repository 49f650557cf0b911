from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from mlops_assets.sample_data.generator import (
    APPLICATION_COLUMNS,
    LABEL_DELAY_DAYS,
    GeneratorConfig,
    generate,
)

CONFIG = GeneratorConfig(days=35, rows_per_day=80, seed=11)


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.csv"))
    }


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    out = tmp_path_factory.mktemp("landing")
    return out, generate(CONFIG, out)


@pytest.fixture(scope="module")
def drifted(tmp_path_factory):
    """Long enough that the drifted period has labels: drift from day 40, labels up to day 120."""
    out = tmp_path_factory.mktemp("drifted")
    generate(GeneratorConfig(days=120, rows_per_day=250, seed=3, drift_from_day=40), out)
    con = duckdb.connect()
    apps = con.execute(
        f"select * from read_csv('{out}/applications/*.csv', all_varchar=true, ignore_errors=true,"
        " filename=true)"
    ).df()
    outcomes = con.execute(f"select * from read_csv('{out}/outcomes/*.csv', all_varchar=true)").df()
    return apps, outcomes


def test_same_arguments_give_byte_identical_files(landing, tmp_path):
    out, _ = landing
    generate(CONFIG, tmp_path)
    assert _digest(tmp_path) == _digest(out)


def test_worker_processes_write_the_same_files_and_report(landing, tmp_path):
    """Days are built on worker processes for large runs: the files and the report must be
    the ones one process writes."""
    out, report = landing
    parallel = generate(CONFIG, tmp_path, workers=2)
    assert _digest(tmp_path) == _digest(out)
    assert parallel.rows == report.rows and parallel.dirty == report.dirty
    assert [p.relative_to(tmp_path) for p in parallel.files] == [
        p.relative_to(out) for p in report.files
    ]


def test_another_seed_gives_other_data(landing, tmp_path):
    out, _ = landing
    generate(GeneratorConfig(days=CONFIG.days, rows_per_day=CONFIG.rows_per_day, seed=12), tmp_path)
    assert _digest(tmp_path) != _digest(out)


def test_one_file_per_source_per_day(landing):
    out, report = landing
    for source in ("customers", "applications"):
        names = sorted(p.name for p in (out / source).glob("*.csv"))
        assert len(names) == CONFIG.days
        assert names[0] == "2025-01-01.csv"
    # The first outcomes arrive four weeks after the first applications.
    first_outcome = min(p.name for p in (out / "outcomes").glob("*.csv"))
    assert first_outcome >= f"2025-01-{1 + LABEL_DELAY_DAYS[0]:02d}.csv"
    assert sum(report.rows.values()) == sum(
        len(p.read_text().splitlines()) - 1 for p in out.rglob("*.csv")
    )


def test_dirty_records_are_between_one_and_three_percent(landing):
    out, report = landing
    for source in ("applications", "customers"):
        assert 0.01 <= report.dirty_rate(source) <= 0.03, (source, report.dirty_rate(source))
    # Count independently from the files: duplicates and malformed lines are really there.
    lines = [
        line
        for p in sorted((out / "applications").glob("*.csv"))
        for line in p.read_text().splitlines()[1:]
    ]
    ids = pd.Series([line.split(",", 1)[0] for line in lines])
    duplicated = ids.duplicated().sum()
    expected = (
        report.dirty[("applications", "exact_duplicate")]
        + report.dirty[("applications", "near_duplicate")]
    )
    assert duplicated == expected > 0
    field_counts = pd.Series([len(line.split(",")) for line in lines if '"' not in line])
    malformed = (field_counts != len(APPLICATION_COLUMNS)).sum()
    assert malformed == report.dirty[("applications", "malformed_line")] > 0


def test_mixed_date_formats_and_messy_casing_are_present(drifted):
    apps, _ = drifted
    applied = apps["applied_at"].dropna()
    assert applied.str.contains("/").any()  # day-first
    assert applied.str.endswith("Z").any()  # ISO with T and Z
    assert (applied.str.match(r"^\d{4}-\d{2}-\d{2} ")).mean() > 0.95
    purpose = apps["purpose"].dropna()
    assert (purpose != purpose.str.strip().str.lower()).any()


def test_labels_arrive_weeks_later_and_recent_applications_have_none(drifted):
    apps, outcomes = drifted
    apps = apps.drop_duplicates("application_id")
    applied = pd.to_datetime(
        apps.set_index("application_id")["applied_at"], format="%Y-%m-%d %H:%M:%S", errors="coerce"
    ).dropna()
    outcomes = outcomes.drop_duplicates("application_id").set_index("application_id")
    observed = pd.to_datetime(outcomes["observed_at"], format="%Y-%m-%d", errors="coerce").dropna()
    delay = (observed - applied.reindex(observed.index).dt.normalize()).dt.days.dropna()
    assert delay.min() >= LABEL_DELAY_DAYS[0]
    assert delay.max() <= LABEL_DELAY_DAYS[1]
    last_day = applied.max().normalize()
    recent = applied[applied >= last_day - pd.Timedelta(days=LABEL_DELAY_DAYS[0] - 1)]
    assert len(recent) > 0
    assert not recent.index.isin(outcomes.index).any()


def test_drift_lowers_incomes_adds_a_purpose_and_strengthens_debt_to_income(drifted):
    apps, outcomes = drifted
    apps = apps.drop_duplicates("application_id").copy()
    apps["day"] = apps["filename"].str.extract(r"(\d{4}-\d{2}-\d{2})")[0]
    apps["after"] = apps["day"] >= "2025-02-10"  # day 40
    income = pd.to_numeric(apps["annual_income"], errors="coerce")
    assert income[apps["after"]].median() < 0.9 * income[~apps["after"]].median()
    purpose = apps["purpose"].str.strip().str.lower()
    assert (purpose[apps["after"]] == "green_energy").sum() > 0
    assert (purpose[~apps["after"]] == "green_energy").sum() == 0

    labelled = apps.merge(outcomes.drop_duplicates("application_id"), on="application_id")
    labelled["dti"] = pd.to_numeric(labelled["debt_to_income"], errors="coerce")
    labelled["default"] = labelled["defaulted"].astype(int)

    def dti_gap(frame: pd.DataFrame) -> float:
        high = frame["dti"] > frame["dti"].median()
        return frame.loc[high, "default"].mean() - frame.loc[~high, "default"].mean()

    before, after = labelled[~labelled["after"]], labelled[labelled["after"]]
    assert len(after) > 2000
    assert dti_gap(after) > dti_gap(before) + 0.03


def test_default_signal_is_learnable_but_noisy(drifted):
    apps, outcomes = drifted
    labelled = apps.drop_duplicates("application_id").merge(
        outcomes.drop_duplicates("application_id"), on="application_id"
    )
    score = pd.to_numeric(labelled["bureau_score"], errors="coerce")
    y = labelled["defaulted"].astype(int)
    ok = score.notna()
    # AUC of the bureau score alone, by ranks: well above chance, far from perfect.
    ranks = (-score[ok]).rank()
    positives = y[ok] == 1
    auc = (ranks[positives].sum() - positives.sum() * (positives.sum() + 1) / 2) / (
        positives.sum() * (~positives).sum()
    )
    assert 0.6 < auc < 0.9
    assert 0.05 < y.mean() < 0.3


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="drift_from_day"):
        GeneratorConfig(days=10, drift_from_day=10)
    with pytest.raises(ValueError, match="days"):
        GeneratorConfig(days=0)


@pytest.mark.parametrize(
    ("arguments", "code", "said"),
    [
        (["--seed", "-1"], 2, "--seed"),
        (["--days", "2", "--start-date", "9999-12-31"], 2, "out of range"),
        (["--days", "1", "--rows-per-day", "5", "--out", "{file}"], 1, "Not a directory"),
    ],
)
def test_the_cli_refuses_bad_arguments_without_a_traceback(tmp_path, arguments, code, said):
    from typer.testing import CliRunner

    from mlops_assets.cli import app

    file = tmp_path / "a-file"
    file.write_text("")
    arguments = [a.replace("{file}", str(file)) for a in arguments]
    result = CliRunner().invoke(app, ["generate", *arguments], env={"MLOPS_HOME": str(tmp_path)})
    assert result.exit_code == code, result.output
    assert said in result.output
    assert isinstance(result.exception, SystemExit)  # an exit, not an exception's traceback
