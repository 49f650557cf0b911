"""Evidently's DataDriftPreset on two Parquet files: the benchmark peer of `mlops drift`.

Runs in Evidently's own virtualenv (`make .venv-evidently/.installed`; it needs pandas < 3):

    .venv-evidently/bin/python benchmarks/evidently_drift.py REFERENCE CURRENT OUT.json

bench_drift.py times this whole process (imports included), as it times `mlops drift`.

Column kinds follow the same rule as `mlops drift`: numeric dtypes are numerical, everything
else categorical (time columns are left out). Writes seconds (read, report), peak RSS, the
dataset verdict and every column's method, score, threshold and verdict.
"""

import json
import resource
import sys
import time

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

P_VALUE_METHODS = {"K-S p_value", "chi-square p_value", "Z-test p_value"}


def main(reference: str, current: str, out: str) -> None:
    started = time.perf_counter()
    ref, cur = pd.read_parquet(reference), pd.read_parquet(current)
    read = time.perf_counter() - started
    numeric = [
        c
        for c in ref.columns
        if pd.api.types.is_numeric_dtype(ref[c]) and not pd.api.types.is_bool_dtype(ref[c])
    ]
    times = [c for c in ref.columns if pd.api.types.is_datetime64_any_dtype(ref[c])]
    categorical = [c for c in ref.columns if c not in numeric and c not in times]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(cur[numeric + categorical], data_definition=definition),
        Dataset.from_pandas(ref[numeric + categorical], data_definition=definition),
    )
    seconds = time.perf_counter() - started
    columns, dataset = {}, None
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith("DriftedColumnsCount"):
            dataset = {
                "count": metric["value"]["count"],
                "share": metric["value"]["share"],
                "dataset_drift": metric["value"]["share"] >= config["drift_share"],
            }
        elif config["type"].endswith("ValueDrift"):
            score, method, threshold = metric["value"], config["method"], config["threshold"]
            if method == "K-S p_value":
                drifted = score <= threshold
            elif method in P_VALUE_METHODS:
                drifted = score < threshold
            else:
                drifted = score >= threshold
            columns[config["column"]] = {
                "method": method,
                "score": score,
                "threshold": threshold,
                "drifted": bool(drifted),
            }
    result = {
        "read_seconds": read,
        "report_seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "dataset": dataset,
        "columns": columns,
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1, default=float)


if __name__ == "__main__":
    main(*sys.argv[1:4])
