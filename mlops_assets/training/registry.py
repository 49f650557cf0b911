"""The model registry: versioned, verified artefacts under ``$MLOPS_HOME/models/<model>/``.

    <model>/<version>/model.skops   the fitted pipeline (skops: no arbitrary code on load)
    <model>/<version>/model.json    version, params, metrics, signature, lineage, sha256
    <model>/<version>/<attachment>  files stored with the model (the drift reference profile)
    <model>/champion.json           the current champion's version
    <model>/promotions.jsonl        append-only history: when, who, why, metrics before/after

A version is a content hash of what defines the model (training-data version, candidate and
parameters, seed, feature signature, dbt manifest, code and library versions): the same data,
config and seed give the same version, and registering it again adds nothing.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# Types a model file may contain: scikit-learn estimators and numpy/scipy values. Anything else
# in a file (say, a function smuggled into a pickle-like payload) is refused at load.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


class RegistryError(RuntimeError):
    """A model file was modified, or a version or champion does not exist."""


def content_version(definition: dict) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
        return self.data["metrics"]


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _dir(self, model: str, version: str) -> Path:
        return self.root / model / version

    def versions(self, model: str) -> list[ModelCard]:
        """Every registered version of ``model``, oldest first."""
        cards = [
            ModelCard(json.loads(path.read_text()))
            for path in (self.root / model).glob("*/model.json")
        ]
        return sorted(cards, key=lambda c: (c.data["created_at"], c.version))

    def models(self) -> list[str]:
        return sorted(p.name for p in self.root.glob("*") if p.is_dir())

    def card(self, model: str, version: str) -> ModelCard:
        path = self._dir(model, version) / "model.json"
        if not path.exists():
            known = ", ".join(c.version for c in self.versions(model)) or "none"
            raise RegistryError(f"{model} has no version {version} (known: {known})")
        return ModelCard(json.loads(path.read_text()))

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
        card, so they are verified like the model file."""
        version = content_version(definition)
        directory = self._dir(model, version)
        if (directory / "model.json").exists():
            return self.card(model, version), False
        directory.mkdir(parents=True, exist_ok=True)
        artefact = directory / "model.skops"
        import skops.io as sio  # 1-3 s to import (it lists every estimator): only here

        sio.dump(estimator, artefact)
        files = {}
        for name, write in (attachments or {}).items():
            write(directory / name)
            files[name] = _sha256(directory / name)
        card = {
            "model": model,
            "version": version,
            **definition,
            **details,
            "artefact": artefact.name,
            "sha256": _sha256(artefact),
            "attachments": files,
            "created_at": datetime.now(UTC).isoformat(),
        }
        _write_atomic(
            directory / "model.json", json.dumps(card, indent=2, sort_keys=True, default=str)
        )
        return ModelCard(card), True

    def load(self, model: str, version: str):
        """The fitted estimator, after verifying the file is the one registered."""
        card = self.card(model, version)
        artefact = self._dir(model, version) / card.data["artefact"]
        if _sha256(artefact) != card.data["sha256"]:
            raise RegistryError(
                f"{artefact} was modified after registration (sha256 differs from model.json): "
                "refusing to load it"
            )
        import skops.io as sio

        untrusted = sio.get_untrusted_types(file=artefact)
        foreign = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
        if foreign:
            raise RegistryError(f"{artefact} contains types outside the allow-list: {foreign}")
        return sio.load(artefact, trusted=untrusted)

    def attachment(self, model: str, version: str, name: str) -> Path:
        """The path of a file stored with the model, after verifying it is unchanged."""
        card = self.card(model, version)
        expected = card.data.get("attachments", {}).get(name)
        if expected is None:
            raise RegistryError(f"{model} {version} has no {name} (trained before it existed?)")
        path = self._dir(model, version) / name
        if not path.exists() or _sha256(path) != expected:
            raise RegistryError(f"{path} is missing or was modified after registration")
        return path

    # --- champion ------------------------------------------------------------------------
    def champion(self, model: str) -> str | None:
        path = self.root / model / "champion.json"
        return json.loads(path.read_text())["version"] if path.exists() else None

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
        """Make ``version`` the champion and append the decision to the history."""
        self.card(model, version)  # refuses an unknown version
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

    def record_verdict(self, model: str, version: str, promoted: bool, reason: str) -> None:
        """Record the champion/challenger gate's verdict on ``version`` (after any promotion)."""
        _write_atomic(
            self._dir(model, version) / "gate.json",
            json.dumps(
                {"promoted": promoted, "reason": reason, "at": datetime.now(UTC).isoformat()}
            ),
        )

    def verdict(self, model: str, version: str) -> dict | None:
        """The gate's verdict on ``version``; None if no gate decided on it. A version promoted
        by a gate before verdicts were recorded counts as decided."""
        path = self._dir(model, version) / "gate.json"
        if path.exists():
            return json.loads(path.read_text())
        promoted = [e for e in self.history(model) if e["to_version"] == version]
        return {"promoted": True, "reason": promoted[-1]["reason"]} if promoted else None

    def history(self, model: str) -> list[dict]:
        path = self.root / model / "promotions.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
