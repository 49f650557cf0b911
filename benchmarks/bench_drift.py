"""Benchmark drift detection against Evidently, on the same Parquet files in the same run.

    python benchmarks/bench_drift.py --rows 300000 --rows 1000000 --columns 20 --repeat 3
    python benchmarks/bench_drift.py --rows 10000000 --columns 100 --no-evidently

Generates a reference and a current dataset (numbers: normal, log-normal, uniform, a few
values, with missing values; categories: 2 to 100 values, a new one, a constant) where 40 % of
the columns drift, some only slightly. Both tools are timed as whole processes, start-up
included, as a user meets them: `mlops drift` (JSON and HTML reports), and a script that
imports Evidently, reads both Parquet files with pandas and runs DataDriftPreset
(benchmarks/evidently_drift.py, in its own virtualenv: `.venv-evidently`, or
--evidently-python; Evidently needs pandas < 3). The runs alternate, ours then theirs, and
each is repeated; the table gives the minimum and the median wall time, the peak RSS of each
process, and the ratio of Evidently's time to ours. Prints the machine and the date, and the
verdict agreement per column and for the dataset.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
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


def run_process(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one process, start-up included."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            errors.seek(0)
            message = errors.read().decode(errors="replace")
            raise SystemExit(f"{command[0]} failed ({process.returncode}):\n{message}")
    return seconds, usage.ru_maxrss / 1024


def ours_command(reference: Path, current: Path, out: Path) -> list[str]:
    mlops = str(Path(sys.executable).parent / "mlops")
    return [mlops, "drift", str(reference), str(current), "--json", str(out),
            "--html", str(out.with_suffix(".html"))]  # fmt: skip


def evidently_command(python: Path, reference: Path, current: Path, out: Path) -> list[str]:
    script = ROOT / "benchmarks" / "evidently_drift.py"
    return [str(python), str(script), str(reference), str(current), str(out)]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                 .splitlines() if line.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def timed(label: str, runs: list[tuple[float, float]]) -> str:
    times, peaks = [seconds for seconds, _ in runs], [peak for _, peak in runs]
    return (
        f"| {label} | {min(times):.2f} | {statistics.median(times):.2f} | "
        f"{', '.join(f'{t:.2f}' for t in times)} | {max(peaks):,.0f} |"
    )


def bench(rows: int, columns: int, repeat: int, evidently: Path | None, tmp: Path) -> None:
    reference, current = tmp / f"reference-{rows}.parquet", tmp / f"current-{rows}.parquet"
    started = time.perf_counter()
    write_dataset(reference, rows, columns, seed=1, drifted=False)
    write_dataset(current, rows, columns, seed=2, drifted=True)
    size = (reference.stat().st_size + current.stat().st_size) / 1e6
    print(
        f"\n## {rows:,} rows x {columns} columns per side ({size:,.0f} MB of Parquet, "
        f"generated in {time.perf_counter() - started:.1f} s)\n"
    )
    ours_out, theirs_out = tmp / "ours.json", tmp / "evidently.json"
    ours, theirs = [], []  # (seconds, peak MB) of each run
    for _ in range(repeat):  # alternating: both meet the same load on a shared machine
        ours.append(run_process(ours_command(reference, current, ours_out)))
        if evidently:
            theirs.append(run_process(evidently_command(evidently, reference, current, theirs_out)))
    mine = json.loads(ours_out.read_text())
    print(f"| whole process, {repeat} runs | min s | median s | every run | peak RSS MB |")
    print("|---|---:|---:|---|---:|")
    print(timed("`mlops drift` (JSON and HTML reports)", ours))
    if not evidently:
        print(f"\ndrifted columns: {mine['n_drifted_columns']}/{mine['n_columns']}; dataset "
              f"drift: {mine['dataset_drift']}")  # fmt: skip
        return
    other = json.loads(theirs_out.read_text())
    print(timed(f"Evidently {_evidently_version(evidently)} DataDriftPreset script", theirs))
    medians = [statistics.median(seconds for seconds, _ in runs) for runs in (theirs, ours)]
    print(
        f"\n**{min(theirs)[0] / min(ours)[0]:.1f}x** faster (min / min; median / median: "
        f"{medians[0] / medians[1]:.1f}x). Inside Evidently's last run: reading "
        f"{other['read_seconds']:.1f} s, report {other['report_seconds']:.1f} s."
    )
    compare_verdicts(mine, other)


def compare_verdicts(ours: dict, theirs: dict) -> None:
    dataset = theirs["dataset"]
    agree = [c["drifted"] == theirs["columns"][c["column"]]["drifted"] for c in ours["columns"]]
    worst = max(
        abs((c["score"] or 0.0) - theirs["columns"][c["column"]]["score"]) for c in ours["columns"]
    )
    print(
        f"drifted columns: ours {ours['n_drifted_columns']}/{ours['n_columns']}, Evidently "
        f"{dataset['count']:.0f}/{len(theirs['columns'])}; column verdicts agree: "
        f"{sum(agree)}/{len(agree)}; dataset verdict agrees: "
        f"{ours['dataset_drift'] == dataset['dataset_drift']}; largest score difference: "
        f"{worst:.2g}"
    )
    for c in ours["columns"]:
        other = theirs["columns"][c["column"]]
        if c["drifted"] != other["drifted"]:
            print(f"  disagree: {c['column']} ours {c['score']:.4g} theirs {other}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="repeatable [1,000,000]")
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool per size")
    parser.add_argument("--evidently", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--evidently-python",
        type=Path,
        default=EVIDENTLY_PYTHON,
        help="the Python of a virtualenv with Evidently 0.7.23 [.venv-evidently/bin/python]",
    )
    args = parser.parse_args()
    evidently = args.evidently_python if args.evidently else None
    if evidently and not evidently.exists():
        parser.error(f"{evidently} does not exist: `make .venv-evidently/.installed`, or "
                     "--evidently-python, or --no-evidently")  # fmt: skip
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="mlops-bench-drift-") as tmp:
        for rows in args.rows or [1_000_000]:
            bench(rows, args.columns, args.repeat, evidently, Path(tmp))


def _evidently_version(python: Path) -> str:
    return subprocess.run(
        [str(python), "-c", "import evidently; print(evidently.__version__)"],
        capture_output=True,
        text=True,
    ).stdout.strip()


if __name__ == "__main__":
    main()
