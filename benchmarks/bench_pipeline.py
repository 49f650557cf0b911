"""Benchmark `mlops run` end to end, from an empty MLOPS_HOME, at several sizes.

    python benchmarks/bench_pipeline.py --applications 100000 1000000 10000000

For each size: `mlops generate` writes 90 landing days (outside the timing), then `mlops run`
runs in a fresh process, exactly as a user starts it, while this script samples the memory of
that process and every process it starts (Dask workers, dbt) four times a second. Reported:

* wall time of `mlops run`, and peak RSS summed over its process tree;
* per stage: seconds of its Dagster steps and rows/s (the asset's input rows / step seconds);
* Dagster's own overhead: wall time outside every step (process start, imports, loading the
  definitions, dbt parse, run bookkeeping) as a share of the wall time, and where it goes
  (before the run's first event, to its first step, between steps, after the last);
* ingestion rows/s against DuckDB's bare `read_csv` of the same applications files.

Results are printed as Markdown and written to ``<work>/pipeline-<applications>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import psutil

from mlops_assets import catalogue
from mlops_assets.ops.health import ASSETS_TABLE
from mlops_assets.sql import glob_literal, literal

BIN = Path(sys.executable).parent
DAYS = 90
# What the platform promises (docs/benchmarks.md): wall-time ceilings by size, the peak memory
# of the largest run, Dagster's share of a 100k run, and ingestion against DuckDB's own reader.
WALL_CEILINGS = {1_000_000: 240.0, 10_000_000: 1200.0}
PEAK_RSS_CEILING_GB = 6.0
OVERHEAD_CEILING = {100_000: 0.10}
INGESTION_FLOOR = 0.5  # applications ingestion rows/s over bare read_csv rows/s
# Stages as the docs name them, and the assets (Dagster steps) each one covers.
STAGES = {
    "ingestion": ("raw/",),
    "dbt": ("staging/", "intermediate/", "marts/"),
    "features + contract": ("features/",),
    "training (2 models)": ("models/",),
    "scoring": ("predictions/",),
    "drift": ("monitoring/",),  # every model's drift report
}


class PeakMemory:
    """Peak RSS of a process and all its descendants, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.peak = 0
        self.peak_at = 0.0  # time.time() of the peak sample
        self.peak_by_process: dict[str, int] = {}  # the peak sample's RSS by kind of process
        self._root = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                tree = [self._root, *self._root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            by_process: dict[str, int] = {}
            for process in tree:
                try:
                    rss = process.memory_info().rss
                    kind = process_kind(process, self._root)
                except psutil.Error:  # gone, or not ours to read
                    continue
                by_process[kind] = by_process.get(kind, 0) + rss
            total = sum(by_process.values())
            if total > self.peak:
                self.peak, self.peak_at, self.peak_by_process = total, time.time(), by_process
            self._stop.wait(interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def process_kind(process: psutil.Process, root: psutil.Process) -> str:
    """What a process of the run's tree is: the run itself, dbt, a Dask worker, or other."""
    if process.pid == root.pid:
        return "mlops run"
    command = process.cmdline()
    if any(Path(part).name == "dbt" for part in command[:2]):
        return "dbt"
    if any("spawn_main" in part for part in command):
        return "Dask workers"  # the LocalCluster's spawned processes
    return "other"


def generate(home: Path, applications: int) -> None:
    if (home / "landing" / "applications").is_dir():
        return
    subprocess.run(
        [
            BIN / "mlops",
            "generate",
            "--days",
            str(DAYS),
            "--rows-per-day",
            str(round(applications / DAYS)),
            "--drift-from-day",
            str(DAYS - 15),
        ],
        env={**os.environ, "MLOPS_HOME": str(home)},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def run_pipeline(home: Path) -> dict:
    env = {**os.environ, "MLOPS_HOME": str(home)}
    started_at = time.time()
    started = time.perf_counter()
    process = subprocess.Popen(
        [BIN / "mlops", "run", "--json", "--no-table-metadata"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    memory = PeakMemory(process.pid)
    out, _ = process.communicate()
    wall = time.perf_counter() - started
    ended_at = time.time()
    peak = memory.stop()
    summary = json.loads(out)
    if process.returncode != 0:
        raise SystemExit(f"mlops run failed ({process.returncode}): {summary['failed_steps']}")
    return {
        "wall_seconds": wall,
        "started_at": started_at,
        "ended_at": ended_at,
        "peak_rss_bytes": peak,
        "peak_at": memory.peak_at,
        "peak_by_process": memory.peak_by_process,
        "summary": summary,
    }


def steps_running_at(steps: list[tuple[str, float, float]], moment: float) -> list[str]:
    """The steps (:func:`run_timeline`'s) that had started and not yet ended at ``moment``
    (time.time())."""
    return [key for key, start, end in steps if start <= moment <= end]


def overhead_parts(
    started_at: float, first_event: float, steps: list[tuple[float, float]], ended_at: float
) -> dict[str, float]:
    """The wall time outside every step, by where it is spent: before the run's first event
    (the process's start, imports, the definitions, the instance, `dbt parse` when waited
    for), from that event to the first step (the run's planning), between steps, and after
    the last step (the run's end, the summary, the process's exit). ``steps``: (start, end)
    of each step; times are ``time.time()``. The parts add up to the wall time less the
    union of the steps."""
    spans = sorted(steps)
    merged: list[list[float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    first_step, last_step = (merged[0][0], merged[-1][1]) if merged else (first_event,) * 2
    return {
        "before the run's first event": first_event - started_at,
        "from it to the first step": first_step - first_event,
        "between steps": sum(b[0] - a[1] for a, b in itertools.pairwise(merged)),
        "after the last step": ended_at - last_step,
    }


def run_timeline(home: Path, run_id: str) -> tuple[float, list[tuple[str, float, float]]]:
    """The run's first event and the (key, start, end) of each of its steps, from its event
    log."""
    import dagster as dg

    from mlops_assets.ops.health import step_spans

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        entries = instance.all_logs(run_id)
    return entries[0].timestamp, step_spans(entries)


def stage_table(home: Path, run_id: str, spans: list[tuple[str, float, float]]) -> dict[str, dict]:
    """Seconds per stage (each Dagster step counted once: dbt's one step builds every model)
    and the seconds of all steps, checks included, from the steps' ``spans``
    (:func:`run_timeline`'s; a retried step counts its last attempt)."""
    steps = {step: end - start for step, start, end in spans}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            f"select asset, step, rows_in from {ASSETS_TABLE} where run_id = ?", [run_id]
        ).fetchall()
        applications = con.execute("select count(*) from raw.applications").fetchall()[0][0]
    stages: dict[str, dict] = {}
    asset_steps = set()
    for stage, prefixes in STAGES.items():
        mine = {step for asset, step, _ in rows if asset.startswith(prefixes)}
        asset_steps |= mine
        seconds = sum(steps.get(step, 0.0) for step in mine)
        # rows/s of a stage: the applications it processed (every stage handles each once).
        stages[stage] = {
            "seconds": seconds,
            "rows_per_second": applications / seconds if seconds else None,
        }
    checks = sum(seconds for step, seconds in steps.items() if step not in asset_steps)
    stages["asset checks (identifier scans)"] = {"seconds": checks, "rows_per_second": None}
    apps = [(step, n) for asset, step, n in rows if asset == "raw/applications"]
    stages["ingestion"]["applications_rows_per_second"] = (
        apps[0][1] / steps[apps[0][0]] if apps and apps[0][1] else None
    )
    stages["_all_steps_seconds"] = sum(steps.values())
    stages["_applications"] = applications
    return stages


def duckdb_read_csv(home: Path) -> tuple[int, float]:
    """Rows and seconds of DuckDB reading the applications landing files into a table: the
    floor ingestion is measured against."""
    columns = catalogue.sources()["applications"].columns
    types = ", ".join(f"{literal(c)}: {literal(t)}" for c, t in columns.items())
    files = literal(glob_literal(home / "landing" / "applications") + "/*.csv")
    with duckdb.connect() as con:
        started = time.perf_counter()
        con.execute(
            f"create table plain as select * from read_csv({files}, header = true, "
            f"columns = {{{types}}}, ignore_errors = true)"
        )
        seconds = time.perf_counter() - started
        rows = con.execute("select count(*) from plain").fetchall()[0][0]
    return rows, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--applications", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/.work"))
    parser.add_argument("--keep", action="store_true", help="keep each size's MLOPS_HOME")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GB, Python {platform.python_version()}"
    )
    for applications in args.applications:
        home = (args.work / f"home-{applications}").resolve()
        for stale in ("warehouse.duckdb", "dagster", "models", "reports", "keys", "dbt", "logs"):
            path = home / stale
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        generate(home, applications)
        result = run_pipeline(home)
        first_event, steps = run_timeline(home, result["summary"]["run_id"])
        stages = stage_table(home, result["summary"]["run_id"], steps)
        csv_rows, csv_seconds = duckdb_read_csv(home)
        wall = result["wall_seconds"]
        overhead = wall - stages.pop("_all_steps_seconds")
        record = {
            "applications": stages.pop("_applications"),
            "wall_seconds": wall,
            "in_run_seconds": result["summary"]["seconds"],
            "peak_rss_gb": result["peak_rss_bytes"] / 2**30,
            "peak_rss_gb_by_process": {
                kind: rss / 2**30 for kind, rss in sorted(result["peak_by_process"].items())
            },
            "steps_at_peak": steps_running_at(steps, result["peak_at"]),
            "overhead_seconds": overhead,
            "overhead_share": overhead / wall,
            "overhead_parts": overhead_parts(
                result["started_at"], first_event, [s[1:] for s in steps], result["ended_at"]
            ),
            "stages": stages,
            "duckdb_read_csv_rows_per_second": csv_rows / csv_seconds,
        }
        (args.work / f"pipeline-{applications}.json").write_text(json.dumps(record, indent=2))
        print_record(record)
        if not args.keep:
            shutil.rmtree(home)


def print_record(record: dict) -> None:
    print(
        f"\n### {record['applications']:,} applications: {record['wall_seconds']:.0f} s wall, "
        f"peak RSS {record['peak_rss_gb']:.2f} GB, Dagster overhead "
        f"{record['overhead_seconds']:.0f} s ({record['overhead_share']:.0%})\n"
    )
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in record.get("overhead_parts", {}).items())
    if parts:
        print(f"Dagster overhead, where it goes: {parts}.\n")
    shares = ", ".join(f"{k} {v:.2f} GB" for k, v in record["peak_rss_gb_by_process"].items())
    steps = ", ".join(record["steps_at_peak"]) or "none (between steps)"
    print(f"Peak RSS by process: {shares}; steps running then: {steps}.\n")
    print("| stage | seconds | applications/s |")
    print("|---|---:|---:|")
    for stage, values in record["stages"].items():
        rate = values["rows_per_second"]
        print(f"| {stage} | {values['seconds']:.1f} | {f'{rate:,.0f}' if rate else '-'} |")
    ingest = record["stages"]["ingestion"]["applications_rows_per_second"]
    bare = record["duckdb_read_csv_rows_per_second"]
    print(
        f"\nIngestion of the applications files: {ingest:,.0f} rows/s; DuckDB read_csv of the "
        f"same files: {bare:,.0f} rows/s; ratio {ingest / bare:.2f}."
    )
    print("\n| target | measured | ceiling or floor | met |")
    print("|---|---:|---:|---|")
    for name, measured, bound, met in targets(record):
        print(f"| {name} | {measured} | {bound} | {'yes' if met else 'NO'} |")


def targets(record: dict) -> list[tuple[str, str, str, bool]]:
    """Each promise that applies to this size: (what, measured, bound, met)."""
    size = record["applications"]
    ingest = record["stages"]["ingestion"]["applications_rows_per_second"]
    ratio = ingest / record["duckdb_read_csv_rows_per_second"]
    floor = INGESTION_FLOOR
    rows = [("ingestion / read_csv", f"{ratio:.2f}", f">= {floor}", ratio >= floor)]
    nearest = min(WALL_CEILINGS, key=lambda n: abs(n - size))
    if abs(nearest - size) <= nearest * 0.05:
        ceiling, wall = WALL_CEILINGS[nearest], record["wall_seconds"]
        rows.append(("wall time", f"{wall:.0f} s", f"< {ceiling:.0f} s", wall < ceiling))
    if size >= 10_000_000 * 0.95:
        peak, ceiling = record["peak_rss_gb"], PEAK_RSS_CEILING_GB
        rows.append(("peak RSS", f"{peak:.2f} GB", f"< {ceiling} GB", peak < ceiling))
    for n, ceiling in OVERHEAD_CEILING.items():
        if abs(n - size) <= n * 0.05:
            share = record["overhead_share"]
            rows.append(("Dagster overhead", f"{share:.0%}", f"< {ceiling:.0%}", share < ceiling))
    return rows


if __name__ == "__main__":
    main()
