"""Phonon items in the one jitted train step: the gradient of the combined loss (structures and
Hessian term) against finite differences of the loss, the Hessian loss falling over steps, frozen
leaves under freezing and LoRA, one compilation for materials of different sizes, one and two devices, exact resume, and the run's
fingerprint.  A tiny MACE (see `common.tiny_mace`): what is tested is the machinery, not the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from equitrain_jax.adapters import freeze_finetune, leaf_paths, lora_finetune
from equitrain_jax.data import device_arrays, pad_to_bucket
from equitrain_jax.train import LossConfig, TrainConfig, fit, labelled_batches
from equitrain_jax.train.config import HessianLossConfig
from equitrain_jax.train.fingerprint import resume_changes, run_fingerprint
from equitrain_jax.train.finetune import finetune_fingerprint, phonon_references
from equitrain_jax.train.hessian_loss import PhononValidation
from equitrain_jax.train.phonon_data import PhononBatches, phonon_graph
from equitrain_jax.train.step import StepBatch, make_train_step

from common import ALLOY_ELEMENTS as ELEMENTS, emt_cells

from .phonon_references import aluminium, finite_displacement_phonopy

MSE = LossConfig(kind="mse")
HESSIAN_MSE = HessianLossConfig(kind="mse", directions=2)


@pytest.fixture(scope="module")
def references():
    """EMT phonons (phonopy finite displacements) of fcc Al (2×2×2 primitive, 8 atoms) and fcc Cu
    (3×3×3 primitive, 27 atoms): two materials of different sizes, as (item, Phonopy) pairs."""
    phonons = [finite_displacement_phonopy(aluminium(), np.diag([2, 2, 2]), EMT),
               finite_displacement_phonopy(bulk("Cu", "fcc", a=3.6), np.diag([3, 3, 3]), EMT)]
    return phonon_references(phonons)


def phonon_batches(bundle, references, batch_size=1, n_shards=1, hessian=HESSIAN_MSE, seed=0):
    items = [item for item, _ in references]
    graphs = [phonon_graph(item, bundle.config.r_max, ELEMENTS) for item in items]
    return PhononBatches(items, graphs, batch_size, hessian.directions, hessian.mode, seed, n_shards, np.float64)


def leaves_bytes(tree):
    return [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(tree)]


def assert_same_term_and_gradient(bundle, batch, term, configs):
    """One SGD step of rate 1 over all weights (it moves them by minus the gradient) per step
    configuration of ``configs`` (keyword arguments of `make_train_step`): the ``term`` metric and
    the gradient agree between all of them to rounding (1e-12), and neither is zero."""
    params, frozen = bundle.variables["params"], {k: v for k, v in bundle.variables.items() if k != "params"}
    results = []
    for config in configs:
        step = make_train_step(bundle.module(np.float64), lambda t, f: {**f, "params": t}, optax.sgd(1.0), **config)
        moved, _, metrics = step(params, frozen, optax.sgd(1.0).init(params), batch)
        gradient = [np.asarray(a) - np.asarray(b) for a, b in zip(jax.tree_util.tree_leaves(params),
                                                                  jax.tree_util.tree_leaves(moved))]
        results.append((float(metrics[term]), gradient))
    (reference, g_reference), others = results[0], results[1:]
    assert reference > 0
    scale = max(np.abs(g).max() for g in g_reference)
    assert scale > 0
    for value, gradient in others:
        np.testing.assert_allclose(value, reference, rtol=1e-12)
        for a, b in zip(gradient, g_reference):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * scale)


def assert_gradient_is_finite_differences(step, trainable, frozen, state, batch, gradient, arrays=4, h=1e-5):
    """The step's loss gradient ``gradient`` against central differences of the loss that the step
    reports (at the weights it is given), for the largest entry of the ``arrays`` largest weight
    arrays with a gradient above 1e-4: agreement to 1e-6 relative (float64)."""
    leaves, treedef = jax.tree_util.tree_flatten(trainable)
    grad_leaves = [np.asarray(g) for g in jax.tree_util.tree_leaves(gradient)]
    chosen = [i for i in np.argsort([g.size for g in grad_leaves])[::-1] if np.abs(grad_leaves[i]).max() > 1e-4][:arrays]
    assert len(chosen) == arrays
    for index in chosen:
        flat = int(np.argmax(np.abs(grad_leaves[index])))
        values = []
        for sign in (1, -1):
            shifted = np.array(leaves[index]).reshape(-1)
            shifted[flat] += sign * h
            trial = list(leaves)
            trial[index] = shifted.reshape(np.shape(leaves[index]))
            trial = jax.device_put(jax.tree_util.tree_unflatten(treedef, trial))  # placed as ``trainable``
            values.append(float(step(trial, frozen, state, batch)[2]["loss"]))
        numeric = (values[0] - values[1]) / (2 * h)
        analytic = float(grad_leaves[index].reshape(-1)[flat])
        assert abs(analytic - numeric) < 1e-6 * abs(analytic), (index, analytic, numeric)


@pytest.mark.slow
def test_combined_loss_gradient_equals_finite_differences(tiny_bundle, references):
    """All weights trained, two structures and two phonon items in one batch: one step of plain
    SGD with rate 1 moves the weights by minus the gradient of the step's loss (energies, forces,
    stress + the Hessian term), which equals central differences of the same loss."""
    bundle = tiny_bundle
    structures = labelled_batches(emt_cells(2, seed=50), bundle.config.r_max, ELEMENTS, batch_size=2)[0]
    phonons = phonon_batches(bundle, references, batch_size=2).batch(0, 1, 0)
    batch = StepBatch(structures, phonons)
    step = make_train_step(bundle.module(np.float64), lambda t, f: {**f, "params": t}, optax.sgd(1.0), MSE,
                           hessian_config=HESSIAN_MSE)
    params, frozen = bundle.variables["params"], {k: v for k, v in bundle.variables.items() if k != "params"}
    state = optax.sgd(1.0).init(params)
    moved, _, metrics = step(params, frozen, state, batch)
    assert float(metrics["hessian"]) > 0.1 * float(metrics["loss"])
    gradient = jax.tree_util.tree_map(lambda old, new: np.asarray(old) - np.asarray(new), params, moved)
    assert_gradient_is_finite_differences(step, params, frozen, state, batch, gradient)


def test_lora_step_gradient_descent_and_frozen_base_under_the_hessian_term(tiny_bundle, references):
    """LoRA (rank 2) with Adam, MSE losses and the Hessian term (weight 10), two structures with
    a fixed 8-atom and a fixed 27-atom phonon batch in turn (the same directions each time):

    - the gradient of the first step's loss, read from Adam's first moment ((1 − β1)·g after one
      step from zero), equals central differences of that loss (energies, forces, stress and the
      Hessian term, which is a large part of it) for four adapter arrays;
    - over sixteen steps the Hessian loss of each phonon batch, which the step reports for the
      weights it starts from, falls by more than half;
    - every base weight that LoRA does not adapt comes out bit for bit as it went in;
    - the step compiled once (the two phonon batches share one padded shape)."""
    bundle = tiny_bundle
    strategy = lora_finetune(bundle.variables, rank=2, key=jax.random.PRNGKey(0))
    assert strategy.labels is None  # LoRA's trainable tree holds the adapters only
    b1 = 0.9
    optimizer = optax.adam(5e-2, b1=b1)
    step = make_train_step(bundle.module(np.float64), strategy.merge, optimizer, MSE,
                           hessian_config=HessianLossConfig(kind="mse", weight=10.0, directions=2))
    structures = labelled_batches(emt_cells(2, seed=51), bundle.config.r_max, ELEMENTS, batch_size=2)[0]
    phonons = phonon_batches(bundle, references, hessian=HESSIAN_MSE)
    fixed = [StepBatch(structures, phonons.batch(0, 1, 0)), StepBatch(structures, phonons.batch(1, 1, 1))]
    assert len(phonons) == 2 and len({b.phonons.nodes["positions"].shape for b in fixed}) == 1
    start = jax.device_put(strategy.trainable)  # as the step returns it: one compilation
    state = optimizer.init(start)

    trainable, opt_state, metrics = step(start, strategy.frozen, state, fixed[0])
    assert float(metrics["hessian"]) * 10 > 0.1 * float(metrics["loss"])
    gradient = jax.tree_util.tree_map(lambda m: np.asarray(m) / (1 - b1), opt_state[0].mu)
    assert_gradient_is_finite_differences(step, start, strategy.frozen, state, fixed[0], gradient)

    hessian = [[float(metrics["hessian"])], []]
    for n in range(1, 16):
        trainable, opt_state, metrics = step(trainable, strategy.frozen, opt_state, fixed[n % 2])
        hessian[n % 2].append(float(metrics["hessian"]))
    assert all(losses[-1] < 0.5 * losses[0] for losses in hessian), hessian
    assert step.compiled._cache_size() == 1

    before = strategy.merge(strategy.trainable, strategy.frozen)["params"]
    after = strategy.merge(trainable, strategy.frozen)["params"]
    paths = leaf_paths(before)
    moved = [p for p, a, b in zip(paths, leaves_bytes(before), leaves_bytes(after)) if a != b]
    adapted = set(leaf_paths(trainable))
    assert moved and all(any(a.startswith(p + ".") for a in adapted) for p in moved), (moved, sorted(adapted)[:4])
    assert len(moved) < len(paths)


@pytest.mark.slow
def test_hessian_term_decreases_and_frozen_leaves_stay_bit_identical_under_freezing(tiny_bundle, references):
    """Freezing all but the radial MLP, sixteen AdamW steps (weight decay 0.1: frozen leaves must
    not decay either) with structures and the Hessian term (weight 10), a fixed 8-atom and a fixed
    27-atom phonon batch in turn: the Hessian loss of each batch falls (by 5 % over both: the
    radial MLP alone moves it slowly), the untargeted leaves come out bit for bit as they went in,
    the radial MLP moves, and the step compiled once."""
    bundle = tiny_bundle
    strategy = freeze_finetune(bundle.variables, "interactions_0.radial_mlp.*")
    from equitrain_jax.adapters import masked_optimizer

    optimizer = masked_optimizer(optax.adamw(5e-2, weight_decay=0.1), strategy.labels)
    step = make_train_step(bundle.module(np.float64), strategy.merge, optimizer,
                           hessian_config=HessianLossConfig(weight=10.0))
    structures = labelled_batches(emt_cells(2, seed=51), bundle.config.r_max, ELEMENTS, batch_size=2)[0]
    phonons = phonon_batches(bundle, references)
    fixed = [phonons.batch(0, 1, 0), phonons.batch(1, 1, 1)]
    trainable = jax.device_put(strategy.trainable)
    opt_state = optimizer.init(trainable)
    hessian = [[], []]
    for n in range(16):
        trainable, opt_state, metrics = step(trainable, strategy.frozen, opt_state, StepBatch(structures, fixed[n % 2]))
        hessian[n % 2].append(float(metrics["hessian"]))
    assert step.compiled._cache_size() == 1
    assert all(losses[-1] < losses[0] for losses in hessian), hessian
    assert hessian[0][-1] + hessian[1][-1] < 0.95 * (hessian[0][0] + hessian[1][0]), hessian

    before = strategy.merge(strategy.trainable, strategy.frozen)["params"]
    after = strategy.merge(trainable, strategy.frozen)["params"]
    moved = [p for p, a, b in zip(leaf_paths(before), leaves_bytes(before), leaves_bytes(after)) if a != b]
    assert moved and all(p.startswith("interactions_0.radial_mlp") for p in moved), moved


@pytest.mark.slow
def test_resume_with_phonons_reproduces_the_uninterrupted_run(tiny_bundle, references, tmp_path):
    """Structures and phonon items (random directions drawn from seed, epoch and step), with
    validation phonons: interrupted in epoch 2 and resumed, the run gives the weights and
    history of the uninterrupted one bit for bit; the history holds the phonon metrics."""
    bundle = tiny_bundle
    train = labelled_batches(emt_cells(4, seed=52), bundle.config.r_max, ELEMENTS, batch_size=2)
    item, reference = references[0]
    valid = [PhononValidation(item, reference, device_arrays(pad_to_bucket(phonon_graph(item, bundle.config.r_max,
                                                                                        ELEMENTS))), mesh=(4, 4, 4))]
    config = TrainConfig(epochs=2, learning_rate=5e-3, seed=4, monitor="phonon_mae")
    model = bundle.module(np.float64)

    def run(directory, **kwargs):
        strategy = lora_finetune(bundle.variables, rank=2, key=jax.random.PRNGKey(0))
        return fit(model, strategy, train, [], config, checkpoint_dir=directory, phonons=phonon_batches(bundle, references),
                   valid_phonons=valid, hessian_config=HessianLossConfig(directions=2), **kwargs)

    straight = run(tmp_path / "straight")

    def interrupt(step, _metrics):
        if step == 3:  # epoch 2 (2 steps per epoch), after its first step
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", on_step=interrupt)
    resumed = run(tmp_path / "resumed", resume=True)
    assert leaves_bytes(resumed.last) == leaves_bytes(straight.last)
    assert leaves_bytes(resumed.opt_state) == leaves_bytes(straight.opt_state)
    assert resumed.history == straight.history
    assert all(np.isfinite(h["phonon_mae_thz"]) and "hessian_rmse_ev_per_a2" in h for h in straight.history)


def test_fingerprint_holds_the_phonon_data_and_the_hessian_settings(tiny_bundle, references, tmp_path):
    """A run with other phonon data, another direction count or mode, or another Hessian weight
    is another run: resuming is refused naming each field; the same facts pass."""
    from equitrain_jax.train.config import FinetuneConfig

    job, keys = FinetuneConfig(), __import__("equitrain_jax.train.data", fromlist=["LabelKeys"]).LabelKeys()

    def facts(refs, hessian=HessianLossConfig()):
        return run_fingerprint(TrainConfig(), LossConfig(), finetune_fingerprint(tiny_bundle, job, [], [], [], keys, refs,
                                                                                 refs, hessian))

    stored = facts(references)
    assert resume_changes(stored, facts(references), 1, "here") == {}
    with pytest.raises(ValueError, match="phonon_data") as refused:
        resume_changes(stored, facts(references[:1]), 1, "here")
    assert "valid_phonon_data" in str(refused.value)
    with pytest.raises(ValueError) as refused:
        resume_changes(stored, facts(references, HessianLossConfig(directions=8, mode="phonopy", weight=2.0)), 1, "here")
    for field in ("hessian.directions: 4 in the checkpoint, 8 now", "hessian.mode", "hessian.weight"):
        assert field in str(refused.value)
    # how the products are computed is not another run (the default changed on 2026-11-30)
    vmapped = facts(references, HessianLossConfig(sequential=False))
    assert resume_changes(vmapped, facts(references), 1, "here") == {"hessian.sequential": [False, True]}


TWO_DEVICES = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np, optax
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from common import ALLOY_ELEMENTS as ELEMENTS, emt_cells, tiny_mace
    from phonon_references import aluminium, finite_displacement_phonopy
    from equitrain_jax.adapters import lora_finetune
    from equitrain_jax.train import data_mesh, labelled_batches, sharded_batches
    from equitrain_jax.train.config import HessianLossConfig
    from equitrain_jax.train.finetune import phonon_references
    from equitrain_jax.train.phonon_data import PhononBatches, phonon_graph
    from equitrain_jax.train.step import StepBatch, make_train_step

    assert len(jax.devices()) == 2, jax.devices()
    bundle = tiny_mace(ELEMENTS, seed=2)
    phonons = [finite_displacement_phonopy(aluminium(), np.diag([2, 2, 2]), EMT),
               finite_displacement_phonopy(bulk("Cu", "fcc", a=3.6), np.diag([2, 2, 2]), EMT),
               finite_displacement_phonopy(bulk("Ni", "fcc", a=3.52), np.diag([2, 2, 2]), EMT),
               finite_displacement_phonopy(bulk("Cu", "fcc", a=3.65), np.diag([3, 3, 3]), EMT)]
    items = [item for item, _ in phonon_references(phonons)]
    graphs = [phonon_graph(item, bundle.config.r_max, ELEMENTS) for item in items]
    cells = emt_cells(4, seed=60)
    hessian = HessianLossConfig(directions=3)
    strategy = lora_finetune(bundle.variables, rank=2, key=jax.random.PRNGKey(1))
    optimizer = optax.adam(1e-2)
    step = make_train_step(bundle.module(np.float64), strategy.merge, optimizer, hessian_config=hessian)
    mesh = data_mesh(2)
    place = lambda tree, spec: jax.device_put(tree, jax.sharding.NamedSharding(mesh, spec))
    runs = {}
    for n in (1, 2):
        batches = PhononBatches(items, graphs, 3, hessian.directions, hessian.mode, 7, n, np.float64)
        if n == 1:
            structures = labelled_batches(cells, bundle.config.r_max, ELEMENTS, 4)[0]
        else:
            structures = place(sharded_batches(cells, bundle.config.r_max, ELEMENTS, 4, 2)[0], jax.sharding.PartitionSpec("data"))
        trainable, state = strategy.trainable, optimizer.init(strategy.trainable)
        frozen = strategy.frozen if n == 1 else place(strategy.frozen, jax.sharding.PartitionSpec())
        losses = []
        for index in (0, 1):  # a group of 3 items (2 + 1 per device), then one of 1 (one device idle)
            phonon_batch = batches.batch(index, 1, index)
            if n == 2:
                phonon_batch = place(phonon_batch, jax.sharding.PartitionSpec("data"))
            trainable, state, metrics = step(trainable, frozen, state, StepBatch(structures, phonon_batch))
            losses.append({k: float(v) for k, v in metrics.items()})
        runs[n] = {"losses": losses, "trainable": [np.asarray(x).tolist() for x in jax.tree_util.tree_leaves(trainable)]}
    print(json.dumps(runs))
    """
)


@pytest.mark.slow
def test_one_and_two_devices_agree(tmp_path):
    """The same two steps (4 structures + phonon items in groups of 3 and 1, so one device is
    idle in the second) on one device and sharded over two host-platform devices: the same loss
    terms and weights to summation order.  A fresh process (the device count is fixed when JAX
    starts)."""
    tests, repo = Path(__file__).parents[1], Path(__file__).parents[2]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(tests), str(Path(__file__).parent), str(repo),
                                          os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", TWO_DEVICES], env=env, capture_output=True, text=True, timeout=900,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    one, two = runs["1"], runs["2"]
    for a, b in zip(one["losses"], two["losses"]):
        assert a.keys() == b.keys() and a["hessian"] > 0 and a["forces"] > 0
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-10, atol=1e-14, err_msg=key)
    for a, b in zip(one["trainable"], two["trainable"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-8, atol=1e-12)
