"""The landing-file sensor: one run per landing day with new or changed files, never twice for
the same content."""

import dagster as dg

from mlops_assets.automation import landing_file_sensor
from mlops_assets.resources import LandingZone
from mlops_assets.sample_data.generator import GeneratorConfig, generate


def _tick(landing, cursor):
    context = dg.build_sensor_context(
        cursor=cursor, resources={"landing": LandingZone(path=str(landing))}
    )
    result = landing_file_sensor(context)
    return result.run_requests, result.cursor


def test_new_and_changed_files_launch_their_day_once(tmp_path):
    landing = tmp_path / "landing"
    generate(GeneratorConfig(days=2, rows_per_day=5, seed=1), landing)
    requests, cursor = _tick(landing, None)
    assert [r.partition_key for r in requests] == ["2025-01-01", "2025-01-02"]
    first_keys = {r.run_key for r in requests}
    assert _tick(landing, cursor)[0] == []  # nothing new: nothing runs
    changed = landing / "applications" / "2025-01-02.csv"
    changed.write_text(changed.read_text() + changed.read_text().splitlines()[1] + "\n")
    (landing / "applications" / "notes.csv").write_text("not a landing day\n")  # left to ingestion
    (landing / "outcomes").mkdir(exist_ok=True)
    (landing / "outcomes" / "2025-01-03.csv").write_text("application_id,observed_at\n")
    requests, cursor = _tick(landing, cursor)
    assert [r.partition_key for r in requests] == ["2025-01-02", "2025-01-03"]
    assert not {r.run_key for r in requests} & first_keys  # a changed day is a new run
    assert "applications/2025-01-02.csv" in requests[0].tags["mlops/trigger"]
    assert _tick(landing, cursor)[0] == []
