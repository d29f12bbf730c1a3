"""Fingerprints of a training run, stored with its checkpoints, so that a resumed run is the run
that was started.

A fingerprint is a JSON tree of everything that gives the run its meaning: content hashes
(SHA-256) of the base model's parameters and of the training, validation and replay structures
with their labels, and every setting (optimiser, loss, strategy, batch size, dtype, E0s, label
keys).  Resuming compares it field by field with the checkpoint's and refuses any difference,
naming each field.  Only settings that extend a run or only change how it is computed may change
(`EXTENSIONS`): more epochs, a larger early-stopping patience, another device count, the Hessian
or third-order products one after another or vmapped; each change is returned, to be recorded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any, Optional

import ase
import jax
import numpy as np

EXTENSIONS = {
    "train.epochs": "not below the epochs done, and not under the cosine schedule",
    "train.early_stopping_patience": "only larger, or none",
    "finetune.n_devices": "the same batches, split over other devices",
    "hessian.sequential": "the same loss and gradient, the K Hessian products one after another or all at once",
    "third_order.sequential": "the same loss and gradient, the K third-order products one after another or all at once",
}
"""Fingerprint fields that may change when a run is resumed, and how."""

ADDED_SETTINGS = {"train.monitor": "valid_loss", "finetune.phonon_batch_size": 4}
"""Settings added after checkpoints were first written, with their defaults: a checkpoint without
such a field was made with the default, so the default is no change."""

SHORT = 12  # hex digits of a digest shown in messages


def tree_digest(tree: Any) -> str:
    """SHA-256 of a pytree of arrays: every leaf's path, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def model_digest(config: Any, variables: Any) -> str:
    """SHA-256 of a model: its architecture (``config.to_json()``) and parameters."""
    digest = hashlib.sha256(json.dumps(config.to_json(), sort_keys=True).encode())
    digest.update(tree_digest(variables).encode())
    return digest.hexdigest()


def _label(atoms: ase.Atoms, key: str) -> Optional[np.ndarray]:
    for store in (atoms.info, atoms.arrays, getattr(atoms.calc, "results", None) or {}):
        if key in store:
            return np.asarray(store[key], dtype=np.float64)
    return None


def structures_digest(structures: Sequence[ase.Atoms], label_keys: Sequence[Optional[str]] = ()) -> str:
    """SHA-256 of structures in order: atomic numbers, positions (Å), cell, periodicity, and the
    labels under ``label_keys`` (from ``atoms.info``, ``atoms.arrays`` or ``atoms.calc.results``)."""
    digest = hashlib.sha256(f"{len(structures)} structures|".encode())
    for atoms in structures:
        for array in (np.asarray(atoms.numbers, np.int64), np.asarray(atoms.positions, np.float64),
                      np.asarray(atoms.cell.array, np.float64), np.asarray(atoms.pbc, bool)):
            digest.update(np.ascontiguousarray(array).tobytes())
        for key in label_keys:
            if key is not None:
                value = _label(atoms, key)
                digest.update(f"|{key}:{None if value is None else value.shape}|".encode())
                if value is not None:
                    digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def as_json(tree: Any) -> Any:
    """``tree`` as it reads back from JSON (tuples become lists), for comparison with a stored one."""
    return json.loads(json.dumps(tree))


def run_fingerprint(train_config: Any, loss_config: Any, facts: dict) -> dict:
    """A run's fingerprint: its optimiser (``train``) and loss (``loss``) settings and ``facts``
    (content hashes, other settings), as it reads back from JSON."""
    return as_json({"train": dataclasses.asdict(train_config), "loss": dataclasses.asdict(loss_config), **facts})


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _shown(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f"sha256 {value[:SHORT]}…"
    return json.dumps(value, ensure_ascii=False)


def _refusal(field: str, old: Any, new: Any, stored: dict[str, Any], completed_epochs: int) -> Optional[str]:
    """Why ``field`` may not change from ``old`` to ``new`` on resume, or None if it may."""
    if field == "train.epochs":
        if stored.get("train.schedule") == "cosine":
            return "the cosine schedule decays over the whole run, so its length is part of the run"
        if new < completed_epochs:
            return f"{completed_epochs} epochs are already done"
        return None
    if field == "train.early_stopping_patience":
        return None if new is None or (old is not None and new >= old) else "it may only grow"
    if field in EXTENSIONS:
        return None
    return ""


def resume_changes(stored: Optional[dict], current: dict, completed_epochs: int, where: str) -> dict[str, list]:
    """The fields in which ``current`` extends the fingerprint ``stored`` with a checkpoint (at
    ``where``, after ``completed_epochs``), as ``{field: [before, after]}``.

    Raises:
        ValueError: naming every other field that differs, with both values, or saying that the
            checkpoint has no fingerprint.
    """
    if not stored:
        raise ValueError(f"checkpoint {where} has no run fingerprint (written by an older equitrain-jax), so it "
                         "cannot be checked against this run; start the run afresh")
    old, new = _flat(stored), _flat(as_json(current))
    changes, problems = {}, []
    for field in sorted(old.keys() | new.keys()):
        before, after = old.get(field, ADDED_SETTINGS.get(field, "(absent)")), new.get(field, "(absent)")
        if before == after:
            continue
        reason = _refusal(field, before, after, old, completed_epochs)
        if reason is None:
            changes[field] = [before, after]
        else:
            problems.append(f"{field}: {_shown(before)} in the checkpoint, {_shown(after)} now"
                            + (f" ({reason})" if reason else ""))
    if problems:
        raise ValueError(
            f"cannot resume from {where}: it belongs to another run; " + "; ".join(problems)
            + ". Only these may change on resume: "
            + ", ".join(f"{field.split('.')[-1]} ({how})" for field, how in EXTENSIONS.items())
        )
    return changes
