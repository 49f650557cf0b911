"""The keyring: the secrets behind pseudonyms and the vault, in one 0600 file outside the data.

* ``pseudonym_key`` — HMAC-SHA256 key that turns a customer id into its ``customer_key``.
  Deterministic (joins keep working) and never rotated: a new key would be a new set of people.
* ``encryption keys`` — AES-256-GCM keys, versioned. New values are encrypted with the newest;
  ``rotate`` adds a version, ``retire`` removes one no value uses any more.
* ``model_signing_key`` — HMAC-SHA256 key that signs the model registry's versions (see
  ``training/registry.py``). A keyring written before it existed has none in its file: its key is
  then derived from the pseudonym key with HKDF (one-way, so the signing key reveals nothing of
  the pseudonym key), which needs no write and gives every process the same key. It depends on
  neither the AES keys nor their rotation: rotating or retiring a vault key never invalidates a
  registered model.

The file is JSON with base64 keys, written atomically (temp file + rename) with mode 0600.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shlex
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32  # AES-256, HMAC-SHA256
NONCE_BYTES = 12  # 96-bit GCM nonce, fresh for every value


class KeyringError(RuntimeError):
    """The keyring is missing, unreadable, too widely readable, or does not fit the data."""


class DecryptionError(KeyringError):
    """A ciphertext failed authentication: wrong key, tampered bytes, or moved to another cell."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass
