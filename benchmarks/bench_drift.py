"""Benchmark drift detection against Evidently, on the same Parquet files in the same run.

    python benchmarks/bench_drift.py --rows 1000000 --columns 20            # vs Evidently
    python benchmarks/bench_drift.py --rows 10000000 --columns 100 --no-evidently

Generates a reference and a current dataset (numbers: normal, log-normal, uniform, a few
values, with missing values; categories: 2 to 100 values, a new one, a constant) where 40 % of
the columns drift, some only slightly. `mlops drift` runs as a subprocess (wall time and peak
RSS of the whole command, imports included); Evidently's DataDriftPreset runs in its own
virtualenv (`.venv-evidently`, it needs pandas < 3) on the same files, and its time is the
report alone, without reading the files. Prints the speed ratio, the verdict agreement per
column, and the dataset verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
EVIDENTLY_PYTHON = ROOT / ".venv-evidently" / "bin" / "python"
CHUNK_ROWS = 500_000
CATEGORIES = np.array([f"c{i:02d}" for i in range(100)])


def column_spec(i: int) -> tuple[str, float]:
    """Column ``i``'s generator and drift strength (0: none). 40 % of columns drift."""
    kinds = ("normal", "lognormal", "category10", "few", "uniform", "category2", "missing",
             "category100", "normal", "constant")  # fmt: skip
    strength = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.12, 0.6, 1.0)[(i * 7) % 10]
    return kinds[i % len(kinds)], strength


def generate_chunk(rng, rows: int, columns: int, drifted: bool) -> pa.Table:
    data = {}
    for i in range(columns):
        kind, strength = column_spec(i)
        s = strength if drifted else 0.0
        name = f"{kind}_{i}"
        if kind == "normal":
            data[name] = rng.normal(s * 0.5, 1.0, rows)
        elif kind == "lognormal":
            data[name] = np.round(rng.lognormal(10 - 0.3 * s, 0.5, rows), 2)
        elif kind == "uniform":
            data[name] = rng.uniform(0, 1 + s, rows)
        elif kind == "few":
            p = np.array([0.3, 0.3, 0.2, 0.1, 0.1]) + s * np.array([-0.1, 0, 0, 0.1, 0])
            data[name] = rng.choice(5, rows, p=p).astype(np.float64)
        elif kind == "missing":
            values = rng.exponential(1 + s, rows)
            data[name] = np.where(rng.random(rows) < 0.2, np.nan, values)
        elif kind == "constant":
            data[name] = np.full(rows, "same")
        else:
            n = {"category10": 10, "category2": 2, "category100": 100}[kind]
            weights = np.linspace(1, 1 + 2 * s, n)
            data[name] = CATEGORIES[rng.choice(n, rows, p=weights / weights.sum())]
    return pa.table(data)


def write_dataset(path: Path, rows: int, columns: int, seed: int, drifted: bool) -> None:
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, CHUNK_ROWS):
        table = generate_chunk(rng, min(CHUNK_ROWS, rows - start), columns, drifted)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def run_ours(reference: Path, current: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of `mlops drift` as a separate process."""
    started = time.perf_counter()
    subprocess.run(
        [
            str(Path(sys.executable).parent / "mlops"),
            "drift",
            str(reference),
            str(current),
            "--json",
            str(out),
            "--html",
            str(out.with_suffix(".html")),
        ],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - started
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run_evidently(reference: Path, current: Path, out: Path) -> dict:
    subprocess.run(
        [
            str(EVIDENTLY_PYTHON),
            str(ROOT / "benchmarks" / "evidently_drift.py"),
            str(reference),
            str(current),
            str(out),
        ],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--evidently", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="mlops-bench-drift-") as tmp:
        tmp = Path(tmp)
        reference, current = tmp / "reference.parquet", tmp / "current.parquet"
        started = time.perf_counter()
        write_dataset(reference, args.rows, args.columns, seed=1, drifted=False)
        write_dataset(current, args.rows, args.columns, seed=2, drifted=True)
        size = (reference.stat().st_size + current.stat().st_size) / 1e6
        print(
            f"data: {args.rows:,} rows x {args.columns} columns per side, {size:,.0f} MB of "
            f"Parquet, generated in {time.perf_counter() - started:.1f} s"
        )
        seconds, peak = run_ours(reference, current, tmp / "ours.json")
        ours = json.loads((tmp / "ours.json").read_text())
        html_kb = (tmp / "ours.html").stat().st_size / 1024
        print(f"HTML report of {args.columns} columns: {html_kb:,.0f} KB")
        print("| tool | seconds | peak RSS MB | drifted columns | dataset drift |")
        print("|---|---:|---:|---:|---|")
        print(
            f"| mlops drift (whole command) | {seconds:.1f} | {peak:,.0f} | "
            f"{ours['n_drifted_columns']}/{ours['n_columns']} | {ours['dataset_drift']} |"
        )
        if not args.evidently:
            return
        theirs = run_evidently(reference, current, tmp / "evidently.json")
        dataset = theirs["dataset"]
        print(
            f"| Evidently {_evidently_version()} (report only) | {theirs['report_seconds']:.1f} | "
            f"{theirs['peak_rss_mb']:,.0f} | {dataset['count']:.0f}/{len(theirs['columns'])} | "
            f"{dataset['dataset_drift']} |"
        )
        agree = [c["drifted"] == theirs["columns"][c["column"]]["drifted"] for c in ours["columns"]]
        worst = max(
            abs(c["score"] - theirs["columns"][c["column"]]["score"]) for c in ours["columns"]
        )
        print(
            f"\nspeed-up: {theirs['report_seconds'] / seconds:.1f}x (Evidently's report alone vs "
            f"our whole command); column verdicts agree: {sum(agree)}/{len(agree)}; dataset "
            f"verdict agrees: {ours['dataset_drift'] == dataset['dataset_drift']}; largest "
            f"score difference: {worst:.2g}"
        )
        if not all(agree):
            for c in ours["columns"]:
                other = theirs["columns"][c["column"]]
                if c["drifted"] != other["drifted"]:
                    print(f"  disagree: {c['column']} ours {c['score']:.4g} theirs {other}")


def _evidently_version() -> str:
    return subprocess.run(
        [str(EVIDENTLY_PYTHON), "-c", "import evidently; print(evidently.__version__)"],
        capture_output=True,
        text=True,
    ).stdout.strip()


if __name__ == "__main__":
    main()
