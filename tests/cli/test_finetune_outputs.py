"""``equitrain-jax finetune`` with the optimiser options the documentation names, and what it
writes, against independent references: the learning-rate column against the closed-form
cosine schedule with warm-up; ``adapters.npz`` merged by hand (W + (α/r)·A·B) into the base
weights against the written model; ``--e0s refit`` against a least-squares fit of the base
model's energy residuals (its own evaluation, numpy's lstsq); ``history.csv`` against
``history.json``; ``run.json`` against the command.  (``--devices``: tests/train/test_data_parallel.py.)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import ase.io
import numpy as np
import pytest

from equitrain_jax import cli
from equitrain_jax.models.io import load_model
from equitrain_jax.potential import Potential
from equitrain_jax.train.config import TrainConfig
from train.test_options import cosine_with_warmup

OPTIONS = ["--strategy", "lora", "--rank", "2", "--epochs", "3", "--batch-size", "4", "--lr", "0.02",
           "--schedule", "cosine", "--warmup-epochs", "1", "--clip-norm", "5", "--weight-decay", "0.001",
           "--e0s", "refit", "--ema", "0.9", "--dtype", "float64", "--seed", "1"]
STEPS_PER_EPOCH = 2  # train.xyz: 8 structures, batches of 4
HISTORY_KEYS = {"epoch", "learning_rate", "valid_loss", "energy_mae_mev_per_atom", "energy_rmse_mev_per_atom",
                "forces_mae_mev_per_a", "forces_rmse_mev_per_a", "stress_mae_mev_per_a3", "stress_rmse_mev_per_a3",
                "stress_mae_gpa"}


@pytest.fixture(scope="module")
def tuned(workspace, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finetune") / "tuned"
    cli.main(["finetune", "--model", str(workspace / "base"), "--train", str(workspace / "train.xyz"), "--valid",
              str(workspace / "valid.xyz"), *OPTIONS, "-o", str(out)])
    return out


def test_history_json_csv_and_the_cosine_schedule_with_warmup(tuned):
    history = json.loads((tuned / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert set(history[0]) == HISTORY_KEYS and all(set(h) == HISTORY_KEYS | {"train_loss"} for h in history[1:])
    with open(tuned / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(history)
    for row, entry in zip(rows, history):
        assert {k: float(v) for k, v in row.items() if v != ""} == {k: float(v) for k, v in entry.items()}
    config = TrainConfig(epochs=3, learning_rate=0.02, schedule="cosine", warmup_epochs=1)
    for entry in history[1:]:  # the rate of each epoch's last step
        expected = cosine_with_warmup(entry["epoch"] * STEPS_PER_EPOCH - 1, config, STEPS_PER_EPOCH)
        np.testing.assert_allclose(entry["learning_rate"], expected, rtol=1e-6)


def test_run_json_records_the_command(tuned, workspace):
    record = json.loads((tuned / "run.json").read_text())
    assert record["base_model"] == str(workspace / "base")
    assert (record["strategy"], record["rank"], record["alpha"], record["e0s"], record["dtype"], record["batch_size"]) == \
        ("lora", 2, None, "refit", "float64", 4)
    assert {k: record["train"][k] for k in ("epochs", "learning_rate", "schedule", "warmup_epochs", "clip_norm",
                                              "weight_decay", "ema_decay", "seed")} == \
        {"epochs": 3, "learning_rate": 0.02, "schedule": "cosine", "warmup_epochs": 1, "clip_norm": 5.0,
         "weight_decay": 0.001, "ema_decay": 0.9, "seed": 1}
    assert record["loss"] == {"energy_weight": 10.0, "forces_weight": 100.0, "stress_weight": 1000.0, "kind": "huber",
                              "huber_delta": 0.01}
    assert (record["n_train"], record["n_valid"], record["n_replay"], record["resumes"]) == (8, 2, 0, [])
    digests = record["data_sha256"]
    assert len({digests["train"], digests["valid"], digests["replay"]}) == 3 and all(len(d) == 64 for d in digests.values())


def test_adapters_npz_merged_by_hand_is_the_written_model(tuned, workspace):
    """Every LoRA pair (a [(Z,) m, r], b [(Z,) r, n]) of ``adapters.npz``: base W + (α/r)·a·b is the
    fine-tuned model's W (α = r by default); every other weight is the base one."""
    adapters = dict(np.load(tuned / "adapters.npz"))
    base, model = flat_params(workspace / "base"), flat_params(tuned / "model")
    pairs = sorted(key[: -len(".a")] for key in adapters if key.endswith(".a"))
    assert pairs and sorted(adapters) == sorted([f"{p}.a" for p in pairs] + [f"{p}.b" for p in pairs])
    for path in pairs:
        weight = path
        product = np.matmul(adapters[f"{path}.a"], adapters[f"{path}.b"])  # scale α/r = 1
        change = model[weight] - base[weight]
        if product.ndim == 2:
            np.testing.assert_allclose(change, product, rtol=1e-10, atol=1e-13)
        else:  # one factorisation per element: its axis sits where the weight has it
            assert any(np.allclose(np.moveaxis(change, axis, 0), product, rtol=1e-10, atol=1e-13)
                       for axis in range(change.ndim) if np.moveaxis(change, axis, 0).shape == product.shape), path
    untouched = set(base) - set(pairs)
    assert untouched and all(np.array_equal(base[w], model[w]) for w in untouched)


def flat_params(model_dir: Path) -> dict[str, np.ndarray]:
    import jax

    from equitrain_jax.adapters.paths import dotted_path

    params = load_model(model_dir).variables["params"]
    return {dotted_path(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def test_e0s_refit_is_the_least_squares_fit_of_the_residuals(tuned, workspace):
    """E_label − E_base = counts·ΔE0 in the least-squares sense (one element here, so ΔE0 is the mean
    residual per atom); the fine-tuned model's E0 is the base one plus ΔE0."""
    train = ase.io.read(workspace / "train.xyz", ":")
    base_energies = [out["energy"] for out in Potential(workspace / "base", dtype="float64").evaluate(train)]
    counts = np.array([[len(atoms)] for atoms in train], dtype=float)
    residuals = np.array([atoms.get_potential_energy() for atoms in train]) - base_energies  # the EMT labels
    shift = np.linalg.lstsq(counts, residuals, rcond=None)[0]
    base_e0 = load_model(workspace / "base").config.atomic_energies[0]
    np.testing.assert_allclose(load_model(tuned / "model").config.atomic_energies[0], np.add(base_e0, shift), rtol=1e-10)
    assert abs(shift[0]) > 0.1  # premise: the refit moved the E0 (EMT Cu and the random model disagree)
