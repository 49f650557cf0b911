"""The model registry as a trust boundary: sealed versions, exact skops types, confined paths.

A registry file is untrusted: whoever can write ``$MLOPS_HOME/models`` can rewrite a model file
and recompute the sha256 in ``model.json`` beside it. The seal (HMAC under the keyring's model
signing key) makes that detectable; the exact type list makes a file that calls a function
(``builtins.exec``, ``numpy.load(..., allow_pickle=True)``) fail before it runs, even one sealed
by someone who holds the key."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mlops_assets.security.keyring import Keyring
from mlops_assets.training.registry import Registry, RegistryError, load_artefact
from tests.training.conftest import forge, home_registry, register_tiny, skops_call

MODEL = "default_classifier"


class _Touch:
    """Unpickling it creates ``path``: the payload of the ``numpy.load`` attack."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({str(self.path)!r}, 'w').close()",))


def _folder(registry: Registry, version: str, model: str = MODEL) -> Path:
    return registry.root / model / version


def _rewrite(registry: Registry, version: str, content: bytes, *, reseal: bool = False, **card):
    """:func:`forge` by an attacker who, with ``reseal``, also holds the signing key."""
    folder = _folder(registry, version)
    data = forge(folder, content, **card)
    if reseal:
        data["seal"] = registry._seal(MODEL, version, data)
        (folder / "model.json").write_text(json.dumps(data))


@pytest.fixture
def registry(tmp_path) -> Registry:
    return home_registry(tmp_path)


def test_a_model_rewritten_with_its_sha256_recomputed_is_refused(registry, tmp_path):
    version = register_tiny(registry)
    assert registry.load(MODEL, version).predict(np.zeros((1, 2))).shape == (1,)
    other = tmp_path / "other.skops"
    import skops.io as sio

    sio.dump(LogisticRegression().fit(np.eye(2), [0, 1]), other)
    _rewrite(registry, version, other.read_bytes())
    with pytest.raises(RegistryError, match=r"model\.json does not match its seal"):
        registry.load(MODEL, version)
    with pytest.raises(RegistryError, match="does not match its seal"):
        registry.promote(MODEL, version, reason="forged")


def test_a_version_copied_over_another_or_to_another_model_is_refused(registry):
    first, second = register_tiny(registry, seed=0), register_tiny(registry, seed=1)
    source, target = _folder(registry, first), _folder(registry, second)
    for name in ("model.json", "model.skops"):
        (target / name).write_bytes((source / name).read_bytes())
    with pytest.raises(RegistryError, match="copied from another model or version"):
        registry.load(MODEL, second)
    regressor = _folder(registry, first, "loss_regressor")
    regressor.mkdir(parents=True)
    for name in ("model.json", "model.skops"):
        (regressor / name).write_bytes((source / name).read_bytes())
    with pytest.raises(RegistryError, match="does not match its seal"):
        registry.load("loss_regressor", first)


def test_an_unsealed_version_and_another_keyring_are_refused(registry, tmp_path):
    version = register_tiny(registry)
    path = _folder(registry, version) / "model.json"
    sealed = json.loads(path.read_text())
    other = Registry(registry.root, Keyring.create(tmp_path / "other-keyring.json").path)
    with pytest.raises(RegistryError, match="another keyring"):
        other.load(MODEL, version)
    path.write_text(json.dumps({k: v for k, v in sealed.items() if k != "seal"}))
    with pytest.raises(RegistryError, match=f"{path} is not sealed") as refused:
        registry.load(MODEL, version)
    assert "models seal" not in str(refused.value)


def _dummy_skops(tmp_path: Path) -> bytes:
    """A model of trusted types only that predicts one class: what an attacker substitutes."""
    import skops.io as sio
    from sklearn.dummy import DummyClassifier

    path = tmp_path / "dummy.skops"
    sio.dump(DummyClassifier(strategy="constant", constant=0).fit(np.eye(2), [0, 1]), path)
    return path.read_bytes()


def _unseal(registry: Registry, version: str) -> Path:
    path = _folder(registry, version) / "model.json"
    card = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in card.items() if k != "seal"}))
    return path


