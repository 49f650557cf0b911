"""A `mlops run` killed outside Python (SIGKILL, OOM killer, power cut) leaves its run STARTED
and its DuckDB writer pool slot taken; the next `mlops run` marks it failed and frees the slot,
and leaves live runs and other machines' runs alone."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import psutil
from dagster._core.storage.dagster_run import DagsterRun

from mlops_assets.resources import WRITER_POOL
from mlops_assets.run.recovery import PROCESS_TAG, fail_dead_runs, this_process


def _started_run(instance, run_id: str, process: str) -> None:
    instance.add_run(
        DagsterRun(
            job_name="__ASSET_JOB",
            run_id=run_id,
            status=dg.DagsterRunStatus.STARTED,
            tags={"mlops/trigger": "mlops run", PROCESS_TAG: process},
        )
    )
    instance.event_log_storage.claim_concurrency_slot(WRITER_POOL, run_id, "raw__applications")


def test_a_killed_runs_slot_is_freed_and_live_or_foreign_runs_are_left_alone():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = this_process().split(":")[0]
    reused = psutil.Process()  # this pid is alive, but started at another time than recorded
    with dg.instance_for_test() as instance:
        instance.event_log_storage.set_concurrency_slots(WRITER_POOL, 4)
        _started_run(instance, "killed", f"{host}:{gone.pid}:{psutil.Process().create_time()}")
        _started_run(instance, "reused-pid", f"{host}:{reused.pid}:{reused.create_time() - 60}")
        _started_run(instance, "live", this_process())
        _started_run(instance, "elsewhere", f"another-host:{gone.pid}:1.0")
        notices = fail_dead_runs(instance)

        status = {r.run_id: r.status for r in instance.get_runs()}
        assert status["killed"] == status["reused-pid"] == dg.DagsterRunStatus.FAILURE
        assert status["live"] == status["elsewhere"] == dg.DagsterRunStatus.STARTED
        holders = {
            slot.run_id
            for slot in instance.event_log_storage.get_concurrency_info(WRITER_POOL).claimed_slots
        }
        assert holders == {"live", "elsewhere"}
        assert len(notices) == 2 and all("ended without finishing" in n for n in notices)
        assert fail_dead_runs(instance) == []  # once
