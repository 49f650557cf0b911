"""Fairness of a model version on its holdout, per protected attribute and group, by fairlearn's
definitions.

Classification, at the model's threshold (a score at or above it flags the applicant: declined):
each group's selection rate (the share flagged), true- and false-positive rates, ROC-AUC and row
count; per attribute the demographic-parity ratio and difference and the equalized-odds
difference as fairlearn defines them, and the disparate-impact ratio: the demographic-parity
ratio of the favourable outcome (approved, score below the threshold), held against the
four-fifths rule (``FairnessSpec.min_disparate_impact``) and ``max_equalized_odds_difference``.
Regression: each group's MAE and RMSE, and the ratio of the worst group's RMSE to the best's. No
bound is declared for regression: it is reported and never a violation.

Groups: a value is its own group, a missing value the group ``missing``; a numeric attribute
with more than :data:`NUMERIC_GROUPS` distinct values is banded into quintiles (interval
labels), so an age or an income gives five comparable groups, not one per value. A group of
fewer than :data:`MIN_GROUP_ROWS` rows is reported, but left out of the ratios and differences:
its rates are noise. An attribute that leaves fewer than two groups to compare, or has more than
:data:`MAX_GROUPS` groups (an identifier-like column: not measured at all), is listed in
``not_measured`` with why, and fails the ``fairness`` check: no ratio is not a pass.

Every value, and its interval, is computed at once for the holdout rows and for each bootstrap
resample of them (the same resamples as the holdout metrics, :func:`metrics.bootstrap_weights`):
a group's counts are sums of the rows' weights in the resample (1 for each holdout row), so the
point values are the first row of one weighted computation and the resamples the others.
fairlearn's ``MetricFrame`` cost 0.3 s an attribute on the demo's holdout for the point values
alone (``MetricFrame(n_boot=200)``: 30 s for one attribute of 7,500 rows); this takes 0.2 s for
three, intervals included. tests/training/test_fairness.py proves the values equal fairlearn's
``MetricFrame`` and functions on the same rows, and each resample's fairlearn's on that
resample's rows.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_assets.markdown import md_table, md_text
from mlops_assets.text import printable
from mlops_assets.training.metrics import _ranking_metrics, _ratio, bootstrap_weights
from mlops_assets.training.spec import FairnessSpec

MIN_GROUP_ROWS = 30  # smaller groups are reported, not compared
# More groups than this (after banding): an identifier-like attribute (a postcode, an id): not
# measured but named in ``not_measured`` (3,000 postcodes: 12 s and 700 KB of model.json, and
# every group too small to compare anyway).
MAX_GROUPS = 50
MISSING = "missing"
NUMERIC_GROUPS = 10  # a numeric attribute with more distinct values is banded
BANDS = 5  # quintiles
LEVEL = 0.95
CLASSIFICATION_GROUP_METRICS = (
    "selection_rate", "true_positive_rate", "false_positive_rate", "roc_auc",
)  # fmt: skip
REGRESSION_GROUP_METRICS = ("mae", "rmse")
CLASSIFICATION_SUMMARY = (
    "demographic_parity_ratio", "demographic_parity_difference",
    "equalized_odds_difference", "disparate_impact_ratio",
)  # fmt: skip
REGRESSION_SUMMARY = ("rmse_ratio",)
# What the gate compares: (key, label, +1 when higher is worse, -1 when lower is).
COMPARED = (
    ("disparate_impact_ratio", "disparate-impact ratio", -1),
    ("equalized_odds_difference", "equalized-odds difference", 1),
)
RATES = ("selection_rate", "true_positive_rate", "false_positive_rate")
HEADERS = {
    "selection_rate": "selection rate (flagged)",
    "true_positive_rate": "TPR",
    "false_positive_rate": "FPR",
    "roc_auc": "ROC-AUC",
    "mae": "MAE",
    "rmse": "RMSE",
    "demographic_parity_ratio": "demographic-parity ratio",
    "demographic_parity_difference": "demographic-parity difference",
    "equalized_odds_difference": "equalized-odds difference",
    "disparate_impact_ratio": "disparate-impact ratio (approval)",
    "rmse_ratio": "RMSE worst / best group",
}


def group_labels(values: pd.Series) -> np.ndarray:
    """Each row's group as text: the value, ``missing`` when missing, or the quintile band of a
    numeric attribute with more than :data:`NUMERIC_GROUPS` distinct values."""
    values = pd.Series(values).reset_index(drop=True)
    present = values.notna()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and values.nunique() > NUMERIC_GROUPS:
        labels = values.astype(str)  # an infinite value is its own group ("inf")
        finite = np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
        labels[finite] = pd.qcut(values[finite], BANDS, duplicates="drop").astype(str)
    elif numeric and np.all(np.mod(values[present], 1) == 0):
        labels = values.astype("Int64").astype(str)  # 2, not 2.0
    else:
        labels = values.astype(str)
    return labels.where(present, MISSING).to_numpy(dtype=object)


def measure_fairness(
    y: np.ndarray,
    prediction: np.ndarray,
    groups: pd.DataFrame,
    *,
    threshold: float | None,
    bounds: FairnessSpec,
    rounds: int,
    seed: int,
) -> dict:
    """The fairness of ``prediction`` (scores of a classifier, or a regression's predictions when
    ``threshold`` is None) against the targets ``y``, per column of ``groups`` (rows aligned
    with ``y``), with ``rounds`` bootstrap intervals (0: none) and the ``bounds`` it breaks.
    JSON-ready: numbers are floats, or None where undefined."""
    y = np.asarray(y, dtype=np.float64)
    prediction = np.asarray(prediction, dtype=np.float64)
    weights = bootstrap_weights(len(y), rounds=rounds, seed=seed) if rounds else None
    summaries = REGRESSION_SUMMARY if threshold is None else CLASSIFICATION_SUMMARY
    attributes, violations, not_measured = {}, [], []
    for attribute in groups.columns:
        labels = group_labels(groups[attribute])
        count = len(pd.unique(labels))
        if count > MAX_GROUPS:  # an id-like attribute: no group statistics, say so
            measured = {"groups": {}, "group_count": count, **dict.fromkeys(summaries)}
        elif threshold is None:
            measured = _regression(y, prediction, labels, weights)
        else:
            measured = _classification(y, prediction, labels, threshold, weights)
            violations += _broken(attribute, measured, bounds)
        if threshold is not None:
            ratio, bound = measured["disparate_impact_ratio"], bounds.min_disparate_impact
            measured["four_fifths_rule"] = None if ratio is None else ratio >= bound
        why = _unmeasured(measured, count, summaries[-1])
        if why:
            not_measured.append(f"{attribute}: {why}")
        attributes[str(attribute)] = measured
    return {
        "threshold": threshold,
        "rounds": rounds,
        "attributes": attributes,
        "violations": violations,
        "not_measured": not_measured,
    }


def _unmeasured(measured: dict, count: int, ratio: str) -> str | None:
    """Why an attribute has no ``ratio`` (its disparate-impact or RMSE ratio), or None."""
    if count > MAX_GROUPS:
        return (
            f"{count} groups, more than {MAX_GROUPS}: not measured (an identifier-like "
            "attribute; declare a coarser one, e.g. a band or an area)"
        )
    compared = sum(g["count"] >= MIN_GROUP_ROWS for g in measured["groups"].values())
    if compared < 2:
        return f"fewer than two groups of at least {MIN_GROUP_ROWS} rows: no ratio to compare"
    if measured[ratio] is None:
        return f"{HEADERS[ratio]} undefined (no approval, or no error, in any compared group)"
    return None


def _broken(attribute: str, measured: dict, bounds: FairnessSpec) -> list[str]:
    ratio, odds = measured["disparate_impact_ratio"], measured["equalized_odds_difference"]
    broken = []
    if ratio is not None and ratio < bounds.min_disparate_impact:
        broken.append(
            f"{attribute}: disparate-impact ratio {ratio:.3f} < {bounds.min_disparate_impact:g}"
        )
    if odds is not None and odds > bounds.max_equalized_odds_difference:
        broken.append(
            f"{attribute}: equalized-odds difference {odds:.3f} > "
            f"{bounds.max_equalized_odds_difference:g}"
        )
    return broken


def compare_fairness(challenger: dict, champion: dict | None, bounds: FairnessSpec) -> list[str]:
    """Where ``challenger``'s fairness is worse than ``champion``'s (both from
    :func:`measure_fairness` on the same holdout) by more than ``bounds.tolerance``: a lower
    disparate-impact ratio or a higher equalized-odds difference on an attribute. Empty when it
    is not worse, or there is no champion. Values read from files: anything not a number is not
    compared."""
    if not isinstance(champion, dict) or not isinstance(challenger, dict):
        return []
    theirs_all = champion.get("attributes")
    mine_all = challenger.get("attributes")
    if not isinstance(theirs_all, dict) or not isinstance(mine_all, dict):
        return []
    worse = []
    for attribute, mine in mine_all.items():
        theirs = theirs_all.get(attribute)
        if not isinstance(mine, dict) or not isinstance(theirs, dict):
            continue
        for key, label, sign in COMPARED:
            new, old = _number(mine.get(key)), _number(theirs.get(key))
            if new is not None and old is not None and sign * (new - old) > bounds.tolerance:
                worse.append(f"{attribute}: {label} {new:.3f}, champion's {old:.3f}")
    return worse


def fairness_verdict(fairness: object) -> tuple[bool, list[str]]:
    """The ``fairness`` check's verdict on a version's recorded fairness (``model.json``): passed
    when it was measured, breaks no bound and every attribute could be compared (an attribute
    with fewer than two groups of :data:`MIN_GROUP_ROWS` rows, or too many groups, is not a
    pass); the broken bounds and the attributes not measured, or why there is no verdict."""
    violations = fairness.get("violations") if isinstance(fairness, dict) else None
    if not isinstance(violations, list):
        return False, [
            "fairness not measured for this version (registered before it was measured): "
            "retrain to measure it"
        ]
    not_measured = fairness.get("not_measured")
    problems = violations + (not_measured if isinstance(not_measured, list) else [])
    return not problems, [str(v) for v in problems]


def _number(value) -> float | None:
    """``value`` as a finite float, or None (missing, not a number, NaN or infinite)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if np.isfinite(value) else None


