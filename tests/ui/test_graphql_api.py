"""The webserver's GraphQL API: launch a run, poll it until it is over, read what it wrote."""

from __future__ import annotations

import time

import pytest

from mlops_assets.sample_data.generator import SOURCES
from tests.ui.conftest import UiServer, record_timing

REPOSITORIES = """
{
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes { name location { name } jobs { name } }
    }
    ... on PythonError { message }
  }
}
"""

LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status tags { key value } } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
    ... on InvalidOutputError { stepKey invalidOutputName }
  }
}
"""

MATERIALIZATIONS = """
query Materializations($path: [String!]!, $partitions: [String!], $limit: Int!) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions, limit: $limit) {
        runId
        partition
        metadataEntries {
          label
          __typename
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on TextMetadataEntry { text }
        }
      }
    }
  }
}
"""


RELOAD = {"config": {"force_reload": True}}
RAW_TABLES = tuple(f"raw/{source}" for source in SOURCES)


def materializations_of(
    server: UiServer, key: str, run_id: str, partition: str | None = None
) -> list[dict]:
    """The materializations of asset ``key`` (``a/b``) written by run ``run_id``, each with
    its metadata as a dict."""
    asset = server.graphql(
        MATERIALIZATIONS,
        {
            "path": key.split("/"),
            "partitions": [partition] if partition else None,
            "limit": 50,
        },
    )["assetOrError"]
    assert asset["__typename"] == "Asset", (key, asset)
    return [
        {
            "partition": event["partition"],
            "metadata": {
                entry["label"]: entry.get("intValue", entry.get("floatValue", entry.get("text")))
                for entry in event["metadataEntries"]
            },
        }
        for event in asset["assetMaterializations"]
        if event["runId"] == run_id
    ]


def data_lines(path) -> int:
    """Non-blank lines of a landing CSV after its header: each is in raw or in quarantine."""
    return sum(1 for line in path.read_text().splitlines()[1:] if line.strip())


@pytest.mark.timeout(1800)  # a backstop: the waits fail first, saying what was stuck
def test_a_run_launched_over_graphql_is_polled_to_success_and_its_materializations_read(
    ui_server: UiServer,
):
    # The code location and repository of the platform, as the API names them.
    repositories = ui_server.graphql(REPOSITORIES)["repositoriesOrError"]
    assert repositories["__typename"] == "RepositoryConnection", repositories
    owners = [
        (repository["location"]["name"], repository["name"])
        for repository in repositories["nodes"]
        if "daily_pipeline" in {job["name"] for job in repository["jobs"]}
    ]
    assert len(owners) == 1, repositories
    location, repository = owners[0]

    # The first landing day into the raw tables (with their checks): what the API must prove
    # needs no more (dbt, the features and the models run from the UI in
    # test_ui_materialize_all.py). force_reload makes the raw tables load the day's files even
    # if another test already did, so the run's own metadata counts rows whatever the order of
    # the tests.
    landing = ui_server.home / "landing"
    day = ui_server.landing_days[0]
    files = {source: landing / source / f"{day}.csv" for source in SOURCES}
    # Outcomes come weeks after the applications: the first day has none.
    assert files["applications"].exists() and files["customers"].exists(), files
    started = time.monotonic()
    launched = ui_server.graphql(
        LAUNCH_RUN,
        {
            "params": {
                "selector": {
                    "repositoryLocationName": location,
                    "repositoryName": repository,
                    "jobName": "__ASSET_JOB",
                    "assetSelection": [{"path": key.split("/")} for key in RAW_TABLES],
                },
                "runConfigData": {"ops": {f"raw__{source}": RELOAD for source in SOURCES}},
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run = launched["run"]
    assert {"key": "dagster/partition", "value": day} in run["tags"]

    status = ui_server.wait_for_run(run["runId"])
    record_timing("graphql_run", time.monotonic() - started)
    assert status == "SUCCESS", ui_server.run_errors(run["runId"])

    # Each raw table: one materialization, of that day, by this run, which loaded that day's
    # file (if any) and no other: every line of it in the table or in quarantine.
    for source, path in files.items():
        events = materializations_of(ui_server, f"raw/{source}", run["runId"])
        assert [event["partition"] for event in events] == [day], (source, events)
        metadata = events[0]["metadata"]
        expected_files = 1 if path.exists() else 0
        lines = data_lines(path) if path.exists() else 0
        assert metadata["files_failed"] == 0, (source, metadata)
        assert metadata["files_loaded"] + metadata["files_replaced"] == expected_files, (
            source,
            metadata,
        )
        assert metadata["rows_loaded"] + metadata["rows_quarantined"] == lines, (source, metadata)
        assert metadata["rows_loaded"] > 0 or not expected_files, (source, metadata)
        assert metadata["dagster/row_count"] >= metadata["rows_loaded"], (source, metadata)
