"""The end-to-end benchmark's own logic: the read_csv floor it measures against, and the
promises it checks a record against."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mlops_assets import catalogue

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pipeline.py"
_spec = importlib.util.spec_from_file_location("bench_pipeline", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def record(applications: int, **overrides) -> dict:
    values = {
        "applications": applications,
        "wall_seconds": 100.0,
        "peak_rss_gb": 1.0,
        "overhead_share": 0.05,
        "stages": {"ingestion": {"applications_rows_per_second": 600_000.0}},
        "duckdb_read_csv_rows_per_second": 1_000_000.0,
    }
    return {**values, **overrides}


def test_the_read_csv_floor_reads_every_file_of_a_home_whatever_its_path(tmp_path):
    home = tmp_path / "it's [a] home*"
    folder = home / "landing" / "applications"
    folder.mkdir(parents=True)
    columns = catalogue.sources()["applications"].columns
    for day, rows in (("2025-01-01", 3), ("2025-01-02", 4)):
        lines = [",".join(columns)] + [",".join("" for _ in columns)] * rows
        (folder / f"{day}.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "it's a home" / "landing" / "applications").mkdir(parents=True)
    (tmp_path / "it's a home" / "landing" / "applications" / "x.csv").write_text(
        (",".join(columns) + "\n") * 50
    )
    rows, seconds = bench.duckdb_read_csv(home)
    assert rows == 7  # not the 50 lines of the folder the unescaped glob would also match
    assert seconds > 0


def test_each_size_is_checked_against_its_own_promises():
    assert [t[0] for t in bench.targets(record(100_000))] == [
        "ingestion / read_csv",
        "Dagster overhead",
    ]
    assert [t[0] for t in bench.targets(record(1_000_000))] == [
        "ingestion / read_csv",
        "wall time",
    ]
    assert [t[0] for t in bench.targets(record(10_000_000))] == [
        "ingestion / read_csv",
        "wall time",
        "peak RSS",
    ]


def test_a_missed_promise_says_no():
    slow = record(1_000_000, wall_seconds=250.0)
    assert dict((t[0], t[3]) for t in bench.targets(slow)) == {
        "ingestion / read_csv": True,
        "wall time": False,
    }
    heavy = record(10_000_000, wall_seconds=1000.0, peak_rss_gb=6.5)
    assert dict((t[0], t[3]) for t in bench.targets(heavy))["peak RSS"] is False
    behind = record(100_000, overhead_share=0.12)
    behind["stages"]["ingestion"]["applications_rows_per_second"] = 400_000.0
    assert [t[3] for t in bench.targets(behind)] == [False, False]


def test_the_peak_memory_names_its_moment_and_the_processes_that_held_it():
    import subprocess
    import sys
    import time

    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; x = bytearray(300 * 2**20); time.sleep(3)"]
    )
    before = time.time()
    memory = bench.PeakMemory(holder.pid, interval=0.05)
    holder.wait()
    peak = memory.stop()
    assert peak >= 300 * 2**20
    assert memory.peak_by_process == {"mlops run": peak}  # the root: the run's own process
    assert before <= memory.peak_at <= time.time()


def test_the_steps_running_at_a_moment_are_read_from_the_run_s_events(tmp_path):
    import time

    import dagster as dg

    marks = {}

    @dg.asset
    def first() -> None:
        time.sleep(0.2)
        marks["first"] = time.time()
        time.sleep(0.2)

    @dg.asset(deps=[first])
    def second() -> None:
        marks["second"] = time.time()

    (tmp_path / "dagster").mkdir()
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        run_id = dg.materialize([first, second], instance=instance).run_id
    _, steps = bench.run_timeline(tmp_path, run_id)
    assert bench.steps_running_at(steps, marks["first"]) == ["first"]
    assert bench.steps_running_at(steps, marks["second"]) == ["second"]
    assert bench.steps_running_at(steps, 0.0) == []


def test_the_processes_of_a_run_are_told_apart_by_their_command(tmp_path):
    import subprocess
    import sys

    import psutil

    (tmp_path / "dbt").write_text("import time; time.sleep(5)\n")
    spawned = "import time; spawn_main = None; time.sleep(5)"
    children = {
        "dbt": subprocess.Popen([sys.executable, str(tmp_path / "dbt")]),
        "Dask workers": subprocess.Popen([sys.executable, "-c", spawned]),
        "other": subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"]),
    }
    root = psutil.Process()
    try:
        for kind, child in children.items():
            assert bench.process_kind(psutil.Process(child.pid), root) == kind
        assert bench.process_kind(root, root) == "mlops run"
    finally:
        for child in children.values():
            child.kill()
            child.wait()


def test_the_overhead_is_split_where_it_is_spent_and_adds_up_to_the_wall_outside_the_steps():
    # Started at 100, the run's first event at 106, steps 107-110, 110-112 (a step that
    # starts as the one before ends), 112.5-115 and one inside it (a check, 113-114), then
    # 116-118; the process ended at 119.
    steps = [(112.5, 115.0), (107.0, 110.0), (113.0, 114.0), (110.0, 112.0), (116.0, 118.0)]
    parts = bench.overhead_parts(100.0, 106.0, steps, 119.0)
    assert parts == {
        "before the run's first event": 6.0,
        "from it to the first step": 1.0,
        "between steps": 1.5,
        "after the last step": 1.0,
    }
    union = 3 + 2 + 2.5 + 2
    assert sum(parts.values()) == (119.0 - 100.0) - union
    none = bench.overhead_parts(100.0, 106.0, [], 107.0)
    assert sum(none.values()) == 7.0 and none["between steps"] == 0


def test_the_run_s_first_event_and_its_steps_are_read_from_its_event_log(tmp_path):
    import time

    import dagster as dg

    @dg.asset
    def first() -> None:
        time.sleep(0.1)

    @dg.asset(deps=[first])
    def second() -> None:
        time.sleep(0.1)

    (tmp_path / "dagster").mkdir()
    before = time.time()
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        run_id = dg.materialize([first, second], instance=instance).run_id
    after = time.time()
    first_event, steps = bench.run_timeline(tmp_path, run_id)
    assert before <= first_event <= min(start for _, start, _ in steps)
    assert len(steps) == 2
    (a, a_start, a_end), (b, b_start, b_end) = sorted(steps, key=lambda step: step[1])
    assert (a, b) == ("first", "second")
    assert a_end - a_start >= 0.1 and b_end - b_start >= 0.1
    assert a_end <= b_start <= b_end <= after
