"""`mlops run` keeps the terminal for its own progress and summary: the Python warnings that
libraries raise during a run (numpy's RuntimeWarnings, Dagster's beta notices) go to the run's
log file, which the summary names."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from mlops_assets.run.execute import _warnings_to


def test_warnings_of_a_run_go_to_its_log_not_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings(record=True) as setup:
        warnings.simplefilter("always")
        warnings.warn("a notice while the definitions load", UserWarning, stacklevel=1)
    log_path = tmp_path / "run.log"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with open(log_path, "w") as log, _warnings_to(log, setup):
            warnings.warn("All-NaN slice encountered", RuntimeWarning, stacklevel=1)
        # Outside the run, warnings are shown as usual again.
        with pytest.warns(UserWarning, match="after the run"):
            warnings.warn("after the run", UserWarning, stacklevel=1)
    logged = log_path.read_text()
    assert "UserWarning: a notice while the definitions load" in logged
    assert "RuntimeWarning: All-NaN slice encountered" in logged
    assert "after the run" not in logged
    captured = capsys.readouterr()
    assert "All-NaN" not in captured.err + captured.out
    assert "definitions load" not in captured.err + captured.out
