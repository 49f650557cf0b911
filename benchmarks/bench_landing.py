"""Benchmark the landing stages: sample-data generation and ingestion into DuckDB.

    python benchmarks/bench_landing.py --rows-per-day 11000 --days 90   # ~1M applications

Reports wall time and rows/s for `mlops generate`, for ingestion of the applications files
(ledger + quarantine + accounting), and, as the floor to compare against, DuckDB's plain
read_csv of the same files into a table.
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
from mlops_assets.sample_data.generator import GeneratorConfig, generate
from mlops_assets.security.keyring import Keyring


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--rows-per-day", type=int, default=11_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
        landing = Path(tmp) / "landing"
        started = time.perf_counter()
        report = generate(GeneratorConfig(days=args.days, rows_per_day=args.rows_per_day), landing)
        generate_s = time.perf_counter() - started
        apps = report.rows["applications"]
        size_mb = sum(f.stat().st_size for f in report.files) / 1e6

        con = duckdb.connect(str(Path(tmp) / "bench.duckdb"))
        started = time.perf_counter()
        keyring = Keyring.create(Path(tmp) / "keyring.json")
        result = ingest_source(
            con,
            landing,
            catalogue.sources()["applications"],
            identifier_names(catalogue.sources().values()),
            keyring=keyring,
        )
        ingest_s = time.perf_counter() - started
        assert not result.failed, result.failed

        types = ", ".join(
            f"'{c}': '{t}'" for c, t in catalogue.sources()["applications"].columns.items()
        )
        started = time.perf_counter()
        con.execute(
            f"create table plain as select * from read_csv('{landing}/applications/*.csv', "
            f"header = true, columns = {{{types}}}, ignore_errors = true)"
        )
        plain_s = time.perf_counter() - started
        con.close()

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}")
    print(f"landing: {apps:,} applications, {sum(report.rows.values()):,} lines, {size_mb:.0f} MB")
    print("| stage | seconds | rows/s |")
    print("|---|---:|---:|")
    print(f"| generate (3 sources) | {generate_s:.1f} | {apps / generate_s:,.0f} |")
    print(f"| ingest applications (ledger, quarantine) | {ingest_s:.1f} | {apps / ingest_s:,.0f} |")
    print(f"| DuckDB read_csv alone, same files | {plain_s:.1f} | {apps / plain_s:,.0f} |")
    print(f"peak RSS: {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