def _classification(
    y: np.ndarray,
    score: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    weights: np.ndarray | None,
) -> dict:
    flagged = (score >= threshold).astype(np.float64)
    groups, counts = _groups(labels)
    compared = groups[counts >= MIN_GROUP_ROWS]
    per_group, summary = _resampled_classification(
        y, score, flagged, labels, groups, compared, _with_point(weights, len(y))
    )
    return _report(groups, counts, CLASSIFICATION_GROUP_METRICS, per_group, summary, weights)


def _regression(
    y: np.ndarray, predicted: np.ndarray, labels: np.ndarray, weights: np.ndarray | None
) -> dict:
    groups, counts = _groups(labels)
    compared = groups[counts >= MIN_GROUP_ROWS]
    per_group, summary = _resampled_regression(
        y, predicted, labels, groups, compared, _with_point(weights, len(y))
    )
    return _report(groups, counts, REGRESSION_GROUP_METRICS, per_group, summary, weights)


def _groups(labels: np.ndarray) -> tuple[pd.Index, np.ndarray]:
    """The groups, sorted (as fairlearn's ``by_group`` lists them), and their row counts."""
    groups, counts = np.unique(labels, return_counts=True)
    return pd.Index(groups, dtype=object), counts


def _with_point(weights: np.ndarray | None, rows: int) -> np.ndarray:
    """The weights of the holdout itself (every row once), then the resamples' (if any)."""
    point = np.ones((1, rows))
    return point if weights is None else np.vstack([point, weights])


