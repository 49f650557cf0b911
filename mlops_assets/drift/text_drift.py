"""Text-column drift as Evidently 0.7 computes it: ``abs_text_content_drift`` and
``perc_text_content_drift`` (``evidently.legacy.utils.data_drift_utils``,
``calculate_text_drift_score``).

A domain classifier learns to tell reference texts (target 0) from current texts (target 1):
TF-IDF (``sublinear_tf``, ``max_df=0.5``, English stop words) and a linear SGD classifier,
trained on a random half of the rows and scored by its ROC AUC on the other half. Both tests
report that AUC. ``abs_text_content_drift`` calls it drift when the AUC is above the threshold
(0.55); ``perc_text_content_drift`` when it is above the threshold-th percentile (95th) of the
AUCs of 1000 random classifiers on the same test half (:func:`random_classifier_limit`).

Memory grows with the texts: the TF-IDF matrices are sparse, O(tokens) of the texts, plus the
vocabulary of the training half. The percentile scores 1000 random vectors of the test half's
size, a block of them at a time (about 50 MB), in O(1000 n log n) for n test rows.

Where Evidently raises or cannot score (the vocabulary is empty once stop words and words in
more than half of the texts are removed, or a half of the split holds texts of only one side),
the column is reported with no score and no drift, and a note says why; ``--strict-evidently``
raises as Evidently does (its score is NaN where Evidently's is).
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np

from mlops_assets.drift.profile import DriftInputError, Undefined
from mlops_assets.drift.stattests import Pair

RANDOM_CLASSIFIERS = 1000
RANDOM_SEED = 42
BLOCK = 1 << 21  # random draws scored at once: 16 MB of float64, about 50 MB with their sort


@functools.lru_cache(maxsize=4)
def _split(n_reference: int, n_current: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evidently's split of the reference rows (target 0) followed by the current rows
    (target 1): ``train_test_split(test_size=0.5, random_state=42, shuffle=True)``. It depends
    only on the sizes. Returns the targets, the training rows and the test rows."""
    from sklearn.model_selection import train_test_split

    target = np.repeat(np.array([0, 1], dtype=np.int64), [n_reference, n_current])
    train, test = train_test_split(
        np.arange(len(target)), test_size=0.5, random_state=RANDOM_SEED, shuffle=True
    )
    return target, train, test


def _cannot(pair: Pair, reason: str, evidently: str) -> Undefined:
    """No score for this column: ``Undefined`` with our note, or in strict mode the error
    Evidently raises (sklearn's message, which quotes no text)."""
    if pair.strict:
        raise DriftInputError(f"text drift of column {pair.name!r}: {evidently}")
    return Undefined(f"not compared: {reason}")


def domain_classifier_auc(pair: Pair) -> float:
    """The ROC AUC of Evidently's domain classifier, the score of both text tests."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import roc_auc_score

    reference, current = pair.reference.texts, pair.current.texts
    target, train, test = _split(len(reference), len(current))
    texts = np.concatenate([reference, current])
    vectorizer = TfidfVectorizer(sublinear_tf=True, max_df=0.5, stop_words="english")
    try:
        features = vectorizer.fit_transform(texts[train])
    except ValueError as error:  # sklearn's "empty vocabulary" / "After pruning, no terms remain"
        raise _cannot(
            pair,
            "no words to learn from: every word of the training half is an English stop word, "
            "shorter than 2 characters, or in more than half of its texts",
            str(error),
        ) from None
    if len(np.unique(target[train])) < 2:
        raise _cannot(
            pair,
            "too few texts: the training half holds texts of one side only",
            "The number of classes has to be greater than one; got 1 class",
        )
    classifier = SGDClassifier(
        alpha=0.0001, max_iter=50, penalty="l1", loss="modified_huber", random_state=RANDOM_SEED
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter=50, as in Evidently
        classifier.fit(features, target[train])
    proba = classifier.predict_proba(vectorizer.transform(texts[test]))[:, 1]
    if len(np.unique(target[test])) < 2:
        if pair.strict:
            return math.nan  # sklearn's AUC of one class, so Evidently's score
        raise Undefined("not compared: the test half holds texts of one side only")
    return float(roc_auc_score(target[test], proba))


def roc_auc_random_classifier_percentile(
    y_test, p_value: float = 0.05, iter_num: int = RANDOM_CLASSIFIERS, seed: int = RANDOM_SEED
) -> float:
    """Evidently's ``roc_auc_random_classifier_percentile``, with the same numbers: the
    (1 - p_value)-th percentile of the ROC AUCs of ``iter_num`` random classifiers, the k-th
    scoring with ``RandomState(seeds[k]).rand(n)`` where ``seeds =
    RandomState(seed).randint(0, 10 * iter_num, iter_num)``. Each AUC is computed from ranks
    (Mann-Whitney, ties averaged: what ``roc_auc_score`` computes), a block of draws at a
    time, instead of 1000 ``roc_auc_score`` calls."""
    positive = np.asarray(y_test) == 1
    n = len(positive)
    n1 = int(positive.sum())
    n0 = n - n1
    if not 0 <= 1 - p_value <= 1:
        raise DriftInputError(
            f"perc_text_content_drift takes a threshold between 0 and 1 (the percentile of "
            f"random classifiers' ROC AUCs, as a fraction), got {1 - p_value:g}"
        )
    if n0 == 0 or n1 == 0:
        return math.nan  # the AUC is undefined, as in sklearn
    seeds = np.random.RandomState(seed).randint(0, iter_num * 10, size=iter_num)
    aucs = np.empty(iter_num)
    step = max(1, BLOCK // n)
    for start in range(0, iter_num, step):
        block = seeds[start : start + step]
        draws = np.stack([np.random.RandomState(s).rand(n) for s in block])
        aucs[start : start + len(block)] = (
            _positive_rank_sums(draws, positive) - n1 * (n1 + 1) / 2
        ) / (n0 * n1)
    return float(np.percentile(aucs, 100 * (1 - p_value)))


def _positive_rank_sums(draws: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Per row of ``draws``, the sum of the ranks (from 1) of the ``positive`` columns: one
    sort per row; scipy's average ranks when a row has ties (53-bit draws almost never do)."""
    order = np.argsort(draws, axis=1)
    if (np.diff(np.take_along_axis(draws, order, axis=1), axis=1) == 0).any():
        from scipy.stats import rankdata

        return rankdata(draws, axis=1)[:, positive].sum(axis=1)
    return positive[order] @ np.arange(1, draws.shape[1] + 1, dtype=np.float64)


@functools.lru_cache(maxsize=64)
def _random_percentile(n_reference: int, n_current: int, threshold: float) -> float:
    target, _, test = _split(n_reference, n_current)
    return roc_auc_random_classifier_percentile(target[test], p_value=1 - threshold)


def random_classifier_limit(pair: Pair, threshold: float) -> tuple[float, str]:
    """perc_text_content_drift's bound: the AUC drifts when above the ``threshold``-th
    percentile of random classifiers' AUCs on the same test half (it depends only on the two
    sides' sizes, so it is cached), and the note that shows it."""
    limit = _random_percentile(len(pair.reference.texts), len(pair.current.texts), threshold)
    return limit, (
        f"drift when ROC AUC > {limit:.4f}: the {100 * threshold:g}th percentile of "
        f"{RANDOM_CLASSIFIERS} random classifiers' ROC AUCs on the same test half"
    )
