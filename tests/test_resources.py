"""What steps know of the environment comes in their resources, from the settings resolved
when the definitions load."""

from __future__ import annotations

import duckdb
import pytest

from mlops_assets.resources import default_resources
from mlops_assets.settings import get_settings


def _limit(con: duckdb.DuckDBPyConnection) -> str:
    return con.execute("select current_setting('memory_limit')").fetchone()[0]


def test_the_warehouse_memory_limit_is_a_setting_the_resource_carries(tmp_path, monkeypatch):
    """Before, every connection read MLOPS_DUCKDB_MEMORY_LIMIT from the environment when it
    opened, inside the steps."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_DUCKDB_MEMORY_LIMIT", "300MB")
    warehouse = default_resources(get_settings())["warehouse"]
    monkeypatch.setenv("MLOPS_DUCKDB_MEMORY_LIMIT", "900MB")  # read once, not per connection
    with warehouse.connect() as con:
        limit = _limit(con)
    reference = duckdb.connect()
    reference.execute("set memory_limit = '300MB'")
    assert limit == _limit(reference)


def test_steps_get_dask_and_landing_settings_from_their_resources(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:1")
    monkeypatch.setenv("MLOPS_FIRST_LANDING_DATE", "2024-03-01")
    resources = default_resources(get_settings())
    assert resources["dask"].scheduler_address == "tcp://127.0.0.1:1"
    assert resources["landing"].first_day == "2024-03-01"
    assert resources["landing"].path == str(tmp_path.resolve() / "landing")


def test_rows_per_task_are_a_setting_the_dask_resource_carries(tmp_path, monkeypatch):
    """Before, validation and scoring read MLOPS_CHUNK_ROWS from the environment in the step."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_CHUNK_ROWS", "1000")
    assert default_resources(get_settings())["dask"].chunk_rows == 1000
    monkeypatch.setenv("MLOPS_CHUNK_ROWS", "-5")
    with pytest.raises(ValueError, match="MLOPS_CHUNK_ROWS must be a positive number of rows"):
        get_settings()


def test_an_empty_mlops_home_is_the_default_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLOPS_HOME", "")
    assert get_settings().home == (tmp_path / ".mlops").resolve()


def test_a_dask_warm_up_that_fails_warns_instead_of_printing_a_traceback(monkeypatch):
    """The background start of the run's LocalCluster is a head start only: when the cluster
    cannot start or closes mid-import (a full disk stopping the run), the thread ends with a
    warning, which goes to the run's log, and no traceback reaches the terminal."""
    import threading
    import warnings

    import mlops_assets.resources as resources
    from mlops_assets.resources import DaskResource, start_local_cluster

    def cannot_start(n_workers):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(resources, "_local_cluster", cannot_start)
    uncaught = []
    monkeypatch.setattr(threading, "excepthook", uncaught.append)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start_local_cluster(DaskResource(n_workers=1)).join(30)
    assert uncaught == []
    assert [str(w.message) for w in caught] == ["the Dask workers' warm-up stopped: OSError"]


def test_closing_the_local_clusters_stops_their_workers_and_the_next_run_starts_one():
    """A process that goes on after its runs closes the LocalCluster they shared: its worker
    processes end; a later run gets a new cluster, not the closed one."""
    import psutil

    from mlops_assets import resources

    cluster = resources._local_cluster(1)
    assert resources._local_cluster(1) is cluster  # shared by the steps and runs meanwhile
    [nanny] = cluster.workers.values()
    worker = psutil.Process(nanny.process.pid)
    resources.close_local_clusters()
    assert cluster.status.name == "closed"
    worker.wait(timeout=30)  # raises if the worker process is still running
    again = resources._local_cluster(1)
    try:
        assert again is not cluster and again.status.name == "running"
    finally:
        resources.close_local_clusters()


