"""The drift library stands alone: importing every module of it loads no Dagster and nothing of
the platform's stages (training, ingestion, monitoring)."""

import pkgutil
import subprocess
import sys

import mlops_assets.drift


def test_the_drift_library_imports_no_dagster_and_no_stage():
    modules = [
        f"mlops_assets.drift.{m.name}" for m in pkgutil.iter_modules(mlops_assets.drift.__path__)
    ]
    assert {"mlops_assets.drift.engine", "mlops_assets.drift.report"} <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'dagster' or "
        "m.startswith(('mlops_assets.training', 'mlops_assets.ingestion', "
        "'mlops_assets.monitoring', 'mlops_assets.features')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
