"""`mlops run` keeps the terminal for its own progress and summary: the Python warnings that
libraries raise during a run (numpy's RuntimeWarnings, Dagster's beta notices) go to the run's
log file, which the summary names."""

from __future__ import annotations

import threading
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


def test_a_thread_that_restores_the_run_s_handler_late_does_not_break_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """warnings.catch_warnings is process-wide: a thread (a library's worker) that enters one
    during the run and leaves it after puts the run's handler back once the log is closed."""
    entered, leave = threading.Event(), threading.Event()

    def worker() -> None:
        with warnings.catch_warnings():  # saves the run's handler
            entered.set()
            leave.wait(10)

    shown: list[str] = []
    monkeypatch.setattr(
        warnings, "showwarning", lambda message, *_args, **_kw: shown.append(str(message))
    )
    thread = threading.Thread(target=worker)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with open(tmp_path / "run.log", "w") as log, _warnings_to(log):
            thread.start()
            assert entered.wait(10)
        leave.set()
        thread.join(10)  # the run's handler is back, its log closed
        warnings.warn("after the run", UserWarning, stacklevel=1)  # no ValueError
    assert shown == ["after the run"]  # shown as before the run