def test_the_local_clusters_workers_run_without_the_dashboards_housekeeping():
    """No dashboard, so no statistical profiler sampling the workers' stacks while a task runs,
    and the event loop checked every second, not every 20 ms (idle, the cluster's CPU is a
    quarter of what it was); a worker its nanny starts again after it died (killed for its
    memory) runs the same way."""
    import os
    import signal
    import time

    from distributed import Client

    from mlops_assets import resources

    def busy() -> None:
        end = time.perf_counter() + 0.5
        while time.perf_counter() < end:
            pass

    def housekeeping(dask_worker) -> tuple[int, float]:
        samples = dask_worker.profile_recent["count"] + sum(
            profile["count"] for _, profile in dask_worker.profile_history
        )
        return samples, dask_worker._tick_interval

    try:
        with Client(resources._local_cluster(1)) as client:
            for attempt in ("first", "started again"):
                client.submit(busy, pure=False).result()
                [(samples, tick)] = client.run(housekeeping).values()
                assert (samples, tick) == (0, 1.0), attempt
                if attempt == "first":  # killed, as for its memory; its nanny starts another
                    [(address, pid)] = client.run(os.getpid).items()
                    os.kill(pid, signal.SIGKILL)
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        workers = set(client.scheduler_info()["workers"])
                        if workers and address not in workers:
                            break
                        time.sleep(0.2)
                    client.wait_for_workers(1, timeout=60)
            assert client.cluster.scheduler._tick_interval == 1.0
    finally:
        resources.close_local_clusters()


def test_a_cluster_that_would_not_close_is_still_closed_at_exit(monkeypatch):
    """Its exit handler stays registered; one that closed loses its handler."""
    import types

    from mlops_assets import resources

    class Cluster:
        def __init__(self, answers: bool) -> None:
            self.answers = answers

        def close(self) -> None:
            if not self.answers:
                raise RuntimeError("the scheduler did not answer")

    closes, stuck = Cluster(answers=True), Cluster(answers=False)
    at_exit = [closes.close, stuck.close]  # as _local_cluster registers them
    monkeypatch.setattr(resources, "atexit", types.SimpleNamespace(unregister=at_exit.remove))
    monkeypatch.setattr(resources, "_clusters", {1: closes, 2: stuck})
    with pytest.raises(RuntimeError, match="did not answer"):
        resources.close_local_clusters()
    assert at_exit == [stuck.close] and resources._clusters == {}


def test_closing_waits_for_a_warm_up_that_is_still_starting_its_cluster(monkeypatch):
    """A run that ended before its cluster's warm-up did (a failed file, a full disk): the
    close waits for the warm-up, so that no cluster is started after it, idle from then on."""
    from mlops_assets import resources

    monkeypatch.setattr(resources, "WORKER_IMPORTS", ())
    warm_up = resources.start_local_cluster(resources.DaskResource(n_workers=1))
    resources.close_local_clusters()  # at once: the cluster is still starting
    assert not warm_up.is_alive()
    assert resources._clusters == {} and resources._warm_ups == []


# In a process of its own (its logging and its LocalCluster are the platform's): a worker of the
# run's LocalCluster logs an error and a critical line, as a worker whose scheduler went away
# at exit does.
WORKER_LOGS = """
import logging
from distributed import Client
from mlops_assets.resources import _local_cluster

def log():
    logging.getLogger("distributed.worker").error("worker-error-line")
    logging.getLogger("distributed.worker").critical("worker-critical-line")

with Client(_local_cluster(1)) as client:
    client.run(log)
    logging.getLogger("distributed.nanny").warning("nanny-warning-line")
"""


