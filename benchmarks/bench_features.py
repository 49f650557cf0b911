"""Benchmark the feature layer: feature SQL, the full Pandera contract, publishing.

    python benchmarks/bench_features.py --rows 1000000

Builds a mart-shaped table of synthetic applications (mlops_assets.sample_data.marts), then
times each stage of `features/loan_features` on it. The contract figure is the issue's target
(<= 3 s for 1M rows on 2 cores): reading the chunks out of DuckDB plus validating every check.
Peak RSS is also reported at a small chunk size, to show memory follows the chunk.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import duckdb

from mlops_assets.features.engineering import stage_features
from mlops_assets.features.quality import measure_quality
from mlops_assets.features.validation import DEFAULT_CHUNK_ROWS, apply_contract, publish
from mlops_assets.sample_data.marts import load_synthetic_mart


def timed(label: str, results: list, fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    results.append((label, time.perf_counter() - started))
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--repeat", type=int, default=3, help="contract runs; the best counts")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
        con = duckdb.connect(str(Path(tmp) / "bench.duckdb"))
        results: list[tuple[str, float]] = []
        timed("build synthetic mart (setup)", results, load_synthetic_mart, con, args.rows)
        rows = timed("feature SQL (stage_features)", results, stage_features, con)
        timed("quality metrics", results, measure_quality, con)
        contract_runs = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            report = apply_contract(con, chunk_rows=args.chunk_rows)
            contract_runs.append(time.perf_counter() - started)
        results.append(
            (f"contract, {report.chunks} chunks (best of {args.repeat})", min(contract_runs))
        )
        timed("publish (one transaction)", results, publish, con)
        con.close()
    assert report.rows_quarantined == 0, report.failures_by_check

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(f"rows: {rows:,}, chunk rows: {args.chunk_rows:,}")
    print("| stage | seconds | rows/s |")
    print("|---|---:|---:|")
    for label, seconds in results:
        print(f"| {label} | {seconds:.2f} | {rows / seconds:,.0f} |")
    print(f"peak RSS: {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