def _report(
    groups: pd.Index,
    counts: np.ndarray,
    metrics: tuple[str, ...],
    per_group: dict,
    summary: dict,
    resampled: np.ndarray | None,
) -> dict:
    """The JSON of one attribute: each group's count and metrics, the summary, and each value's
    interval when ``resampled`` (``per_group`` and ``summary``: arrays whose first row is the
    value, the others one per resample)."""
    report = {"groups": {}}
    for position, group in enumerate(groups):
        measured = {"count": int(counts[position])}
        for metric in metrics:
            measured[metric] = _value(per_group[metric][0, position])
            if resampled is not None:
                measured[f"{metric}_ci"] = _interval(per_group[metric][1:, position])
        report["groups"][str(group)] = measured
    for name, values in summary.items():
        report[name] = _value(values[0])
        if resampled is not None:
            report[f"{name}_ci"] = _interval(values[1:])
    return report


def _value(value) -> float | None:
    value = float(value) if value is not None else float("nan")
    return value if np.isfinite(value) else None


def _interval(values: np.ndarray) -> list[float] | None:
    if not np.isfinite(values).any():
        return None
    tail = (1 - LEVEL) / 2 * 100
    return [float(np.nanpercentile(values, tail)), float(np.nanpercentile(values, 100 - tail))]


