import hashlib
import io
import json
import zipfile
from pathlib import Path

import duckdb
import numpy as np
import pytest
import skops
from sklearn.linear_model import LogisticRegression, Ridge

from mlops_assets.features.engineering import stage_features
from mlops_assets.features.validation import apply_contract, publish
from mlops_assets.security.keyring import Keyring
from mlops_assets.training.registry import Registry
from tests.sample_data.marts import load_synthetic_mart


def home_registry(home: Path) -> Registry:
    """The registry of a new ``$MLOPS_HOME`` (models/ and its keyring where the CLI finds them)."""
    keyring = Keyring.create(home / "keys" / "keyring.json")
    return Registry(home / "models", keyring.path)


def skip_robustness_and_shap(monkeypatch: pytest.MonkeyPatch, columns: list[str]) -> None:
    """Training without what the gate does not read (their own tests measure them): no
    robustness scenarios, and one row of zero contributions over ``columns`` in place of the
    SHAP values of the sample."""
    import pandas as pd

    from mlops_assets.training import trainer
    from mlops_assets.training.explain import Explanation

    zero = pd.DataFrame([[0.0] * len(columns)], columns=columns)
    monkeypatch.setattr(trainer, "robustness", lambda *args, **kwargs: {})
    monkeypatch.setattr(
        trainer,
        "global_explanation",
        lambda *args, **kwargs: Explanation(
            "permutation", "probability", 0.5, np.full(1, 0.5), zero
        ),
    )


def register_tiny(registry: Registry, model: str = "default_classifier", seed: int = 0) -> str:
    """Register a small fitted estimator (with an attachment) as a version of ``model``."""
    x = np.random.default_rng(seed).normal(size=(40, 2))
    classifier = model == "default_classifier"
    estimator = (LogisticRegression() if classifier else Ridge()).fit(x, np.arange(40) % 2)
    card, _ = registry.register(
        model,
        estimator,
        {"candidate": "tiny", "seed": seed},
        {"metrics": {"roc_auc": 0.5}, "training_data_version": "t"},
        attachments={"reference_profile.parquet": lambda path: path.write_bytes(b"profile")},
    )
    return card.version


def _node(cls: str, module: str, loader: str, **extra) -> dict:
    return {"__class__": cls, "__module__": module, "__loader__": loader, **extra}


def _json(value) -> dict:
    kind = "str" if isinstance(value, str) else type(value).__name__
    return _node(kind, "builtins", "JsonNode", content=json.dumps(value), is_json=True)


def skops_call(module: str, function: str, *args) -> bytes:
    """A skops file whose loading calls ``module.function(*args)``: what an attacker writes."""
    tuple_node = _node("tuple", "builtins", "TupleNode", content=[_json(a) for a in args])
    schema = _node(function, module, "ConstructorFromReduceNode", content=tuple_node)
    schema.update(protocol=2, _skops_version=skops.__version__)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))
    return out.getvalue()


def forge(folder: Path, content: bytes, **card) -> dict:
    """Replace a version's artefact as an attacker without the key would: the sha256 in
    model.json recomputed (and any other ``card`` fields changed); returns the new card."""
    (folder / "model.skops").write_bytes(content)
    data = json.loads((folder / "model.json").read_text())
    data.update(sha256=hashlib.sha256(content).hexdigest(), **card)
    (folder / "model.json").write_text(json.dumps(data))
    return data


def feature_warehouse(
    rows: int = 1_500, seed: int = 21, database: str = ":memory:"
) -> duckdb.DuckDBPyConnection:
    """A warehouse (in memory unless ``database`` names a file) with a published feature table."""
    con = duckdb.connect(database)
    load_synthetic_mart(con, rows, seed=seed)
    stage_features(con)
    apply_contract(con)
    publish(con)
    return con


@pytest.fixture(scope="session")
def features_con():
    con = feature_warehouse()
    yield con
    con.close()


@pytest.fixture(scope="module")  # not idle for the rest of the session
def dask_client():
    from distributed import Client

    from mlops_assets.resources import new_local_cluster

    with (
        new_local_cluster(2) as cluster,
        Client(cluster) as client,
    ):
        yield client
