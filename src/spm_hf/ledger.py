"""The forget ledger: receipts, keyed id hashes and the owner's ledger key.

A saved memory records every forget event (counts, dates, digests) and, per forgotten sample, a keyed hash
of its id: HMAC-SHA256 under a secret *ledger key* that never enters the saved folder. So:

- anyone with the folder can read how many samples of which class were forgotten, when, and check the
  digests, but cannot tell whether a given id was forgotten: without the key, hashing candidate ids (even
  every id of a guessable pattern like `train/%05d`) matches nothing;
- the key holder can prove that a given id was forgotten (`SampleMemory.is_forgotten`), and `add()` can
  refuse to re-ingest it.

Where the key lives: `SPM_HF_LEDGER_KEY` (64 hex characters, e.g. from a secret manager) if set, else a
file `<key dir>/<key id>.key` created on first use with mode 0600, where the key dir is
`SPM_HF_KEY_DIR` or `~/.config/spm_hf/ledger-keys`. Each ledger event names the *key id* it was hashed
under (an HMAC of a constant under the key: it identifies the key and reveals nothing of it), so a
memory passed between owners keeps events under several keys and each owner proves their own.
Back the key directory up with the rest of your secrets. If a key is lost, the events hashed under it still
show their counts and digests, but nobody can prove which ids they removed, and `add()` refuses new
samples (unless `allow_reingest=True`) because it can no longer rule out re-ingesting a forgotten id.

Like `memory.py`, this module needs only the standard library and numpy, so that it travels with the
classifier's remote code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np


TRAINED_ON = "trained_on"
MEMORY_ONLY = "memory_only"

LEDGER_KEY_ENV = "SPM_HF_LEDGER_KEY"
KEY_DIR_ENV = "SPM_HF_KEY_DIR"
_KEY_ID_MESSAGE = b"spm_hf ledger key id"


class LedgerKeyError(RuntimeError):
    """The ledger key an operation needs is not available (see the module docstring)."""


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def key_dir() -> str:
    return os.environ.get(KEY_DIR_ENV) or os.path.join(os.path.expanduser("~"), ".config", "spm_hf", "ledger-keys")


class LedgerKey:
    """A secret for keyed id hashes. `LedgerKey.default()` is the user's key; `key_id` is public."""

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("a ledger key needs at least 16 bytes of secret")
        self._secret = bytes(secret)
        self.key_id = hmac.new(self._secret, _KEY_ID_MESSAGE, hashlib.sha256).hexdigest()[:24]

    def __repr__(self) -> str:  # never print the secret
        return f"LedgerKey(key_id={self.key_id!r})"

    def hash_id(self, sample_id: str) -> str:
        """HMAC-SHA256 of a sample id under this key (hex)."""
        return hmac.new(self._secret, sample_id.encode(), hashlib.sha256).hexdigest()

    def sign(self, message: bytes) -> str:
        return hmac.new(self._secret, b"spm_hf seal\x00" + message, hashlib.sha256).hexdigest()

    @classmethod
    def from_hex(cls, text: str) -> LedgerKey:
        try:
            secret = bytes.fromhex(text.strip())
        except ValueError as e:
            raise ValueError(f"{LEDGER_KEY_ENV} must be hex (e.g. 64 hex characters); got {len(text)} characters") from e
        return cls(secret)

    @classmethod
    def generate(cls) -> LedgerKey:
        return cls(secrets.token_bytes(32))

    @classmethod
    def default(cls, create: bool = True) -> LedgerKey | None:
        """The user's key: `SPM_HF_LEDGER_KEY`, else the newest key file in the key dir (created if none)."""
        env = os.environ.get(LEDGER_KEY_ENV)
        if env:
            return cls.from_hex(env)
        directory = key_dir()
        files = sorted(
            (os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".key")),
            key=os.path.getmtime,
        ) if os.path.isdir(directory) else []
        if files:
            return cls._read(files[-1])
        if not create:
            return None
        key = cls.generate()
        key.store()
        return key

    @classmethod
    def find(cls, key_id: str) -> LedgerKey | None:
        """The key with `key_id` if this user holds it (the environment's key or a key file), else None."""
        env = os.environ.get(LEDGER_KEY_ENV)
        if env:
            key = cls.from_hex(env)
            if key.key_id == key_id:
                return key
        path = os.path.join(key_dir(), f"{key_id}.key")
        if os.path.exists(path):
            key = cls._read(path)
            if key.key_id == key_id:
                return key
        return None

    @classmethod
    def _read(cls, path: str) -> LedgerKey:
        with open(path, encoding="ascii") as f:
            return cls.from_hex(f.read())

    def store(self) -> str:
        """Write the key to `<key dir>/<key id>.key`, readable by its owner only; returns the path."""
        directory = key_dir()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, f"{self.key_id}.key")
        tmp = f"{path}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(self._secret.hex())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path