def test_the_local_clusters_workers_print_only_critical_lines_and_the_nannies_warnings():
    """A heartbeat error with its traceback when a stopped run exits is the workers' noise,
    not the user's (a task's error reaches its step): only their critical lines are printed.
    The nannies, in the run's own process, still say when a worker is killed or dies."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", WORKER_LOGS], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout + done.stderr
    assert "worker-critical-line" in printed and "nanny-warning-line" in printed, printed[-3000:]
    assert "worker-error-line" not in printed


def test_a_worker_freezes_its_objects_at_exit():
    """The preload's exit handler runs before those registered ahead of it (the worker's
    own, ``distributed``'s) and leaves every object frozen: the interpreter's passes at exit
    skip them. Nothing is frozen before the exit."""
    import subprocess
    import sys

    code = (
        "import atexit, gc\n"
        "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"
        "from mlops_assets.parallel import dask_setup\n"
        "dask_setup(None)\n"
        "print('frozen before exit:', gc.get_freeze_count() > 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["frozen before exit: False", "frozen at exit: True"]


def _worker_start() -> dict:
    """Run on a worker: where it came from and what it started with. A forked process keeps its
    server's start-up environment in /proc/self/environ (Dask's nanny updates ``os.environ``
    in every worker, so ``os.environ`` would show its variables whatever the start)."""
    import os
    import sys

    from mlops_assets.resources import WORKER_IMPORTS

    with open("/proc/self/environ", "rb") as file:
        started_with = dict(
            entry.decode().split("=", 1) for entry in file.read().split(b"\0") if b"=" in entry
        )
    return {
        "parent": os.getppid(),
        "imported": all(name in sys.modules for name in WORKER_IMPORTS),
        "variables": {
            name: started_with.get(name)
            for name in ("OMP_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_", "PYTHONHASHSEED")
        },
        "hash": hash("mlops"),
    }


# A new process, as `mlops run` is (a test worker may already run a forkserver that another
# test started): two LocalClusters one after the other, what their workers started with.
FORKED = """
import json, os
if __name__ == "__main__":
    from distributed import Client
    from mlops_assets import resources
    from tests.test_resources import _worker_start
    clusters = []
    for _ in range(2):
        with resources.new_local_cluster(2) as cluster, Client(cluster) as client:
            clusters.append(list(client.run(_worker_start).values()))
    print(json.dumps({"pid": os.getpid(), "clusters": clusters}))
"""


def _in_new_process(code: str, tmp_path) -> dict:
    import json
    import os
    import subprocess
    import sys

    from mlops_assets.settings import PROJECT_ROOT

    script = tmp_path / "probe.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=300, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_local_clusters_workers_are_forked_with_the_tasks_imports_and_dasks_variables(
    tmp_path,
):
    """A LocalCluster's workers are forked from a server process that imported Dask and what
    the tasks import (not new interpreters importing them again), and start with the
    variables Dask's nannies give a spawned worker (one OpenMP thread, memory given back to the
    system, the hash seed every worker shares); a second cluster of the same process forks
    from the same server."""
    import os
    import subprocess
    import sys

    seeded = subprocess.run(
        [sys.executable, "-c", "print(hash('mlops'))"],
        env={**os.environ, "PYTHONHASHSEED": "6640"}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = _in_new_process(FORKED, tmp_path)
    servers = set()
    for states in result["clusters"]:
        assert len(states) == 2
        for state in states:
            assert state["parent"] != result["pid"]  # spawned: its nanny's process, the probe
            assert state["imported"]
            assert state["variables"] == {
                "OMP_NUM_THREADS": "1",
                "MALLOC_TRIM_THRESHOLD_": "65536",
                "PYTHONHASHSEED": "6640",
            }
            assert state["hash"] == int(seeded.stdout)
            servers.add(state["parent"])
    assert len(servers) == 1


# A process whose forkserver was started by other code first (here with no preload): the
# LocalCluster spawns its workers, which then import what they need themselves.
FORKSERVER_TAKEN = """
import json, multiprocessing, os
if __name__ == "__main__":
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([])
    started = context.Process(target=os.getpid)
    started.start(); started.join()
    from distributed import Client
    from mlops_assets import resources
    from tests.test_resources import _worker_start
    with resources.new_local_cluster(1) as cluster, Client(cluster) as client:
        [state] = client.run(_worker_start).values()
    print(json.dumps({"spawned": state["parent"] == os.getpid(), **state}))
"""


def test_a_process_that_already_runs_a_forkserver_spawns_its_clusters_workers(tmp_path):
    state = _in_new_process(FORKSERVER_TAKEN, tmp_path)
    assert state["spawned"] and not state["imported"]
    assert state["variables"]["OMP_NUM_THREADS"] == "1"
