"""The registry's skops type list is exactly what the platform's own models hold."""

import skops.io as sio

from mlops_assets.training.candidates import (
    CLASSIFIER_CANDIDATES,
    REGRESSOR_CANDIDATES,
    build_pipeline,
    build_stacking,
)
from mlops_assets.training.dataset import load_training_data
from mlops_assets.training.registry import TRUSTED_TYPES, load_artefact


def test_trusted_types_are_exactly_those_of_every_candidate_and_the_stacking(
    features_con, tmp_path
):
    """Every candidate (and the stacking ensemble of all classifiers) fitted, saved and
    reloaded through the registry's loader: a candidate that needs a new type fails here, and a
    type no candidate needs any more is not left trusted."""
    reported = set()
    for model, candidates in (
        ("default_classifier", CLASSIFIER_CANDIDATES),
        ("loss_regressor", REGRESSOR_CANDIDATES),
    ):
        data = load_training_data(features_con, model, max_rows=400)
        fitted = {
            c.name: build_pipeline(c.name, c.param_sets()[0], data.spec, seed=0).fit(
                data.x_train, data.y_train
            )
            for c in candidates
        }
        if model == "default_classifier":
            best = {c.name: c.param_sets()[0] for c in candidates}
            fitted["stacking"] = build_stacking(best, data.spec, seed=0, folds=2).fit(
                data.x_train, data.y_train
            )
        for name, estimator in fitted.items():
            path = tmp_path / f"{model}-{name}.skops"
            sio.dump(estimator, path)
            reported |= set(sio.get_untrusted_types(file=path))
            loaded = load_artefact(path)
            assert type(loaded) is type(estimator), name
    assert reported == set(TRUSTED_TYPES)
    assert not any(t.startswith("builtins.") for t in TRUSTED_TYPES)
