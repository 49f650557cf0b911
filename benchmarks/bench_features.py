"""Benchmark the feature layer: feature SQL, the full Pandera contract, publishing.

    python benchmarks/bench_features.py --rows 1000000

Builds a mart-shaped table of synthetic applications (tests/sample_data/marts.py) in one
process, then times each stage of `features/loan_features` on it in a fresh process per chunk
size, so each peak RSS is the feature layer's own. The contract figure is the issue's target
(<= 3 s for 1M rows on 2 cores): reading the chunks out of DuckDB plus validating every check.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

# The repository root: the mart generator is test data (tests/), not part of the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_assets.features.engineering import stage_features
from mlops_assets.features.quality import measure_quality
from mlops_assets.features.validation import apply_contract, publish
from mlops_assets.warehouse import connection
from tests.sample_data.marts import load_synthetic_mart


def build_mart(path: str, rows: int) -> None:
    with connection(Path(path), create=True) as con:
        load_synthetic_mart(con, rows)


def feature_stages(
    path: str, chunk_rows: int, memory_limit: str, repeat: int, out: multiprocessing.Queue
) -> None:
    timings: list[tuple[str, float]] = []
    with connection(Path(path)) as con:
        con.execute(f"set memory_limit = '{memory_limit}'")
        started = time.perf_counter()
        rows = stage_features(con)
        timings.append(("feature SQL (stage_features)", time.perf_counter() - started))
        started = time.perf_counter()
        measure_quality(con)
        timings.append(("quality metrics", time.perf_counter() - started))
        runs = []
        for _ in range(repeat):
            started = time.perf_counter()
            report = apply_contract(con, chunk_rows=chunk_rows)
            runs.append(time.perf_counter() - started)
        label = f"contract, {report.chunks} chunks of ≤{chunk_rows:,} (best of {repeat})"
        timings.append((label, min(runs)))
        started = time.perf_counter()
        publish(con)
        timings.append(("publish (one transaction)", time.perf_counter() - started))
    assert report.rows_quarantined == 0, report.failures_by_check
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put((rows, timings, peak_mb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, nargs="+", default=[250_000, 50_000])
    parser.add_argument(
        "--memory-limit", default="1GB", help="DuckDB memory_limit: it spills beyond it"
    )
    parser.add_argument("--repeat", type=int, default=3, help="contract runs; the best counts")
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
        path = str(Path(tmp) / "bench.duckdb")
        setup = spawn.Process(target=build_mart, args=(path, args.rows))
        setup.start()
        setup.join()
        assert setup.exitcode == 0
        for chunk_rows in args.chunk_rows:
            out = spawn.Queue()
            stages = spawn.Process(
                target=feature_stages, args=(path, chunk_rows, args.memory_limit, args.repeat, out)
            )
            stages.start()
            rows, timings, peak_mb = out.get()
            stages.join()
            print(
                f"\nrows: {rows:,}; DuckDB memory_limit {args.memory_limit}; "
                f"peak RSS of the feature stages: {peak_mb:,.0f} MB"
            )
            print("| stage | seconds | rows/s |")
            print("|---|---:|---:|")
            for label, seconds in timings:
                print(f"| {label} | {seconds:.2f} | {rows / seconds:,.0f} |")


if __name__ == "__main__":
    main()
