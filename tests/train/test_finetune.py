"""Fine-tuning a converted model on EMT labels, and freezing inside the jitted train step."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from equitrain_jax.adapters import freeze_finetune, leaf_paths, lora_finetune, masked_optimizer
from equitrain_jax.models.mace import MACE
from equitrain_jax.models.io import load_model
from equitrain_jax.potential import Potential
from equitrain_jax.train import TrainConfig, fit, labelled_batches, make_train_step

from common import ALLOY_ELEMENTS as ELEMENTS, emt_cells


def as_float32(variables):
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x, np.float32) if np.asarray(x).dtype.kind == "f" else np.asarray(x), variables
    )


def test_lora_finetune_lowers_held_out_force_error(bundle):
    """12 training and 4 held-out EMT cells; after 20 LoRA epochs the held-out force MAE is at
    least 2.5x below the starting model's (measured: 1088 → 274 meV/Å), against EMT."""
    train, held_out = emt_cells(12, seed=10), emt_cells(4, seed=11)
    cutoff = bundle.config.r_max
    train_batches = labelled_batches(train, cutoff, ELEMENTS, batch_size=4, dtype=np.float32)
    valid_batches = labelled_batches(held_out, cutoff, ELEMENTS, batch_size=4, dtype=np.float32)
    strategy = lora_finetune(as_float32(bundle.variables), rank=4, key=jax.random.PRNGKey(0))
    result = fit(
        MACE(bundle.config, param_dtype=np.float32), strategy, train_batches, valid_batches,
        TrainConfig(epochs=20, learning_rate=1e-2),
    )
    before, after = result.history[0], result.history[-1]

    start = Potential(bundle, dtype="float64").evaluate(held_out)  # independent evaluation path
    emt_forces = np.concatenate([a.get_forces() for a in held_out])
    start_mae = 1e3 * np.abs(np.concatenate([o["forces"] for o in start]) - emt_forces).mean()
    np.testing.assert_allclose(before["forces_mae_mev_per_a"], start_mae, rtol=1e-3)
    assert after["forces_mae_mev_per_a"] < before["forces_mae_mev_per_a"] / 2.5, result.history
    assert after["energy_mae_mev_per_atom"] < before["energy_mae_mev_per_atom"], result.history


def test_frozen_weights_unchanged_and_stateless(bundle):
    """Only the readouts train: after three AdamW steps (with weight decay) every other weight is
    bit-identical, and the optimiser holds state (μ, ν) for the readouts alone."""
    batches = labelled_batches(emt_cells(4, seed=12), bundle.config.r_max, ELEMENTS, batch_size=4, dtype=np.float32)
    strategy = freeze_finetune(as_float32(bundle.variables), "readouts.*")
    tx = masked_optimizer(optax.adamw(1e-2, weight_decay=0.1), strategy.labels)
    step = make_train_step(MACE(bundle.config, param_dtype=np.float32), strategy.merge, tx)
    trainable, opt_state = strategy.trainable, tx.init(strategy.trainable)
    for _ in range(3):
        trainable, opt_state, metrics = step(trainable, strategy.frozen, opt_state, batches[0])
    assert np.isfinite(metrics["loss"])

    paths = leaf_paths(trainable)
    for path, old, new in zip(paths, jax.tree_util.tree_leaves(strategy.trainable), jax.tree_util.tree_leaves(trainable)):
        if path.startswith("readouts_"):
            assert not np.array_equal(old, new), path
        else:
            assert np.asarray(old).tobytes() == np.asarray(new).tobytes(), path
    readout_size = sum(np.size(w) for w in jax.tree_util.tree_leaves(trainable["readouts_0"])) + sum(
        np.size(w) for w in jax.tree_util.tree_leaves(trainable["readouts_1"])
    )
    state_arrays = [x for x in jax.tree_util.tree_leaves(opt_state) if np.ndim(x) > 0]
    assert sum(np.size(x) for x in state_arrays) == 2 * readout_size
    frozen_state = opt_state.inner_states["trainable"].inner_state[0].mu["node_embedding"]
    assert isinstance(frozen_state, optax.MaskedNode)


def test_refit_e0s_recovers_per_element_offsets(bundle):
    """Labels = the model's energies + known per-element offsets (eV): the refit moves the E0s by
    exactly those offsets, and leaves the E0 of an element absent from the data alone."""
    from equitrain_jax.train.e0s import refit_e0s

    cells = emt_cells(6, seed=40)
    for atoms in cells:
        atoms.numbers = np.where(atoms.numbers == 28, 29, atoms.numbers)  # no Ni: its E0 is undetermined
    offsets = {13: 0.37, 28: 5.0, 29: -1.25}
    model_energies = [o["energy"] for o in Potential(bundle, dtype="float64").evaluate(cells)]
    labelled = []
    for atoms, energy in zip(cells, model_energies):
        copy = atoms.copy()
        copy.info["energy"] = energy + sum(offsets[int(z)] for z in atoms.numbers)
        copy.arrays["forces"] = np.zeros((len(atoms), 3))
        labelled.append(copy)
    refitted = refit_e0s(bundle, labelled)
    change = np.subtract(refitted.config.atomic_energies[0], bundle.config.atomic_energies[0])
    np.testing.assert_allclose(change, [offsets[13], 0.0, offsets[29]], atol=1e-8)