class Keyring:
    path: Path
    # The secrets stay out of repr: a traceback with locals or a logged object would print them.
    pseudonym_key: bytes = field(repr=False)
    encryption_keys: dict[int, bytes] = field(repr=False)
    created_at: str
    history: list[dict] = field(default_factory=list)
    signing_key: bytes | None = field(default=None, repr=False)  # None: derived (older keyrings)
    _ciphers: dict[int, AESGCM] = field(default_factory=dict, repr=False, compare=False)
    _hmac: tuple[bytes, hashlib._Hash, hashlib._Hash] | None = field(
        default=None, repr=False, compare=False
    )

    # --- pseudonyms ----------------------------------------------------------------------
    @staticmethod
    def normalise_customer_id(customer_id: str) -> str:
        return customer_id.strip().upper()

    def pseudonym(self, customer_id: str) -> str:
        """``customer_key``: HMAC-SHA256 of the normalised id, hex (64 chars); not reversible."""
        [key] = self.pseudonyms([customer_id])
        return key

    def pseudonyms(self, customer_ids: Iterable[str]) -> list[str]:
        """:meth:`pseudonym` of each id. HMAC-SHA256 (RFC 2104) from two SHA-256 states keyed
        once, copied for every id: a third of the time of ``hmac.HMAC.copy``, whose copy and
        digest run in Python."""
        if self._hmac is None or self._hmac[0] is not self.pseudonym_key:
            self._hmac = (self.pseudonym_key, *_hmac_pads(self.pseudonym_key))
        _, inner, outer = self._hmac
        inner_copy, outer_copy = inner.copy, outer.copy
        normalise = self.normalise_customer_id
        keys = []
        for customer_id in customer_ids:
            state = inner_copy()
            state.update(normalise(customer_id).encode())
            final = outer_copy()
            final.update(state.digest())
            keys.append(final.hexdigest())
        return keys

    @property
    def fingerprint(self) -> str:
        """Identifies the pseudonym key without revealing it (stored beside the vault)."""
        return hmac.new(self.pseudonym_key, b"mlops keyring fingerprint", "sha256").hexdigest()[:16]

    # --- model signing -------------------------------------------------------------------
    @property
    def model_signing_key(self) -> bytes:
        """The registry's HMAC key: the file's own, or for a keyring written before it existed,
        HKDF of the pseudonym key (the same in every process, nothing written)."""
        if self.signing_key is not None:
            return self.signing_key
        return HKDF(
            algorithm=SHA256(), length=KEY_BYTES, salt=None, info=b"mlops model signing key"
        ).derive(self.pseudonym_key)

    @property
    def model_signing_key_id(self) -> str:
        """Identifies the signing key without revealing it (stored in each signed model.json)."""
        return hmac.new(self.model_signing_key, b"mlops signing key id", "sha256").hexdigest()[:16]

    # --- encryption ----------------------------------------------------------------------
    @property
    def active_version(self) -> int:
        return max(self.encryption_keys)

    def _cipher(self, version: int) -> AESGCM:
        cipher = self._ciphers.get(version)
        if cipher is None:
            cipher = self._ciphers[version] = AESGCM(self.encryption_keys[version])
        return cipher

    def encrypt(self, plaintext: str, associated_data: bytes) -> tuple[bytes, int]:
        """AES-256-GCM under the active key; returns (nonce || ciphertext+tag, key version)."""
        [blob], version = self.encrypt_many([plaintext], [associated_data])
        return blob, version

    def encrypt_many(
        self, plaintexts: Sequence[str], associated_data: Sequence[bytes]
    ) -> tuple[list[bytes], int]:
        """:meth:`encrypt` of many values (fresh nonce each): the per-value Python overhead
        kept to the AES-GCM call itself, which is most of ingesting a customers file."""
        version = self.active_version
        encrypt = self._cipher(version).encrypt
        nonces = secrets.token_bytes(NONCE_BYTES * len(plaintexts))
        return [
            (nonce := nonces[i : i + NONCE_BYTES]) + encrypt(nonce, text.encode(), aad)
            for i, text, aad in zip(
                range(0, len(nonces), NONCE_BYTES), plaintexts, associated_data, strict=True
            )
        ], version

    def decrypt(self, blob: bytes, key_version: int, associated_data: bytes) -> str:
        if key_version not in self.encryption_keys:
            raise KeyringError(
                f"key version {key_version} is not in the keyring {self.path} "
                f"(it has {sorted(self.encryption_keys)}): wrong or outdated keyring"
            )
        try:
            plain = self._cipher(key_version).decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated_data
            )
        except InvalidTag:
            raise DecryptionError(
                "ciphertext failed authentication (wrong key, tampered value, or a value moved "
                "to another cell)"
            ) from None
        return plain.decode()

    # --- lifecycle -----------------------------------------------------------------------
    def add_version(self) -> int:
        version = self.active_version + 1
        self.encryption_keys[version] = secrets.token_bytes(KEY_BYTES)
        self.history.append({"event": "added", "version": version, "at": _now()})
        return version

    def remove_version(self, version: int) -> None:
        if version == self.active_version:
            raise KeyringError(f"key version {version} is the active one: rotate first")
        if version not in self.encryption_keys:
            raise KeyringError(f"key version {version} is not in the keyring")
        del self.encryption_keys[version]
        self._ciphers.pop(version, None)
        self.history.append({"event": "retired", "version": version, "at": _now()})

    def save(self) -> None:
        """Write atomically with mode 0600 (never readable by group or others, even briefly)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        document = {
            "format": 1,
            "created_at": self.created_at,
            "pseudonym_key": _b64(self.pseudonym_key),
            "encryption_keys": {str(v): _b64(k) for v, k in sorted(self.encryption_keys.items())},
            "history": self.history,
        }
        if self.signing_key is not None:
            document["model_signing_key"] = _b64(self.signing_key)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    @classmethod
    def create(cls, path: Path) -> Keyring:
        if path.exists():
            raise KeyringError(f"a keyring already exists at {path}: refusing to overwrite it")
        keyring = cls(
            path=path,
            pseudonym_key=secrets.token_bytes(KEY_BYTES),
            encryption_keys={1: secrets.token_bytes(KEY_BYTES)},
            created_at=_now(),
            history=[{"event": "added", "version": 1, "at": _now()}],
            signing_key=secrets.token_bytes(KEY_BYTES),
        )
        keyring.save()
        return keyring

    @classmethod
    def load(cls, path: Path) -> Keyring:
        if not path.exists():
            raise KeyringError(
                f"no keyring at {path}: run `mlops keys init` (or set MLOPS_KEYRING to the "
                "keyring's path)"
            )
        if not path.is_file():
            kind = "a directory" if path.is_dir() else "not a regular file"
            raise KeyringError(
                f"{path} is {kind}, not a keyring file: set MLOPS_KEYRING to the keyring file "
                "itself (keys/keyring.json of the home that made it)"
            )
        try:
            document = json.loads(path.read_text())
            keyring = cls(
                path=path,
                pseudonym_key=base64.b64decode(document["pseudonym_key"]),
                encryption_keys={
                    int(v): base64.b64decode(k) for v, k in document["encryption_keys"].items()
                },
                created_at=document["created_at"],
                history=document.get("history", []),
                signing_key=base64.b64decode(document["model_signing_key"])
                if "model_signing_key" in document
                else None,
            )
        except (ValueError, KeyError, TypeError) as error:
            raise KeyringError(f"keyring {path} is not a valid keyring file: {error}") from None
        # Checked once the file is known to be a keyring, so the advice never touches another.
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KeyringError(
                f"keyring {path} is readable by others (mode {mode:o}): make it private with "
                f"`chmod 600 {shlex.quote(str(path))}`"
            )
        return keyring


def _hmac_pads(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """The inner and outer SHA-256 states of HMAC-SHA256 under ``key`` (RFC 2104)."""
    block = 64  # SHA-256's block size
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    return inner, outer


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