@pytest.mark.parametrize("damage", ["unsealed", "forged and unsealed", "seal broken", "file"])
def test_a_version_that_does_not_verify_is_refused_and_replaced_by_the_next_registration(
    registry, tmp_path, damage
):
    # An attacker who can write the registry swaps in a model of trusted types, recomputes its
    # sha256, fakes its metrics and deletes the seal; or a home from before sealing.
    version = register_tiny(registry)
    folder = _folder(registry, version)
    if damage == "forged and unsealed":
        forge(folder, _dummy_skops(tmp_path), metrics={"roc_auc": 0.99})
    if damage in ("unsealed", "forged and unsealed"):
        _unseal(registry, version)
    elif damage == "seal broken":
        forge(folder, _dummy_skops(tmp_path), metrics={"roc_auc": 0.99})
    else:
        (folder / "reference_profile.parquet").write_bytes(b"swapped")
    refused = json.loads((folder / "model.json").read_text())
    with pytest.raises(RegistryError) as error:
        registry.load(MODEL, version)
    message = str(error.value)
    assert "refusing to load it" in message and "next training (`mlops run`) replaces" in message
    assert "seal it" not in message and "models seal" not in message
    assert not registry.verifies(MODEL, version)
    with pytest.raises(RegistryError):
        registry.promote(MODEL, version, reason="it says 0.99")
    assert register_tiny(registry) == version  # the same definition, trained again
    assert registry.verifies(MODEL, version)
    genuine = registry.load(MODEL, version)
    assert type(genuine).__name__ == "LogisticRegression"
    assert registry.card(MODEL, version).metrics == {"roc_auc": 0.5}
    assert registry.attachment(MODEL, version, "reference_profile.parquet").read_bytes() == (
        b"profile"
    )
    # The refused folder is kept aside for whoever investigates, where nothing loads it.
    [aside] = (registry.root / MODEL / "refused").iterdir()
    assert aside.name.startswith(f"{version}-")
    assert json.loads((aside / "model.json").read_text()) == refused
    assert [c.version for c in registry.versions(MODEL)] == [version]
    assert not [p for p in (registry.root / MODEL).iterdir() if p.name.startswith(".")]


def test_a_version_that_verifies_is_kept_by_the_next_registration(registry):
    version = register_tiny(registry)
    card = (_folder(registry, version) / "model.json").read_bytes()
    assert register_tiny(registry) == version
    assert (_folder(registry, version) / "model.json").read_bytes() == card
    assert not (registry.root / MODEL / "refused").exists()


