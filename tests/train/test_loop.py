"""The epoch loop: exact resume after an interruption, reproducibility, early stopping,
reduce-on-plateau, EMA, best-epoch selection, checkpoint errors."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from equitrain_jax.adapters import freeze_finetune, lora_finetune
from equitrain_jax.models.io import ModelBundle
from equitrain_jax.potential import Potential
from equitrain_jax.train import TrainConfig, ema_update, fit, labelled_batches

from common import ALLOY_ELEMENTS as ELEMENTS, emt_cells


@pytest.fixture(scope="module")
def data(bundle):
    cutoff = bundle.config.r_max
    train = labelled_batches(emt_cells(6, seed=20), cutoff, ELEMENTS, batch_size=2)
    valid = labelled_batches(emt_cells(2, seed=21), cutoff, ELEMENTS, batch_size=2)
    return train, valid


def leaves_bytes(tree):
    return [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(tree)]


def test_resume_after_interruption_reproduces_the_uninterrupted_run(tiny_bundle, tmp_path):
    """Ctrl-C in the middle of epoch 2 saves a checkpoint; resuming gives, bit for bit, the weights,
    optimiser state and history of a run that was never interrupted — with EMA and a plateau
    schedule in play.  A second uninterrupted run with the same seed is identical too.  (A tiny
    model: what is tested is the loop, not the model.)"""
    bundle = tiny_bundle
    train = labelled_batches(emt_cells(6, seed=20), bundle.config.r_max, ELEMENTS, batch_size=2)
    valid = labelled_batches(emt_cells(2, seed=21), bundle.config.r_max, ELEMENTS, batch_size=2)
    config = TrainConfig(epochs=3, learning_rate=5e-3, schedule="plateau", plateau_patience=1, ema_decay=0.9, seed=3)
    model = bundle.module(np.float64)

    def run(directory, **kwargs):
        strategy = lora_finetune(bundle.variables, rank=2, key=jax.random.PRNGKey(0))
        return fit(model, strategy, train, valid, config, checkpoint_dir=directory, **kwargs)

    straight = run(tmp_path / "straight")
    again = run(tmp_path / "again")
    assert leaves_bytes(again.last) == leaves_bytes(straight.last)
    assert again.history == straight.history

    def interrupt(step, _metrics):
        if step == 5:  # epoch 2 (3 steps per epoch), after its 2nd step
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", on_step=interrupt)
    resumed = run(tmp_path / "resumed", resume=True)
    assert leaves_bytes(resumed.last) == leaves_bytes(straight.last)
    assert leaves_bytes(resumed.trainable) == leaves_bytes(straight.trainable)
    assert leaves_bytes(resumed.opt_state) == leaves_bytes(straight.opt_state)
    assert resumed.history == straight.history
    assert len(straight.history) == 4 and all("stress_mae_gpa" in h for h in straight.history)


def test_best_epoch_early_stopping_and_plateau(bundle, data, tmp_path):
    """A learning rate far too large makes the validation loss worse after the first epochs:
    the plateau schedule halves the rate after each bad epoch, early stopping ends the run, and
    the returned weights are the best epoch's — checked by evaluating them independently."""
    train, valid = data
    config = TrainConfig(epochs=30, learning_rate=0.5, schedule="plateau", plateau_patience=1,
                         plateau_factor=0.5, early_stopping_patience=3, seed=1)
    strategy = freeze_finetune(bundle.variables, ("readouts.*", "products.*"))
    result = fit(bundle.module(np.float64), strategy, train, valid, config)
    losses = [h["valid_loss"] for h in result.history]
    best = int(np.argmin(losses))
    assert len(result.history) - 1 == best + 3 < 31, losses  # stopped 3 epochs after the best
    rates = np.array([h["learning_rate"] for h in result.history[1:]])  # epochs 1, 2, …
    improved = [losses[e] < min(losses[:e]) for e in range(1, len(losses))]
    assert rates[0] == 0.5
    np.testing.assert_allclose(rates[1:] / rates[:-1], np.where(improved[:-1], 1.0, 0.5))  # halved after each bad epoch

    structures = emt_cells(2, seed=21)
    merged = strategy.merge(result.trainable, strategy.frozen)
    outputs = Potential(ModelBundle(bundle.config, merged), dtype="float64").evaluate(structures)
    force_mae = 1e3 * np.mean([np.abs(o["forces"] - a.get_forces()).mean() for o, a in zip(outputs, structures)])
    np.testing.assert_allclose(force_mae, result.history[best]["forces_mae_mev_per_a"], rtol=1e-8)


def test_ema_update_formula_and_frozen_leaves():
    rng = np.random.default_rng(0)
    ema, new = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    frozen = rng.normal(size=7)
    out = ema_update({"a": ema, "f": frozen}, {"a": new, "f": frozen.copy()}, np.float64(0.9))
    np.testing.assert_allclose(out["a"], 0.9 * ema + 0.1 * new, rtol=1e-14)
    assert np.asarray(out["f"]).tobytes() == frozen.tobytes()


def test_resume_of_another_run_is_refused(tiny_bundle, tmp_path):
    """A checkpoint of LoRA rank 2 does not resume a rank-3 run (other starting weights), nor one
    on other data; each refusal names what differs, before anything is compiled."""
    bundle = tiny_bundle
    cells = emt_cells(4, seed=22)
    train = labelled_batches(cells[:3], bundle.config.r_max, ELEMENTS, batch_size=2)
    valid = labelled_batches(cells[3:], bundle.config.r_max, ELEMENTS, batch_size=2)
    model = bundle.module(np.float64)
    config = TrainConfig(epochs=1)
    fit(model, lora_finetune(bundle.variables, rank=2, key=jax.random.PRNGKey(0)), train, valid, config,
        checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="belongs to another run; initial_weights: sha256"):
        fit(model, lora_finetune(bundle.variables, rank=3, key=jax.random.PRNGKey(0)), train, valid, config,
            checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="belongs to another run; train_batches: sha256"):
        fit(model, lora_finetune(bundle.variables, rank=2, key=jax.random.PRNGKey(0)), train[:1], valid, config,
            checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(FileNotFoundError, match="no training checkpoint"):
        fit(model, lora_finetune(bundle.variables, rank=2), train, valid, config, checkpoint_dir=tmp_path / "x", resume=True)


def test_bad_train_config():
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(schedule="exponential")
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.5)
