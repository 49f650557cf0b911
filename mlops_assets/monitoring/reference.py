"""The drift reference stored with every model when it is trained: a profile of every row of
its training period (labelled or not: labels arrive sooner for some rows, so the labelled rows
alone are a biased sample of the traffic), of its scores on the rows it was not trained on, and
a small sample of rows for the domain classifier. Monitoring reads these and the current window
only, never the training data; the profile's columns and kinds are the champion's inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlops_assets.drift.profile import Profile, profile_column, profile_frame

PROFILE_FILE = "reference_profile.parquet"
SAMPLE_FILE = "reference_sample.parquet"
SCORE = "score"  # the model's output, compared like a column: prediction drift
SAMPLE_ROWS = 5_000


def kinds_of(spec) -> dict[str, str]:
    """Column kinds of a model's feature signature."""
    return {
        **dict.fromkeys(spec.numeric, "numerical"),
        **dict.fromkeys(spec.categorical, "categorical"),
    }


def reference_profile(features: pd.DataFrame, spec, scores: np.ndarray) -> Profile:
    import pyarrow as pa

    profile = profile_frame(features, kinds_of(spec))
    profile.columns[SCORE] = profile_column(SCORE, "numerical", pa.array(scores))
    return profile


def reference_sample(features: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``SAMPLE_FILE``: a uniform sample of the training period's feature rows (the
    domain classifier's reference, and the background of SHAP explanations)."""
    return features.sample(min(len(features), SAMPLE_ROWS), random_state=0)


def reference_attachments(features: pd.DataFrame, spec, scores: np.ndarray) -> dict:
    """File name -> writer, for ``Registry.register(attachments=...)``."""
    profile = reference_profile(features, spec, scores)
    sample = reference_sample(features)

    def write_sample(path: Path) -> None:
        sample.reset_index(drop=True).to_parquet(path, index=False)

    return {PROFILE_FILE: profile.save, SAMPLE_FILE: write_sample}
