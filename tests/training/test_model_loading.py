"""The registry's skops type list is exactly what the platform's own models hold."""

import skops.io as sio

from mlops_assets import catalogue
from mlops_assets.training.candidates import CATALOGUE, STACKING, build_pipeline, build_stacking
from mlops_assets.training.dataset import load_training_data
from mlops_assets.training.registry import TRUSTED_TYPES, load_artefact
from mlops_assets.training.spec import CLASSIFICATION, REGRESSION


def test_trusted_types_are_exactly_those_of_every_candidate_and_the_stacking(
    features_con, tmp_path
):
    """Every candidate of the catalogue for each task it serves (and the stacking ensemble of
    all classifiers) fitted, saved and reloaded through the registry's loader: a candidate that
    needs a new type fails here, and a type no candidate needs any more is not left trusted."""
    reported = set()
    for task, model in (
        (CLASSIFICATION, "default_classifier"),
        (REGRESSION, "loss_regressor"),
    ):
        data = load_training_data(features_con, catalogue.model(model), max_rows=400)
        classifier = task == CLASSIFICATION
        candidates = [c for c in CATALOGUE.values() if task in c.tasks and c.name != STACKING]
        fitted = {
            c.name: build_pipeline(
                c.name, c.param_sets()[0], data.spec, seed=0, classifier=classifier
            ).fit(data.x_train, data.y_train)
            for c in candidates
        }
        if classifier:
            best = {c.name: c.param_sets()[0] for c in candidates}
            fitted[STACKING] = build_stacking(best, data.spec, seed=0, folds=2).fit(
                data.x_train, data.y_train
            )
        for name, estimator in fitted.items():
            path = tmp_path / f"{task}-{name}.skops"
            sio.dump(estimator, path)
            reported |= set(sio.get_untrusted_types(file=path))
            loaded = load_artefact(path)
            assert type(loaded) is type(estimator), name
    assert reported == set(TRUSTED_TYPES)
    assert not any(t.startswith("builtins.") for t in TRUSTED_TYPES)