def test_multihead_finetune_adds_a_default_head_and_keeps_the_pretrained_one(bundle, tmp_path):
    """Multi-head replay: the target cells (EMT labels) train a new ``Default`` head while replay
    cells labelled by the pretrained model itself keep training ``pt_head``.  The new head's
    held-out force error drops; the pretrained head stays close to its own starting predictions."""
    from equitrain_jax.train.finetune import finetune

    target, held_out = emt_cells(8, seed=50), emt_cells(2, seed=51)
    replay = emt_cells(4, seed=52)
    for atoms, out in zip(replay, Potential(bundle, dtype="float64").evaluate(replay)):
        atoms.calc = None
        atoms.info["energy"], atoms.arrays["forces"], atoms.info["stress"] = out["energy"], out["forces"], out["stress"]
    result = finetune(bundle, target, held_out, tmp_path, strategy="multihead", replay=replay,
                      train_config=TrainConfig(epochs=8, learning_rate=5e-3), batch_size=4, dtype="float64", progress=False)
    tuned = load_model(tmp_path / "model")
    assert tuned.config.heads == ("pt_head", "Default")
    new_head = Potential(tuned, dtype="float64")  # the default head is the new one
    emt = np.concatenate([a.get_forces() for a in held_out])
    start = 1e3 * np.abs(np.concatenate([o["forces"] for o in Potential(bundle).evaluate(held_out)]) - emt).mean()
    after = 1e3 * np.abs(np.concatenate([o["forces"] for o in new_head.evaluate(held_out)]) - emt).mean()
    np.testing.assert_allclose(result.history[0]["forces_mae_mev_per_a"], start, rtol=1e-6)
    assert after < start / 2, (start, after)
    drift = np.abs(np.concatenate([o["forces"] for o in Potential(tuned, head="pt_head").evaluate(replay)])
                   - np.concatenate([a.arrays["forces"] for a in replay])).mean() * 1e3
    assert drift < start / 5, (drift, start)


@pytest.mark.slow
def test_lora_finetune_adapts_the_elements_of_the_data_and_resumes(tiny_bundle, tmp_path):
    """`finetune` with LoRA on Cu cells of the Al/Ni/Cu tiny MACE: ``adapters.npz`` holds the Cu
    rows only of the element-dependent factors, ``run.json`` names the trained elements, the
    written model keeps the Al and Ni maps of the base bit for bit, and a second epoch resumed from
    the checkpoint of these factors runs."""
    import json

    from cli.conftest import emt_copper
    from equitrain_jax.train.finetune import finetune

    settings = dict(strategy="lora", rank=2, batch_size=2, dtype="float64", progress=False)
    finetune(tiny_bundle, emt_copper(2, seed=1), emt_copper(1, seed=2), tmp_path,
             train_config=TrainConfig(epochs=1, learning_rate=1e-2), **settings)
    adapters = dict(np.load(tmp_path / "adapters.npz"))
    assert adapters["interactions_0.skip_tp.0e.a"].shape == (1, 4, 2)
    assert adapters["products_0.symmetric_contraction_0e.weights_2.b"].shape == (1, 2, 4)
    assert json.loads((tmp_path / "run.json").read_text())["trained_elements"] == [29]
    base, tuned = tiny_bundle.variables["params"], load_model(tmp_path / "model").variables["params"]
    skip, tuned_skip = np.asarray(base["interactions_0"]["skip_tp"]["0e"]), tuned["interactions_0"]["skip_tp"]["0e"]
    assert tuned_skip[:, :2].tobytes() == skip[:, :2].tobytes() and not np.array_equal(tuned_skip[:, 2], skip[:, 2])
    result = finetune(tiny_bundle, emt_copper(2, seed=1), emt_copper(1, seed=2), tmp_path, resume=True,
                      train_config=TrainConfig(epochs=2, learning_rate=1e-2), **settings)
    assert [entry["epoch"] for entry in result.history] == [0, 1, 2]


def test_progress_line_leaves_out_energies_that_validation_lacks():
    from equitrain_jax.train.finetune import progress_line

    entry = {"epoch": 2, "train_loss": 0.25, "forces_mae_mev_per_a": 2.44, "energy_mae_mev_per_atom": float("nan")}
    assert progress_line(entry) == "epoch 2 loss 0.25 | valid: F 2.4 meV/Å"
    entry["energy_mae_mev_per_atom"] = 1.26
    assert progress_line(entry) == "epoch 2 loss 0.25 | valid: F 2.4 meV/Å, E 1.3 meV/atom"


def test_settings_given_in_the_wrong_place_are_named(tmp_path):
    """``finetune(..., epochs=1)``: the epochs are TrainConfig's; the error says where they belong
    (before: FinetuneConfig.__init__'s unexpected keyword), before any model is loaded."""
    from equitrain_jax.train.finetune import finetune

    cells = emt_cells(2, seed=5)
    with pytest.raises(TypeError, match=r"'epochs'; it belongs in train_config=TrainConfig"):
        finetune(tmp_path / "no-model", cells[:1], cells[1:], tmp_path / "out", epochs=1)
    with pytest.raises(TypeError, match=r"pass \[atoms\]"):
        finetune(tmp_path / "no-model", cells[0], cells[1:], tmp_path / "out")


def test_a_base_model_the_run_would_replace_is_refused(tmp_path):
    """``finetune(run/model, ..., output=run, overwrite=True)`` would delete the model it starts
    from (the command line refused it; the library now does too), before the model is loaded."""
    from equitrain_jax.train.finetune import finetune

    cells = emt_cells(2, seed=6)
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"model_dir .*model is model of output .*run, which this run replaces"):
        finetune(tmp_path / "run" / "model", cells[:1], cells[1:], tmp_path / "run", overwrite=True)
    assert (tmp_path / "run" / "model" / "config.json").is_file()