def seal_message(meta: dict) -> bytes:
    """Canonical bytes of everything a saved memory's JSON asserts except the seal itself."""
    return json.dumps({k: v for k, v in meta.items() if k not in ("seal", "signature")}, sort_keys=True,
                      separators=(",", ":")).encode()


def seal(meta: dict) -> str:
    """SHA-256 over the canonical JSON (ids, label names, ledger, digests, file hashes): any edit shows."""
    return hashlib.sha256(seal_message(meta)).hexdigest()


@dataclass
class ForgetReceipt:
    """What one `forget` call did. Holds no id in clear: removed samples are keyed by their keyed id hash.

    Attributes:
        removed_per_class: label name -> number of samples removed.
        removed_hashes / removed_trained_on: per removed sample, its keyed id hash and whether the
            parameters were trained on it; `status` maps one to the other, `guarantees` says which
            deletions are exact.
        digest_before / digest_after: `SampleMemory.digest()` around the call.
        seconds: wall time of the call.
        key_id: the ledger key the hashes are under (`status_of` needs that key).
        already_forgotten: requested ids that the ledger shows as forgotten earlier (no-op for them).
    """

    removed_per_class: dict[str, int]
    removed_hashes: list[str]
    removed_trained_on: np.ndarray
    digest_before: str
    digest_after: str
    seconds: float
    key_id: str
    already_forgotten: int = 0
    timestamp: str = field(default_factory=now_utc)
    _key: LedgerKey | None = field(default=None, repr=False, compare=False)
    _status: dict[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def num_removed(self) -> int:
        return sum(self.removed_per_class.values())

    @property
    def status(self) -> dict[str, str]:
        """Keyed id hash -> `"trained_on"` (the parameters saw the sample: it is gone from the memory,
        and the remaining gap to a retrained model is measured, not zero) or `"memory_only"` (the
        parameters never saw it: deletion is exact)."""
        if self._status is None:
            flags = np.where(self.removed_trained_on, TRAINED_ON, MEMORY_ONLY).tolist()
            self._status = dict(zip(self.removed_hashes, flags))
        return self._status

    @property
    def num_trained_on(self) -> int:
        return int(np.count_nonzero(self.removed_trained_on))

    @property
    def num_memory_only(self) -> int:
        return len(self.removed_hashes) - self.num_trained_on

    @property
    def exact(self) -> bool:
        """True when every removed sample was memory-only: the parameters never saw any of them, so the
        model after this call is the model trained without them (a core split makes this the designed
        path, `spm_hf.training.core_split`). False as soon as one removed sample was trained on."""
        return self.num_trained_on == 0

    @property
    def guarantees(self) -> dict[str, str]:
        """Keyed id hash -> `"exact"` (memory-only: equal to retraining without it) or `"measured"`
        (trained on: gone from the memory; the gap to a retrained model is measured, not zero)."""
        return {h: "exact" if s == MEMORY_ONLY else "measured" for h, s in self.status.items()}

    def status_of(self, sample_id: str) -> str | None:
        """`"trained_on"`, `"memory_only"` or None (not removed by this call) for a clear-text id."""
        key = self._key or LedgerKey.find(self.key_id)
        if key is None:
            raise LedgerKeyError(f"ledger key {self.key_id} is not available; see spm_hf.ledger")
        return self.status.get(key.hash_id(str(sample_id)))

    def to_dict(self) -> dict:
        return {
            "timestamp": self.timestamp,
            "num_removed": self.num_removed,
            "removed_per_class": dict(self.removed_per_class),
            "num_trained_on": self.num_trained_on,
            "num_memory_only": self.num_memory_only,
            "exact": self.exact,
            "already_forgotten": self.already_forgotten,
            "digest_before": self.digest_before,
            "digest_after": self.digest_after,
            "milliseconds": round(self.seconds * 1e3, 3),
        }

    def __str__(self) -> str:
        per_class = ", ".join(f"{k}: {v}" for k, v in self.removed_per_class.items() if v) or "nothing"
        exactness = "exact: every removed sample was memory_only" if self.exact and self.num_removed else (
            f"exact for the {self.num_memory_only} memory_only" if self.num_memory_only else "")
        return (
            f"Forgot {self.num_removed} samples ({per_class}) in {self.seconds * 1e3:.2f} ms; "
            f"{self.num_trained_on} trained_on, {self.num_memory_only} memory_only"
            + (f" ({exactness})" if exactness else "")
            + f"; digest {self.digest_before[:12]} -> {self.digest_after[:12]}"
        )


__all__ = [
    "ForgetReceipt",
    "LedgerKey",
    "LedgerKeyError",
    "MEMORY_ONLY",
    "TRAINED_ON",
    "seal",
    "seal_message",
]
