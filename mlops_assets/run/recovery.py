"""Runs of `mlops run` whose process died (SIGKILL, the OOM killer, a power cut): nothing in
them could report it, so the next run marks them failed and runs their days again."""

from __future__ import annotations

import os
import socket
from datetime import date, timedelta

PROCESS_TAG = "mlops/process"  # host:pid:start time of the `mlops run` process
TRIGGER_TAG = "mlops/trigger"
TRIGGER = "mlops run"


def this_process() -> str:
    """The value of :data:`PROCESS_TAG` for this process."""
    import psutil

    return f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time()}"


def fail_dead_runs(instance) -> list[str]:
    """Mark failed the runs of `mlops run` on this machine whose process is gone, and free the
    DuckDB writer pool slot each still holds, or this run would wait for that slot forever.
    Returns what to tell the user. What those runs wrote is safe: every write is a
    transaction, a file written then renamed, or redone by the next run."""
    import dagster as dg
    import psutil

    notices = []
    runs = instance.get_runs(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING],
            tags={TRIGGER_TAG: TRIGGER},
        )
    )
    for run in runs:
        host, _, rest = run.tags.get(PROCESS_TAG, "").partition(":")
        pid, _, started = rest.partition(":")
        if host != socket.gethostname() or not pid.isdigit():
            continue  # another machine's run, or one from before the tag: not ours to judge
        try:
            alive = str(psutil.Process(int(pid)).create_time()) == started
        except psutil.NoSuchProcess:
            alive = False
        if alive:
            continue
        instance.report_run_failed(
            run, f"the mlops run process {pid} ended without finishing the run (killed)"
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        notices.append(
            f"run {run.run_id} ended without finishing (its process is gone): marked failed; "
            "this run redoes what it left undone"
        )
    return notices


def unfinished_days(instance) -> set[str]:
    """The landing days of the `mlops run`s that failed (or were killed) since the last one
    that succeeded."""
    import dagster as dg

    days: set[str] = set()
    runs = instance.get_runs(dg.RunsFilter(tags={TRIGGER_TAG: TRIGGER}), limit=100)
    for run in runs:  # newest first
        if run.status == dg.DagsterRunStatus.SUCCESS:
            break
        start = run.tags.get("dagster/asset_partition_range_start")
        end = run.tags.get("dagster/asset_partition_range_end")
        if run.status == dg.DagsterRunStatus.FAILURE and start and end:
            first, last = date.fromisoformat(start), date.fromisoformat(end)
            days |= {str(first + timedelta(d)) for d in range((last - first).days + 1)}
    return days


def recover(instance, new_days: list[str]) -> tuple[list[str], list[str]]:
    """Fail the dead runs, and add to ``new_days`` the days of runs that did not finish (a
    failed or killed run may not have carried them through features, models, scores and
    drift reports). Returns the days to run and what to tell the user."""
    notices = fail_dead_runs(instance)
    redone = sorted(unfinished_days(instance) - set(new_days))
    if redone:
        notices.append(
            f"running again {len(redone)} day(s) of runs that did not finish "
            f"({redone[0]} … {redone[-1]})"
        )
    return sorted({*new_days, *redone}), notices
