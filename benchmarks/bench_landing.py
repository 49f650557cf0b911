"""Benchmark the landing stages: sample-data generation and ingestion into DuckDB.

    python benchmarks/bench_landing.py --rows-per-day 11000 --days 90   # ~1M applications

Reports wall time and rows/s for `mlops generate`, for the ingestion of each feed (ledger,
quarantine, accounting; customers with pseudonyms and the encrypted vault) and, as the floor to
compare against, DuckDB's plain read_csv of the same files into a table. The ratio is the
ingestion's rows/s over read_csv's (1.0: as fast as the bare read).
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
from pathlib import Path

import duckdb

from mlops_assets import catalogue
from mlops_assets.ingestion.loader import ingest_source
from mlops_assets.ingestion.sources import identifier_names
from mlops_assets.sample_data.generator import SOURCES, GeneratorConfig, generate
from mlops_assets.security.keyring import Keyring
from mlops_assets.sql import glob_literal, literal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--rows-per-day", type=int, default=11_000)
    args = parser.parse_args()

    specs = catalogue.sources()
    names = identifier_names(specs.values())
    timings: dict[str, tuple[int, int, float, float]] = {}  # files, rows, ingest s, read_csv s
    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
        landing = Path(tmp) / "landing"
        started = time.perf_counter()
        report = generate(GeneratorConfig(days=args.days, rows_per_day=args.rows_per_day), landing)
        generate_s = time.perf_counter() - started
        apps = report.rows["applications"]
        size_mb = sum(f.stat().st_size for f in report.files) / 1e6

        con = duckdb.connect(str(Path(tmp) / "bench.duckdb"))
        keyring = Keyring.create(Path(tmp) / "keyring.json")
        for source in SOURCES:  # customers first, as a run loads them
            spec = specs[source]
            started = time.perf_counter()
            result = ingest_source(con, landing, spec, names, keyring=keyring)
            con.execute("checkpoint")  # the load's writes in the file, as a step's close does
            ingest_s = time.perf_counter() - started
            assert not result.failed, result.failed
            if not result.files:  # outcomes land weeks after their applications
                continue
            rows = result.total("data_lines")

            types = ", ".join(f"{literal(c)}: {literal(t)}" for c, t in spec.columns.items())
            files = literal(glob_literal(landing / source) + "/*.csv")
            started = time.perf_counter()
            con.execute(
                f"create table {source}_plain as select * from read_csv({files}, "
                f"header = true, columns = {{{types}}}, ignore_errors = true)"
            )
            plain_s = time.perf_counter() - started
            timings[source] = (len(result.files), rows, ingest_s, plain_s)
        con.close()

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}")
    print(f"landing: {apps:,} applications, {sum(report.rows.values()):,} lines, {size_mb:.0f} MB")
    print(f"generate (3 sources): {generate_s:.1f} s, {apps / generate_s:,.0f} applications/s")
    print("| feed | files | rows | ingest s | rows/s | read_csv s | read_csv rows/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for source, (files, rows, ingest_s, plain_s) in timings.items():
        print(
            f"| {source} | {files} | {rows:,} | {ingest_s:.1f} | {rows / ingest_s:,.0f} "
            f"| {plain_s:.2f} | {rows / plain_s:,.0f} | {plain_s / ingest_s:.2f} |"
        )
    print(f"peak RSS: {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
