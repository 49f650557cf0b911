"""`mlops --help` and a mistyped command answer at once: importing the CLI loads neither the
warehouse driver nor the catalogue, Dagster or the ML stack (each command imports its own).
Every command's help loads no data library, and `mlops drift` on two Parquet files loads only
numpy and Arrow: no pandas, scipy (its distances need none), Dask, DuckDB (only a CSV needs it),
scikit-learn or Dagster. Start-up is asserted as the modules loaded, not as seconds: timings
belong to benchmarks/bench_drift.py."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

HEAVY = ("duckdb", "dagster", "sklearn", "pandas", "numpy", "mlops_assets.catalogue")
DATA = ("pandas", "numpy", "pyarrow", "scipy", "sklearn", "dagster", "dask", "distributed",
        "duckdb")  # fmt: skip
# A run of `mlops drift` needs numpy and Arrow; none of these.
NOT_FOR_DRIFT = ("pandas", "scipy", "sklearn", "dagster", "dask", "distributed", "duckdb")


def test_importing_the_cli_loads_nothing_heavy():
    shown = subprocess.run(
        [sys.executable, "-c", "import sys, mlops_assets.cli; print(*sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert not set(HEAVY) & set(shown.stdout.split())


def loaded_by(*args: str) -> set[str]:
    """The top-level packages loaded by running `mlops ARGS` in a fresh interpreter."""
    code = (
        "import sys\n"
        f"sys.argv = ['mlops', *{list(args)!r}]\n"
        "from mlops_assets.cli import app\n"
        "try:\n    app()\n"
        "except SystemExit as end:\n    code = end.code\n"
        "print('LOADED', *sorted({m.split('.')[0] for m in sys.modules}), file=sys.stderr)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return set(run.stderr.rsplit("LOADED", 1)[1].split())


@pytest.mark.parametrize(
    "command", [["--help"], ["drift", "--help"], ["models", "--help"], ["pii", "--help"]]
)
def test_the_help_of_a_command_loads_no_data_library(command):
    assert not set(DATA) & loaded_by(*command)


def test_the_top_level_help_is_click_text_without_rich_help_rendering():
    """Rich's help panels load its Markdown and syntax modules (~0.1 s) and cut long option
    lists to the panel's width; the plain help prints every test name."""
    loaded = loaded_by("--help")
    assert "markdown_it" not in loaded and "pygments" not in loaded


def test_a_drift_run_on_parquet_loads_no_pandas_scipy_dask_or_duckdb(tmp_path):
    """More than 1,000 rows: Evidently's defaults are distances (Wasserstein, Jensen-Shannon),
    so nothing needs scipy; a nullable float, an integer and a string column with nulls."""
    rng = np.random.default_rng(0)
    for name, shift in (("ref", 0.0), ("cur", 0.5)):
        missing = rng.random(3000) < 0.1
        table = pa.table(
            {
                "income": pa.array(rng.normal(shift, 1, 3000), mask=missing),
                "age": rng.integers(18, 80, 3000),
                "purpose": pa.array(rng.choice(["car", "home", "debt"], 3000), mask=missing[::-1]),
            }
        )
        pq.write_table(table, tmp_path / f"{name}.parquet", row_group_size=1000)
    report = tmp_path / "report.json"
    loaded = loaded_by(
        "drift", str(tmp_path / "ref.parquet"), str(tmp_path / "cur.parquet"),
        "--json", str(report), "--html", str(tmp_path / "report.html"),
    )  # fmt: skip
    assert report.stat().st_size > 0
    assert {"numpy", "pyarrow"} <= loaded
    assert not set(NOT_FOR_DRIFT) & loaded
