"""Benchmark training: the cross-validated search on Dask with 1 and 2 workers, and a full
`train_model` (search, refit, holdout metrics with bootstrap intervals, registry).

    python benchmarks/bench_training.py --rows 100000            # with the 1- vs 2-worker search
    python benchmarks/bench_training.py --rows 1000000 --no-speedup

Rows are synthetic mart rows (tests/sample_data/marts.py) turned into features by the real
feature layer; about half are labelled by the end of the period. Every worker is single-
threaded and whole fits are Dask tasks with the data scattered once; the 1- and 2-worker
searches must give identical scores.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

# The repository root: the mart generator is test data (tests/), not part of the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_assets import catalogue
from mlops_assets.features.engineering import stage_features
from mlops_assets.features.validation import apply_contract, publish
from mlops_assets.training.dataset import load_training_data
from mlops_assets.training.registry import Registry
from mlops_assets.training.search import search
from mlops_assets.training.trainer import TrainingConfig, train_model
from mlops_assets.warehouse import connection
from tests.sample_data.marts import load_synthetic_mart


def main() -> None:
    from distributed import Client

    from mlops_assets.resources import new_local_cluster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument(
        "--speedup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the search on 1 and 2 workers (the speed-up)",
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
        with connection(Path(tmp) / "bench.duckdb", create=True) as con:
            load_synthetic_mart(con, args.rows)
            stage_features(con)
            apply_contract(con)
            publish(con)
            data = load_training_data(con, catalogue.model("default_classifier"))
        print(
            f"applications: {args.rows:,}; labelled: {data.rows:,} "
            f"(train {len(data.y_train):,}, holdout {len(data.y_holdout):,})"
        )
        timings, scores = {}, {}
        for workers in (1, 2) if args.speedup else (2,):
            with (
                new_local_cluster(workers) as cluster,  # as the platform's own
                Client(cluster) as client,
            ):
                started = time.perf_counter()
                result = search(
                    data, cv="stratified_kfold", folds=args.folds, seed=42, client=client
                )
                timings[workers] = time.perf_counter() - started
                scores[workers] = [(t.candidate, str(t.params), t.cv_score) for t in result.trials]
                if workers == 2:
                    started = time.perf_counter()
                    outcome = train_model(
                        data,
                        Registry(Path(tmp) / "models"),
                        TrainingConfig(folds=args.folds),
                        client=client,
                    )
                    full = time.perf_counter() - started
        if args.speedup:
            assert scores[1] == scores[2], "1 and 2 workers must give identical scores"
    fits = (len(result.trials) - 1) * args.folds  # the stacking trial refits no base model
    print("| what | seconds |\n|---|---:|")
    for workers, seconds in timings.items():
        print(f"| search, {fits} fits, {workers} worker(s) | {seconds:.1f} |")
    if args.speedup:
        print(f"| speed-up | {timings[1] / timings[2]:.2f}x |")
    print(
        f"| full train_model, 2 workers (winner: {outcome.card.data['candidate']}, "
        f"holdout roc_auc {outcome.holdout_metrics['roc_auc']:.4f}) | {full:.1f} |"
    )
    for step, seconds in outcome.seconds.items():
        print(f"| of which {step} | {seconds:.1f} |")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (not counting the Dask workers): {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