def test_a_failed_registration_leaves_the_refused_version_and_no_staging_folder(registry):
    version = register_tiny(registry)
    path = _unseal(registry, version)
    unsealed = path.read_text()

    def fails(target: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        registry.register(
            MODEL,
            LogisticRegression().fit(np.eye(2), [0, 1]),
            {"candidate": "tiny", "seed": 0},
            {"metrics": {"roc_auc": 0.5}},
            attachments={"reference_profile.parquet": fails},
        )
    assert path.read_text() == unsealed
    assert sorted(p.name for p in (registry.root / MODEL).iterdir()) == [version]


def test_the_shadow_is_the_newest_version_that_verifies(registry):
    from mlops_assets.training.scoring import challenger_version

    older, champion, newest = (register_tiny(registry, seed=s) for s in (0, 1, 2))
    registry.promote(MODEL, champion, reason="r")
    assert challenger_version(registry, MODEL) == newest
    _unseal(registry, newest)  # e.g. a home upgraded from before sealing
    assert challenger_version(registry, MODEL) == older
    _unseal(registry, older)
    assert challenger_version(registry, MODEL) is None


def test_a_registry_without_its_keyring_refuses_instead_of_trusting(tmp_path):
    registry = Registry(tmp_path / "models", tmp_path / "missing-keyring.json")
    with pytest.raises(RegistryError, match="cannot sign or verify models: no keyring"):
        register_tiny(registry)
    assert not (tmp_path / "models" / MODEL).exists()


def test_keyrings_written_before_signing_keys_still_load_and_sign_stably(tmp_path):
    keyring = Keyring.create(tmp_path / "keyring.json")
    assert keyring.signing_key is not None and len(keyring.model_signing_key) == 32
    before = keyring.model_signing_key
    keyring.add_version()  # rotating the vault's keys leaves the signing key alone
    keyring.save()
    assert Keyring.load(keyring.path).model_signing_key == before
    document = json.loads(keyring.path.read_text())
    del document["model_signing_key"]  # the format before it existed
    keyring.path.write_text(json.dumps(document))
    old = Keyring.load(keyring.path)
    derived = old.model_signing_key
    assert len(derived) == 32 and derived not in (old.pseudonym_key, before)
    assert Keyring.load(keyring.path).model_signing_key == derived  # every process agrees
    old.save()
    assert "model_signing_key" not in json.loads(keyring.path.read_text())  # nothing invented


@pytest.mark.parametrize("attack", ["exec", "numpy.load"])
def test_a_model_file_that_calls_a_function_is_refused_without_running_it(
    registry, tmp_path, attack
):
    """Even sealed with the right key (an insider, a stolen key), the payload never runs."""
    marker = tmp_path / "payload-ran"
    if attack == "exec":
        artefact = skops_call("builtins", "exec", f"open({str(marker)!r}, 'w').close()")
    else:
        pickled = tmp_path / "payload.pkl"
        pickled.write_bytes(pickle.dumps(_Touch(marker)))
        artefact = skops_call("numpy", "load", str(pickled), None, True)
    version = register_tiny(registry)
    _rewrite(registry, version, artefact, reseal=True)
    function = "builtins.exec" if attack == "exec" else "numpy.load"
    with pytest.raises(RegistryError, match=rf"model\.skops names types .*{function}"):
        registry.load(MODEL, version)
    assert not marker.exists()
    with pytest.raises(RegistryError, match="never writes"):
        load_artefact(_folder(registry, version) / "model.skops")
    assert not marker.exists()


def test_a_file_that_is_not_a_model_file_is_refused_clearly(tmp_path):
    path = tmp_path / "model.skops"
    path.write_bytes(b"not a zip")
    with pytest.raises(RegistryError, match=f"{path} is not a readable model file"):
        load_artefact(path)


@pytest.mark.parametrize("artefact", ["../../../x", "/etc/passwd", "..", "sub/model.skops"])
def test_the_artefact_stays_inside_its_version_folder(registry, tmp_path, artefact):
    version = register_tiny(registry)
    outside = tmp_path / "x"
    outside.write_bytes((_folder(registry, version) / "model.skops").read_bytes())
    _rewrite(registry, version, outside.read_bytes(), reseal=True, artefact=artefact)
    with pytest.raises(RegistryError, match="not a file name inside the version folder"):
        registry.load(MODEL, version)


def test_links_out_of_the_version_folder_are_refused(registry, tmp_path):
    version = register_tiny(registry)
    folder = _folder(registry, version)
    for name in ("model.skops", "reference_profile.parquet"):
        target = tmp_path / name
        target.write_bytes((folder / name).read_bytes())
        (folder / name).unlink()
        (folder / name).symlink_to(target)
    with pytest.raises(RegistryError, match="leads outside its version folder"):
        registry.load(MODEL, version)
    with pytest.raises(RegistryError, match="leads outside its version folder"):
        registry.attachment(MODEL, version, "reference_profile.parquet")


def test_attachments_are_verified_and_confined(registry):
    version = register_tiny(registry)
    path = registry.attachment(MODEL, version, "reference_profile.parquet")
    assert path.read_bytes() == b"profile"
    with pytest.raises(RegistryError, match="not a file name inside the version folder"):
        registry.attachment(MODEL, version, "../../../keys/keyring.json")
    card = json.loads((_folder(registry, version) / "model.json").read_text())
    card["attachments"]["../../../keys/keyring.json"] = "0" * 64
    (_folder(registry, version) / "model.json").write_text(json.dumps(card))
    with pytest.raises(RegistryError, match="does not match its seal"):
        registry.attachment(MODEL, version, "reference_profile.parquet")


@pytest.mark.parametrize(
    ("model", "version"),
    [
        ("default_classifier", "../loss_regressor/0123456789abcdef"),
        ("default_classifier", "0123456789abcdef\n"),
        ("default_classifier", "0123456789ABCDEF"),
        ("default_classifier", ""),
        ("../models", "0123456789abcdef"),
        ("default_classifier/..", "0123456789abcdef"),
        ("Default_Classifier", "0123456789abcdef"),
    ],
)
def test_model_names_and_versions_are_checked_before_they_become_paths(registry, model, version):
    with pytest.raises(RegistryError, match=r"is not a (model name|version of)"):
        registry.card(model, version)
    with pytest.raises(RegistryError, match=r"is not a (model name|version of)"):
        registry.promote(model, version, reason="careless")


def test_a_champion_file_pointing_elsewhere_is_refused(registry):
    version = register_tiny(registry)
    registry.promote(MODEL, version, reason="first")
    assert registry.champion(MODEL) == version
    (registry.root / MODEL / "champion.json").write_text(
        json.dumps({"version": f"../loss_regressor/{version}"})
    )
    with pytest.raises(RegistryError, match="is not a version of default_classifier"):
        registry.champion(MODEL)
    (registry.root / MODEL / "champion.json").write_text("[]")
    with pytest.raises(RegistryError, match=r"champion\.json is not a valid champion file"):
        registry.champion(MODEL)


def test_promote_takes_only_a_version_of_that_model(registry):
    version = register_tiny(registry, "loss_regressor")
    with pytest.raises(RegistryError, match="is not a version of default_classifier"):
        registry.promote(MODEL, f"../loss_regressor/{version}", reason="careless")
    with pytest.raises(RegistryError, match=f"default_classifier has no version {version}"):
        registry.promote(MODEL, version, reason="careless")
    assert registry.champion(MODEL) is None and registry.history(MODEL) == []


def test_a_malformed_model_json_is_refused_naming_the_file(registry):
    version = register_tiny(registry)
    path = _folder(registry, version) / "model.json"
    for text in ("{", "[]", '{"version": 1}', "\udcff"):
        path.write_text(text, errors="surrogateescape")
        with pytest.raises(RegistryError, match=f"{path} is not a valid model.json"):
            registry.load(MODEL, version)
        assert registry.versions(MODEL) == []  # left out: never loaded, never fatal


def test_a_model_file_swapped_after_its_check_is_not_loaded(registry, tmp_path, monkeypatch):
    # The check and the load read the same bytes: a file swapped between them (inotify makes
    # that timing easy) is refused, never loaded unchecked.
    version = register_tiny(registry)
    import skops.io as sio

    other = tmp_path / "other.skops"
    sio.dump(LogisticRegression().fit(np.eye(2), [1, 0]), other)
    verify = Registry.verify

    def verify_then_swap(self, model, version):
        card = verify(self, model, version)
        (_folder(self, version) / "model.skops").write_bytes(other.read_bytes())
        return card

    monkeypatch.setattr(Registry, "verify", verify_then_swap)
    with pytest.raises(RegistryError, match="changed while it was loaded"):
        registry.load(MODEL, version)


@pytest.mark.parametrize("junk", ["null", "[]", "{}", "[" * 100_000, "folder"])
def test_a_junk_version_folder_neither_stops_training_nor_listing(registry, junk):
    good = register_tiny(registry, seed=0)
    card = _folder(registry, "0123456789abcdef") / "model.json"
    card.parent.mkdir(parents=True)
    if junk == "folder":
        card.mkdir()
    else:
        card.write_text(junk)
    assert [c.version for c in registry.versions(MODEL)] == [good]
    assert register_tiny(registry, seed=1) != good  # training goes on
    assert len(registry.versions(MODEL)) == 2
    with pytest.raises(RegistryError, match=r"not a valid model\.json"):
        registry.card(MODEL, "0123456789abcdef")