def _group_sums(weights: np.ndarray, labels: np.ndarray, groups: pd.Index):
    """A function summing ``values`` weighted by each resample per group (one row per resample,
    columns in ``groups``' order), and each group's row positions. One sort per attribute,
    whatever its number of groups (no one-hot matrix of rows by groups)."""
    codes = pd.Categorical(labels, categories=groups).codes
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(groups)))
    sorted_weights = weights[:, order]

    def sums(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(sorted_weights * values[order], starts, axis=1)

    return sums, np.split(order, starts[1:])


def _resampled_classification(
    y: np.ndarray,
    score: np.ndarray,
    flagged: np.ndarray,
    labels: np.ndarray,
    groups: pd.Index,
    compared: pd.Index,
    weights: np.ndarray,
) -> tuple[dict, dict]:
    """Every group metric and summary of every resample (rows of ``weights``): the same
    definitions as fairlearn's (a rate with nothing to count is 0)."""
    sums, members = _group_sums(weights, labels, groups)
    rows, positives = sums(np.ones_like(y)), sums(y)
    selected = sums(flagged.astype(np.float64))
    hits = sums(flagged * y)
    per_group = {
        "selection_rate": _ratio(selected, rows),
        "true_positive_rate": _ratio(hits, positives),
        "false_positive_rate": _ratio(selected - hits, rows - positives),
        "roc_auc": np.column_stack(
            [_ranking_metrics(y[i], score[i], weights[:, i])[0] for i in members]
        ),
    }
    columns = groups.get_indexer(compared)
    summary = _classification_summary(*(per_group[name][:, columns] for name in RATES))
    return per_group, summary


def _resampled_regression(
    y: np.ndarray,
    predicted: np.ndarray,
    labels: np.ndarray,
    groups: pd.Index,
    compared: pd.Index,
    weights: np.ndarray,
) -> tuple[dict, dict]:
    """Every group's MAE and RMSE, and the RMSE ratio, of every resample."""
    sums, _ = _group_sums(weights, labels, groups)
    error = y - predicted
    rows = sums(np.ones_like(y))
    per_group = {
        "mae": _ratio(sums(np.abs(error)), rows),
        "rmse": np.sqrt(_ratio(sums(error**2), rows)),
    }
    ratio = _worst_over_best(per_group["rmse"][:, groups.get_indexer(compared)])
    return per_group, {"rmse_ratio": ratio}


def _classification_summary(
    rate: np.ndarray, tpr: np.ndarray, fpr: np.ndarray
) -> dict[str, np.ndarray]:
    """The attribute's summary from its compared groups' selection, true- and false-positive
    rates (columns; one row per resample, or one row of point values): fairlearn's
    between-groups definitions of the demographic-parity ratio and difference and the
    (worst-case) equalized-odds difference, and the disparate-impact ratio, the demographic-parity
    ratio of approval (1 - selection rate). NaN with fewer than two groups. From the groups'
    values rather than fairlearn's functions, each of which builds its own MetricFrame over every
    row again (0.06-0.17 s each an attribute); tests/training/test_fairness.py proves them
    equal."""
    if rate.shape[1] < 2:
        return dict.fromkeys(CLASSIFICATION_SUMMARY, np.full(len(rate), np.nan))
    return {
        "demographic_parity_ratio": _lowest_over_highest(rate),
        "demographic_parity_difference": np.ptp(rate, axis=1),
        "equalized_odds_difference": np.maximum(np.ptp(tpr, axis=1), np.ptp(fpr, axis=1)),
        "disparate_impact_ratio": _lowest_over_highest(1 - rate),
    }


def _lowest_over_highest(values: np.ndarray) -> np.ndarray:
    """Per row, the smallest value over the largest (NaN where the largest is 0, as fairlearn)."""
    low, high = np.min(values, axis=1), np.max(values, axis=1)
    return np.divide(low, high, out=np.full_like(high, np.nan), where=high > 0)


def _worst_over_best(rmse: np.ndarray) -> np.ndarray:
    """Per row, the largest error over the smallest (NaN where the smallest is 0, or with fewer
    than two groups)."""
    if rmse.shape[1] < 2:
        return np.full(len(rmse), np.nan)
    low, high = np.min(rmse, axis=1), np.max(rmse, axis=1)
    return np.divide(high, low, out=np.full_like(high, np.nan), where=low > 0)


SHOWN_LABEL = 60  # characters of a group value shown in a table or plot
PLOTTED_GROUPS = 20  # the largest groups of an attribute in its plot


def _shown(group: str) -> str:
    """A group value as shown: control characters as escapes, at most :data:`SHOWN_LABEL`
    characters (the full value is in model.json)."""
    text = printable(group)
    return text if len(text) <= SHOWN_LABEL else text[: SHOWN_LABEL - 1] + "…"


def _cell(measured: dict, name: str) -> str:
    """A value with its 95 % interval when there is one, ``-`` when undefined."""
    value, interval = measured.get(name), measured.get(f"{name}_ci")
    if value is None:
        return "-"
    return f"{value:.3f}" + (" [{:.3f}, {:.3f}]".format(*interval) if interval else "")


def fairness_table(fairness: dict) -> str:
    """A version's fairness as markdown: each attribute's groups (rows and metrics, with 95 %
    intervals), then each attribute's summary and the bounds broken. Every cell is text: a
    group value never becomes markup."""
    regression = fairness["threshold"] is None
    metrics = REGRESSION_GROUP_METRICS if regression else CLASSIFICATION_GROUP_METRICS
    summaries = REGRESSION_SUMMARY if regression else CLASSIFICATION_SUMMARY
    group_rows, summary_rows = [], []
    for attribute, measured in fairness["attributes"].items():
        for group, values in measured["groups"].items():
            rows = values["count"]
            shown_rows = f"{rows}" if rows >= MIN_GROUP_ROWS else f"{rows} (too few to compare)"
            group_rows.append(
                (attribute, _shown(group), shown_rows, *(_cell(values, m) for m in metrics))
            )
        four_fifths = () if regression else (measured["four_fifths_rule"],)
        summary_rows.append((attribute, *(_cell(measured, s) for s in summaries), *four_fifths))
    four_fifths_header = () if regression else ("four-fifths rule",)
    return "\n\n".join(
        [
            md_table(("attribute", "group", "rows", *(HEADERS[m] for m in metrics)), group_rows),
            md_table(
                ("attribute", *(HEADERS[s] for s in summaries), *four_fifths_header), summary_rows
            ),
            "Bounds broken: " + ("; ".join(map(md_text, fairness["violations"])) or "none"),
            *(
                ["Not measured: " + "; ".join(map(md_text, fairness["not_measured"]))]
                if fairness.get("not_measured")
                else []
            ),
        ]
    )


def plot_fairness(fairness: dict, out: Path) -> list[Path]:
    """One bar chart per attribute in ``out`` (``fairness_<attribute>.png``): each group's
    selection rate, true- and false-positive rates (regression: RMSE) with 95 % intervals; the
    :data:`PLOTTED_GROUPS` largest groups."""
    from mlops_assets.training.diagnostics import _figure, _save

    metrics = ("rmse",) if fairness["threshold"] is None else RATES
    paths: list[Path] = []
    for attribute, measured in fairness["attributes"].items():
        if not measured["groups"]:  # not measured (too many groups)
            continue
        groups = sorted(measured["groups"].items(), key=lambda g: -g[1]["count"])
        groups = groups[:PLOTTED_GROUPS]
        plt, fig, ax = _figure()
        width = 0.8 / len(metrics)
        positions = np.arange(len(groups))
        for offset, metric in enumerate(metrics):
            values = np.array([g[metric] if g[metric] is not None else np.nan for _, g in groups])
            intervals = np.array(
                [g.get(f"{metric}_ci") or (np.nan, np.nan) for _, g in groups], dtype=np.float64
            )
            ax.bar(
                positions + offset * width,
                values,
                width,
                yerr=np.nan_to_num(np.abs(intervals.T - values)),
                label=HEADERS[metric],
            )
        # A "$" would start matplotlib's math text: shown as itself.
        ax.set_xticks(
            positions + width * (len(metrics) - 1) / 2,
            [_shown(name).replace("$", r"\$") for name, _ in groups],
            rotation=30,
            ha="right",
            fontsize=7,
        )
        ax.set_title(_shown(str(attribute)).replace("$", r"\$"), fontsize=9)
        if len(metrics) > 1:  # rates: room above the bars for the legend
            ax.set_ylim(0, 1.2)
            ax.legend(fontsize=7, ncol=len(metrics), loc="upper center")
        else:
            ax.set_ylabel("RMSE", fontsize=8)
        slug = re.sub(r"[^A-Za-z0-9]+", "_", str(attribute))[:40]
        name = f"fairness_{slug}"
        if out / f"{name}.png" in paths:
            name = f"{name}_{len(paths)}"
        paths.append(_save(plt, fig, out / f"{name}.png"))
    return paths
