"""Run fingerprints: content hashes that see every change of the data, and the rule of what a
resumed run may change (only what extends it), with each refused field named."""

from __future__ import annotations

import pytest
from ase.build import bulk

from equitrain_jax.train.config import LossConfig, TrainConfig
from equitrain_jax.train.fingerprint import resume_changes, run_fingerprint, structures_digest

KEYS = ("energy", "forces", "stress")


def labelled(seed: float) -> list:
    cells = []
    for i in range(3):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=i)
        atoms.info["energy"] = -10.0 - i - seed
        atoms.arrays["forces"] = atoms.positions * 0.1
        cells.append(atoms)
    return cells


def test_structures_digest_sees_positions_labels_and_order_not_the_objects():
    cells = labelled(0.0)
    digest = structures_digest(cells, KEYS)
    assert structures_digest([a.copy() for a in cells], KEYS) == digest
    moved = [a.copy() for a in cells]
    moved[1].positions[0, 0] += 1e-12
    relabelled = [a.copy() for a in cells]
    relabelled[2].info["energy"] += 1e-9
    forces = [a.copy() for a in cells]
    forces[0].arrays["forces"][0, 1] = 0.5
    changed = [moved, relabelled, forces, cells[::-1], cells[:2]]
    digests = {structures_digest(c, KEYS) for c in changed}
    assert len(digests) == len(changed) and digest not in digests
    assert structures_digest(cells, ("energy", "forces", "dipole")) != digest  # the keys read are part of it


def fingerprint(**train) -> dict:
    return run_fingerprint(TrainConfig(**train), LossConfig(), {"base_model": "0" * 64, "finetune": {"n_devices": 1}})


def test_settings_that_extend_a_run_may_change_and_are_returned():
    stored = fingerprint(epochs=10, early_stopping_patience=3)
    assert resume_changes(stored, fingerprint(epochs=10, early_stopping_patience=3), 4, "ckpt") == {}
    changes = resume_changes(stored, fingerprint(epochs=20, early_stopping_patience=5), 4, "ckpt")
    assert changes == {"train.epochs": [10, 20], "train.early_stopping_patience": [3, 5]}
    assert resume_changes(stored, fingerprint(epochs=6), 6, "ckpt") == {
        "train.epochs": [10, 6], "train.early_stopping_patience": [3, None]}
    devices = run_fingerprint(TrainConfig(epochs=10, early_stopping_patience=3), LossConfig(),
                              {"base_model": "0" * 64, "finetune": {"n_devices": 2}})
    assert resume_changes(stored, devices, 4, "ckpt") == {"finetune.n_devices": [1, 2]}


@pytest.mark.parametrize("current, completed, named", [
    (fingerprint(epochs=3, early_stopping_patience=3), 4, "train.epochs: 10 in the checkpoint, 3 now (4 epochs are already done)"),
    (fingerprint(epochs=10, early_stopping_patience=2), 4, "train.early_stopping_patience: 3 in the checkpoint, 2 now"),
    (fingerprint(epochs=10, early_stopping_patience=3, learning_rate=0.01), 4,
     "train.learning_rate: 0.001 in the checkpoint, 0.01 now"),
    (fingerprint(epochs=10, early_stopping_patience=3, seed=1), 4, "train.seed: 0 in the checkpoint, 1 now"),
])
def test_settings_that_change_the_run_are_refused_by_name(current, completed, named):
    with pytest.raises(ValueError, match="belongs to another run") as refusal:
        resume_changes(fingerprint(epochs=10, early_stopping_patience=3), current, completed, "ckpt")
    assert named in str(refusal.value)


def test_cosine_runs_cannot_be_lengthened_and_every_difference_is_listed():
    stored = fingerprint(epochs=10, schedule="cosine")
    other = run_fingerprint(TrainConfig(epochs=12, schedule="cosine"), LossConfig(forces_weight=1.0),
                            {"base_model": "1" * 64, "finetune": {"n_devices": 1}})
    with pytest.raises(ValueError) as refusal:
        resume_changes(stored, other, 4, "ckpt")
    message = str(refusal.value)
    assert "train.epochs: 10 in the checkpoint, 12 now (the cosine schedule" in message
    assert "loss.forces_weight: 100.0 in the checkpoint, 1.0 now" in message
    assert "base_model: sha256 000000000000… in the checkpoint, sha256 111111111111… now" in message


def test_a_checkpoint_without_fingerprint_is_refused():
    with pytest.raises(ValueError, match="no run fingerprint"):
        resume_changes({}, fingerprint(), 1, "ckpt")
