"""The model registry: versioned, verified artefacts under ``$MLOPS_HOME/models/<model>/``.

    <model>/<version>/model.skops   the fitted pipeline (skops, loaded with an exact type list)
    <model>/<version>/model.json    version, params, metrics, signature, lineage, sha256, seal
    <model>/<version>/<attachment>  files stored with the model (the drift reference profile)
    <model>/<version>/gate.json     the gate's verdict: promoted, reason, paired test, seal
    <model>/champion.json           the current champion's version
    <model>/promotions.jsonl        append-only history: when, who, why, metrics before/after
    <model>/refused/<version>-<time>/  a version folder that did not verify, replaced by training

A version is a content hash of what defines the model (training-data version, candidate and
parameters, seed, feature signature, dbt manifest, code and library versions): the same data,
config and seed give the same version, and registering it again adds nothing.

A registry file is untrusted input. Each version is sealed: ``model.json`` carries an
HMAC-SHA256, under the keyring's model signing key, of the model name, the version and the
canonical rest of ``model.json`` (which holds the sha256 of the artefact and of every
attachment). Rewriting the artefact and ``model.json`` together, or copying one version's folder
over another's, is refused without the key. Model names and versions are checked against a
pattern before they become paths, file names must stay inside their version folder, and the
artefact is loaded by skops with an exact list of the types the platform writes. A version that
does not verify is never loaded and never counts as trained before: the next training of its
model registers a genuine one (replacing the folder when the version is the same).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlops_assets.security.keyring import Keyring, KeyringError

# The types beyond skops' own safe defaults (primitives, containers, numpy arrays, scikit-learn
# estimators) that the platform's models contain: what `skops.io.get_untrusted_types` reports for
# every candidate of training/candidates.py and their stacking ensemble. Exact names, no prefixes
# and no functions: a file naming anything else (`builtins.exec`, `numpy.load`) is refused before
# any of it is constructed. A new candidate type fails tests/training/test_model_loading.py until
# it is added here.
TRUSTED_TYPES = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.tree._tree.Tree",
    "sklearn.utils._bunch.Bunch",
)
MODEL_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
VERSION = re.compile(r"[0-9a-f]{16}")  # content_version()
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # artefact and attachments
TEST_FIELDS = ("metric", "method", "difference", "ci", "p_value", "level")  # gate.json's test
GATE_FILE = "gate.json"  # the gate's verdict on a version, sealed apart from model.json
SEAL = "seal"  # model.json's field with the HMAC; everything else in model.json is sealed
# What becomes of a version that does not verify (Registry.register, trainer.trained_before).
REPLACED = (
    "it is never loaded, and the model's next training (`mlops run`) replaces it with a "
    "genuine version (a refused champion is gated as if absent)"
)


class RegistryError(RuntimeError):
    """A model file was modified or is not sealed, a name is not a model name or version, or a
    version or champion does not exist."""


def content_version(definition: dict) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_name(model: str, version: str | None = None) -> None:
    """Refuse a model name or version (from a CLI argument or a registry file) that is not one
    the registry makes, before it becomes part of a path."""
    if not isinstance(model, str) or not MODEL_NAME.fullmatch(model):
        raise RegistryError(f"{model!r} is not a model name (lower-case letters, digits, _)")
    if version is not None and (not isinstance(version, str) or not VERSION.fullmatch(version)):
        raise RegistryError(
            f"{version!r} is not a version of {model}: a version is 16 hex digits "
            "(see `mlops models list`)"
        )


def _inside(directory: Path, name: object) -> Path:
    """``directory / name`` for a plain file name that stays in ``directory`` (no separator, no
    ``..``, no symbolic link leading out)."""
    if not isinstance(name, str) or not FILE_NAME.fullmatch(name):
        raise RegistryError(f"{directory}: {name!r} is not a file name inside the version folder")
    path = directory / name
    if path.resolve().parent != directory.resolve():
        raise RegistryError(f"{path} leads outside its version folder: refusing it")
    return path


def _canonical(model: str, version: str, card: dict) -> bytes:
    """What the seal signs: the name and version the card is stored under, and the card."""
    fields = {k: v for k, v in card.items() if k != SEAL}
    return json.dumps(
        [model, version, fields], sort_keys=True, separators=(",", ":"), default=str
    ).encode()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class ModelCard:
    """``model.json``: everything needed to trust, reproduce and trace a model."""

    data: dict

    @property
    def version(self) -> str:
        return self.data["version"]

    @property
    def metrics(self) -> dict:
        """The holdout metrics; empty when ``model.json`` holds none (an unverified card may
        hold anything JSON can)."""
        metrics = self.data.get("metrics")
        return metrics if isinstance(metrics, dict) else {}


class Registry:
    """The registry under ``root``; versions are sealed and verified with the model signing key
    of the keyring at ``keyring_path`` (read when a version is first registered or verified)."""

    def __init__(self, root: Path, keyring_path: Path) -> None:
        self.root = Path(root)
        self.keyring_path = Path(keyring_path)
        self._keyring: Keyring | None = None

    def _dir(self, model: str, version: str) -> Path:
        check_name(model, version)
        return self.root / model / version

    def _key(self) -> Keyring:
        if self._keyring is None:
            try:
                self._keyring = Keyring.load(self.keyring_path)
            except KeyringError as error:
                raise RegistryError(f"cannot sign or verify models: {error}") from None
        return self._keyring

    def _seal(self, model: str, version: str, card: dict) -> dict:
        keyring = self._key()
        mac = hmac.new(keyring.model_signing_key, _canonical(model, version, card), "sha256")
        return {"key": keyring.model_signing_key_id, "hmac_sha256": mac.hexdigest()}

    def versions(self, model: str) -> list[ModelCard]:
        """Every registered version of ``model`` whose card can be read, oldest first (folders
        named like a version). A card that cannot be read is left out, not fatal: it is never
        loaded, and one junk folder must not stop training and scoring (the next training of
        that version replaces it)."""
        check_name(model)
        cards = []
        for path in (self.root / model).glob("*/model.json"):
            if VERSION.fullmatch(path.parent.name):
                with contextlib.suppress(RegistryError):
                    cards.append(_read_card(path))
        return sorted(cards, key=lambda c: (str(c.data.get("created_at")), c.version))

    def models(self) -> list[str]:
        return sorted(
            p.name for p in self.root.glob("*") if p.is_dir() and MODEL_NAME.fullmatch(p.name)
        )

    def card(self, model: str, version: str) -> ModelCard:
        path = self._dir(model, version) / "model.json"
        if not path.exists():
            known = ", ".join(c.version for c in self.versions(model)) or "none"
            raise RegistryError(f"{model} has no version {version} (known: {known})")
        return _read_card(path)

    def verified_card(self, model: str, version: str) -> ModelCard:
        """The card of ``version``, after checking its seal: it is the one this platform
        registered under this model name and version, unchanged."""
        card = self.card(model, version)
        path = self._dir(model, version) / "model.json"
        seal = card.data.get(SEAL)
        if not isinstance(seal, dict) or not isinstance(seal.get("hmac_sha256"), str):
            raise RegistryError(
                f"{path} is not sealed (registered before versions were sealed, or not by this "
                f"platform): refusing to load it; {REPLACED}"
            )
        expected = self._seal(model, version, card.data)
        if not hmac.compare_digest(seal["hmac_sha256"].encode(), expected["hmac_sha256"].encode()):
            raise RegistryError(
                f"{path} does not match its seal "
                + (
                    "(model.json was modified, or copied from another model or version)"
                    if seal.get("key") == expected["key"]
                    else "(sealed with another signing key: another keyring?)"
                )
                + f": refusing to load it; {REPLACED}"
            )
        return card

    def verify(self, model: str, version: str) -> ModelCard:
        """The card of ``version`` once its seal holds and its artefact and attachments match
        the sha256s it seals (nothing is loaded)."""
        card = self.verified_card(model, version)
        directory = self._dir(model, version)
        attachments = card.data.get("attachments") or {}
        files = {card.data.get("artefact"): card.data.get("sha256"), **attachments}
        for name, expected in files.items():
            path = _inside(directory, name)
            if not path.is_file() or _sha256(path) != expected:
                raise RegistryError(
                    f"{path} is missing or was modified after registration (sha256 differs "
                    f"from model.json): refusing to load it; {REPLACED}"
                )
        return card

    def verifies(self, model: str, version: str) -> bool:
        """Whether ``version`` passes :meth:`verify`: only such a version is loaded, counts as
        trained before, or runs in shadow."""
        try:
            self.verify(model, version)
        except RegistryError:
            return False
        return True

    def register(
        self,
        model: str,
        estimator,
        definition: dict,
        details: dict,
        attachments: dict[str, Callable[[Path], object]] | None = None,
    ) -> tuple[ModelCard, bool]:
        """Store ``estimator``; returns its card and whether it is new. ``definition`` is what
        the version hashes; ``details`` (metrics, timings) are recorded but not hashed.
        ``attachments`` (file name -> writer) are written beside the model and hashed into the
        card, so they are verified like the model file.

        A version that is registered and verifies is kept. One that does not verify (unsealed,
        a seal that does not hold, a file changed) is replaced: the new version is written into
        a staging folder beside it and renamed into place, the refused folder moved to
        ``<model>/refused/<version>-<time>`` (never loaded; kept for whoever investigates)."""
        version = content_version(definition)
        directory = self._dir(model, version)
        if (directory / "model.json").exists() and self.verifies(model, version):
            return self.card(model, version), False
        self._key()  # no keyring: refuse before writing anything
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{version}."))
        try:
            card = self._write_version(
                model, version, staging, estimator, {**definition, **details}, attachments or {}
            )
            if directory.exists():
                refused = directory.parent / "refused"
                refused.mkdir(exist_ok=True)
                directory.rename(refused / f"{version}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}")
            staging.rename(directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return card, True

    def _write_version(
        self,
        model: str,
        version: str,
        directory: Path,
        estimator,
        fields: dict,
        attachments: dict[str, Callable[[Path], object]],
    ) -> ModelCard:
        """Write the artefact, the attachments and, last, the sealed card into ``directory``."""
        artefact = directory / "model.skops"
        import skops.io as sio  # 1-3 s to import (it lists every estimator): only here

        sio.dump(estimator, artefact)
        files = {}
        for name, write in attachments.items():
            write(_inside(directory, name))
            files[name] = _sha256(directory / name)
        card = {
            "model": model,
            "version": version,
            **fields,
            "artefact": artefact.name,
            "sha256": _sha256(artefact),
            "attachments": files,
            "created_at": datetime.now(UTC).isoformat(),
        }
        card = json.loads(json.dumps(card, default=str))  # sealed exactly as it is read back
        card[SEAL] = self._seal(model, version, card)
        _write_atomic(
            directory / "model.json", json.dumps(card, indent=2, sort_keys=True, default=str)
        )
        return ModelCard(card)

    def load(self, model: str, version: str):
        """The fitted estimator, after :meth:`verify`. The artefact is read once: the bytes whose
        sha256 is checked are the bytes loaded (a file swapped between a check and a second
        read would otherwise be loaded unchecked)."""
        card = self.verify(model, version)
        path = _inside(self._dir(model, version), card.data["artefact"])
        content = path.read_bytes()
        if hashlib.sha256(content).hexdigest() != card.data["sha256"]:
            raise RegistryError(
                f"{path} changed while it was loaded (sha256 differs from model.json): "
                f"refusing to load it; {REPLACED}"
            )
        return load_artefact(path, content)

    def attachment(self, model: str, version: str, name: str) -> Path:
        """The path of a file stored with the model, after :meth:`verify`."""
        path = _inside(self._dir(model, version), name)
        if name not in (self.verify(model, version).data.get("attachments") or {}):
            raise RegistryError(f"{model} {version} has no {name} (trained before it existed?)")
        return path

    # --- champion ------------------------------------------------------------------------
    def champion(self, model: str) -> str | None:
        check_name(model)
        path = self.root / model / "champion.json"
        if not path.exists():
            return None
        try:
            version = json.loads(path.read_text())["version"]
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as error:
            raise RegistryError(f"{path} is not a valid champion file: {error!r}") from None
        check_name(model, version)
        return version

    def promote(
        self,
        model: str,
        version: str,
        *,
        reason: str,
        by: str | None = None,
        metrics_before: dict | None = None,
        metrics_after: dict | None = None,
    ) -> dict:
        """Make ``version`` the champion and append the decision to the history. Only a sealed
        version of ``model`` itself, whose files match its seal, can be promoted."""
        self.verify(model, version)
        event = {
            "at": datetime.now(UTC).isoformat(),
            "model": model,
            "from_version": self.champion(model),
            "to_version": version,
            "by": by or getpass.getuser(),
            "reason": reason,
            "metrics_before": metrics_before,
            "metrics_after": metrics_after
            if metrics_after is not None
            else self.card(model, version).metrics,
        }
        history = self.root / model / "promotions.jsonl"
        with history.open("a") as handle:
            handle.write(json.dumps(event, sort_keys=True, default=str) + "\n")
        _write_atomic(
            self.root / model / "champion.json",
            json.dumps({"version": version, "since": event["at"]}),
        )
        return event

    def record_verdict(
        self,
        model: str,
        version: str,
        promoted: bool,
        reason: str,
        *,
        test: dict | None = None,
        fairness: dict | None = None,
        champion: dict | None = None,
    ) -> None:
        """Record the champion/challenger gate's verdict on ``version`` (after any promotion):
        the paired ``test`` of the primary metric and the ``fairness`` comparison
        (``{"worse": [...]}``) against the ``champion`` (``{"version": ..., "metrics": {...}}``,
        its holdout metrics; None when it did not verify), all None when there was none. Sealed
        like ``model.json`` (under the name and ``<version>:gate.json``, so neither seal passes
        for the other), so a card can tell a recorded decision from a written-in one."""
        verdict = json.loads(
            json.dumps(
                {
                    "promoted": promoted,
                    "reason": reason,
                    "at": datetime.now(UTC).isoformat(),
                    "test": test,
                    "fairness": fairness,
                    "champion": champion,
                }
            )
        )  # sealed exactly as it is read back
        verdict[SEAL] = self._seal(model, f"{version}:{GATE_FILE}", verdict)
        _write_atomic(self._dir(model, version) / GATE_FILE, json.dumps(verdict))

    def verdict(self, model: str, version: str) -> dict | None:
        """The gate's verdict on ``version`` (promoted, reason, at, test, fairness, champion,
        sealed); None if no gate decided on it. A version promoted by a gate before verdicts were
        recorded counts as decided. A field not of the shape the gate writes reads as None;
        ``sealed`` says whether gate.json's seal holds under this keyring (False for one
        written by hand or before verdicts were sealed; None for the promotion history's
        record, which has no test): an unsealed verdict is shown as unverified, never
        trusted."""
        path = self._dir(model, version) / GATE_FILE
        if path.exists():
            value = _read_object(path, _read_text(path))
            seal = value.get(SEAL)
            expected = self._seal(model, f"{version}:{GATE_FILE}", value)["hmac_sha256"]
            sealed = (
                isinstance(seal, dict)
                and isinstance(seal.get("hmac_sha256"), str)
                and hmac.compare_digest(seal["hmac_sha256"].encode(), expected.encode())
            )
            return {**_verdict_fields(value), "sealed": sealed}
        promoted = [e for e in self.history(model) if e.get("to_version") == version]
        if not promoted:
            return None
        return {
            **_verdict_fields(
                {
                    "promoted": True,
                    "reason": promoted[-1].get("reason"),
                    "champion": {
                        "version": promoted[-1].get("from_version"),
                        "metrics": promoted[-1].get("metrics_before"),
                    },
                }
            ),
            "sealed": None,  # no verdict file: the promotion history's word (not sealed)
        }

    def history(self, model: str) -> list[dict]:
        check_name(model)
        path = self.root / model / "promotions.jsonl"
        if not path.exists():
            return []
        lines = _read_text(path).splitlines()
        return [_read_object(path, line, number) for number, line in enumerate(lines, 1)]


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError as error:
        raise RegistryError(f"{path} is not text: {error}") from None


def _read_object(path: Path, text: str, line: int | None = None) -> dict:
    """The JSON object in ``text`` (a registry file, or its ``line``), or a RegistryError
    naming the file and line."""
    where = f"{path} line {line}" if line else str(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise RegistryError(f"{where} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise RegistryError(f"{where} is not a JSON object")
    return value


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _verdict_fields(value: dict) -> dict:
    """``value`` (gate.json) with every field of the shape :meth:`Registry.record_verdict`
    writes, or None."""
    test = value.get("test")
    test = {k: test.get(k) for k in TEST_FIELDS} if isinstance(test, dict) else {}
    ci = test.get("ci")
    fairness = value.get("fairness")
    worse = fairness.get("worse") if isinstance(fairness, dict) else None
    champion = value.get("champion")
    champion = champion if isinstance(champion, dict) else {}
    metrics = champion.get("metrics")
    return {
        "promoted": value.get("promoted") if isinstance(value.get("promoted"), bool) else None,
        "reason": value.get("reason") if isinstance(value.get("reason"), str) else None,
        "at": value.get("at") if isinstance(value.get("at"), str) else None,
        "test": test
        if isinstance(test.get("metric"), str)
        and test.get("method") in ("delong", "paired_bootstrap")
        and all(test[k] is None or _number(test[k]) for k in ("difference", "p_value", "level"))
        and isinstance(ci, list)
        and len(ci) == 2
        and all(v is None or _number(v) for v in ci)
        else None,
        "fairness": {"worse": worse}
        if isinstance(worse, list) and all(isinstance(w, str) for w in worse)
        else None,
        "champion": {
            "version": champion["version"],
            "metrics": metrics
            if isinstance(metrics, dict) and all(_number(v) for v in metrics.values())
            else None,
        }
        if isinstance(champion.get("version"), str)
        else None,
    }


def _read_card(path: Path) -> ModelCard:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as error:  # a folder, not JSON, nested deep
        raise RegistryError(f"{path} is not a valid model.json: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("version"), str):
        raise RegistryError(f"{path} is not a valid model.json: no version")
    return ModelCard(data)


def load_artefact(path: Path, content: bytes | None = None):
    """The estimator in a skops file (``content``: its bytes, already read), refused (without
    constructing anything) if it names a type outside skops' safe defaults and
    :data:`TRUSTED_TYPES`."""
    import skops.io as sio  # 1-3 s to import (it lists every estimator): only here

    content = Path(path).read_bytes() if content is None else content
    try:
        foreign = sorted(set(sio.get_untrusted_types(data=content)) - set(TRUSTED_TYPES))
    except Exception as error:  # a damaged or foreign zip, JSON or schema: not a model file
        raise RegistryError(f"{path} is not a readable model file: {error}") from None
    if foreign:
        raise RegistryError(
            f"{path} names types this platform never writes: {', '.join(foreign)}: "
            "refusing to load it"
        )
    return sio.loads(content, trusted=list(TRUSTED_TYPES))
