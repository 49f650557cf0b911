"""The column tests' names by the column kinds they take, for the command line's help without
loading the registry (it imports numpy and scipy, and `mlops --help` must start at once).
``tests/monitoring/test_evidently_options.py`` proves these are exactly the registry's."""

NUMERICAL = (
    "anderson", "cramer_von_mises", "ed", "empirical_mmd", "es", "hellinger", "jensenshannon",
    "kl_div", "ks", "mannw", "psi", "t_test", "wasserstein",
)  # fmt: skip
CATEGORICAL = (
    "chisquare", "fisher_exact", "g_test", "hellinger", "jensenshannon", "kl_div", "psi", "TVD",
    "z",
)  # fmt: skip
TEXT = ("abs_text_content_drift", "perc_text_content_drift")
ALL = tuple(sorted({*NUMERICAL, *CATEGORICAL, *TEXT}, key=str.lower))
