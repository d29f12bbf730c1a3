"""The third-order term and phono3py data against independent references: phono3py finite
displacements of the same model (forces from our ASE calculator, first derivatives only), central
differences of the loss, einsum formulas, and bit-identical frozen weights; structures without
energies masked out of the ordinary loss.  A tiny MACE (see `common.tiny_mace`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from common import ALLOY_ELEMENTS as ELEMENTS, emt_cells

from equitrain_jax.adapters import freeze_finetune, leaf_paths, lora_finetune, masked_optimizer
from equitrain_jax.calculator import Calculator
from equitrain_jax.models.quantities import Outputs, node_energy_function
from equitrain_jax.phonons.conductivity import phono3py_from_calculator
from equitrain_jax.potential import Potential
from equitrain_jax.train import LossConfig, labelled_batches
from equitrain_jax.train.config import FORCES_ONLY, ThirdOrderLossConfig
from equitrain_jax.train.loss import loss_sums
from equitrain_jax.train.phonon_data import phonon_graph
from equitrain_jax.train.step import StepBatch, make_train_step
from equitrain_jax.train.third_order import (
    ThirdOrderBatches,
    combine_third_order_loss,
    model_third_order,
    sample_pairs,
    third_order_loss_sums,
    third_order_products,
)
from equitrain_jax.train.third_order_data import (
    displaced_supercells,
    read_third_order_reference,
    third_order_item_from_phono3py,
)

from .test_hessian_step import assert_gradient_is_finite_differences, assert_same_term_and_gradient, leaves_bytes

MSE = ThirdOrderLossConfig(kind="mse", weight=1.0, directions=2)


def aluminium_reference(calculator, distance: float):
    """phono3py's own workflow on fcc Al (3×3×3 primitive supercell, 27 atoms: in a 2×2×2 one
    every bond's ±d reach the same atom and Φ3 cancels), ± displacements of ``distance`` (Å),
    forces from ``calculator``, fc3 and fc2 fitted and symmetrised by phono3py."""
    return phono3py_from_calculator(calculator, bulk("Al", "fcc", a=4.05), np.diag([3, 3, 3]), distance=distance,
                                    is_plusminus=True, symmetrize_fc=True)


@pytest.fixture(scope="module")
def model(tiny_bundle):
    """The tiny MACE and phono3py references of its own at ±0.02 and ±0.01 Å."""
    potential = Potential(tiny_bundle, dtype="float64")
    return potential, {d: aluminium_reference(Calculator(potential), d) for d in (0.02, 0.01)}


@pytest.fixture(scope="module")
def emt_reference():
    """phono3py's fc3 of EMT aluminium (±0.01 Å): a target the tiny MACE is far from."""
    return aluminium_reference(EMT(), 0.01)


@pytest.mark.slow
def test_third_order_loss_vanishes_on_the_models_own_finite_displacement_fc3(model):
    """fc3 from phono3py's ± finite displacements of 0.01 Å of the same model (our Calculator's
    forces): the residual Φ3_model[u, v] − Φ3_fd[u, v] of random pairs (exact jvp of a
    Hessian-vector product) is the finite-difference error, e(h) = (fc3(2h) − fc3(h))/3 for an
    error ∝ h² (measured: 2.6e-4 eV/Å³ against an RMS of 1.13); the loss is within 2× of it."""
    potential, references = model
    coarse, fine = (third_order_item_from_phono3py(references[d], f"{d} Å") for d in (0.02, 0.01))
    graph = phonon_graph(fine, potential.cutoff, ELEMENTS)
    batches = ThirdOrderBatches([fine], [graph], 1, k=4, mode="random", seed=3)
    batch = batches.batch(0, 1, 0)
    product = model_third_order(node_energy_function(potential.module))
    config = ThirdOrderLossConfig(kind="mse", directions=4)

    @jax.jit
    def loss(variables, batch):
        return combine_third_order_loss(third_order_loss_sums(third_order_products(product, variables, batch), batch,
                                                              config), config)[1]

    residual = float(np.sqrt(loss(potential.variables, batch)))
    n = fine.n_atoms
    u = np.swapaxes(np.asarray(batch.nodes["third_order_u"])[:n], 0, 1)
    v = np.swapaxes(np.asarray(batch.nodes["third_order_v"])[:n], 0, 1)
    estimated = np.sqrt(np.mean(np.square((coarse.contracted(u, v) - fine.contracted(u, v)) / 3)))
    target_rms = np.sqrt(np.mean(np.square(fine.contracted(u, v))))
    print(f"residual {residual:.3g}, estimated finite-difference error {estimated:.3g}, target RMS {target_rms:.3g} eV/Å³")
    assert target_rms > 0.5  # eV/Å³: a third derivative worth fitting
    assert estimated < 1e-3 * target_rms
    assert residual < 2 * estimated


def test_pairs_and_targets_by_hand(emt_reference):
    """Targets Φ3[u, v] of both modes against numpy's einsum over the full fc3; phono3py's pairs are
    its pair supercells' two displacements; random pairs have length √(3N); masked beyond P."""
    item = third_order_item_from_phono3py(emt_reference)
    rng = np.random.default_rng(0)
    for mode, k in (("random", 3), ("phono3py", len(item.pairs) + 2)):
        u, v, targets, mask = sample_pairs(item, k, mode, rng)
        real = int(mask.sum())
        assert real == (3 if mode == "random" else len(item.pairs))
        np.testing.assert_allclose(np.linalg.norm(u[:real], axis=(1, 2)), np.sqrt(3 * item.n_atoms))
        expected = np.einsum("ijkabc,nia,njb->nkc", item.fc3, u, v)
        np.testing.assert_allclose(targets, expected, atol=1e-12 * np.abs(expected).max())
    pair = item.displacements[len(emt_reference.dataset["first_atoms"])]
    np.testing.assert_allclose(np.sign(item.pairs[0].sum(axis=0)), np.sign(pair))


@pytest.mark.parametrize("layout", ["disp+FORCES_FC3", pytest.param("params", marks=pytest.mark.slow)])
def test_reading_phono3py_files_equals_phono3pys_own_load(emt_reference, tmp_path, monkeypatch, layout):
    """phono3py_disp.yaml + FORCES_FC3 (forces beside) and phono3py_params.yaml (forces inside) read
    to what ``phono3py.load`` makes of the same files (fc3, fc2 symmetrised, full), and the
    displaced supercells become force-only structures at phono3py's displaced positions."""
    import phono3py
    from phono3py.file_IO import write_FORCES_FC3

    monkeypatch.chdir(tmp_path)  # phono3py.load looks for fc3.hdf5 and FORCES_FC3 here: there are none
    ph3 = emt_reference
    ph3.save(tmp_path / "phono3py_params.yaml")
    disp = tmp_path / "disp"
    disp.mkdir()
    ph3.save(disp / "phono3py_disp.yaml", settings={"force_sets": False})
    write_FORCES_FC3(ph3.dataset, filename=disp / "FORCES_FC3")
    for path in [tmp_path / "phono3py_params.yaml"] if layout == "params" else [disp / "phono3py_disp.yaml"]:
        item, _ = read_third_order_reference(path)
        forces = None if path.name == "phono3py_params.yaml" else path.parent / "FORCES_FC3"
        loaded = phono3py.load(path, forces_fc3_filename=forces, symmetrize_fc=True, is_compact_fc=False)
        np.testing.assert_allclose(item.fc3, loaded.fc3, rtol=0, atol=1e-12)
        np.testing.assert_allclose(item.fc2, np.transpose(loaded.fc2, (0, 2, 1, 3)), rtol=0, atol=1e-12)
        structures = displaced_supercells(item)
        assert len(structures) == int(np.sum([s is not None for s in ph3.supercells_with_displacements]))
        np.testing.assert_allclose(structures[-1].positions, ph3.supercells_with_displacements[-1].positions, atol=1e-12)
        assert structures[0].info[FORCES_ONLY] and "energy" not in structures[0].info


def test_missing_energies_are_masked():
    """A force-only structure (flagged; any energy it carries ignored) adds its forces and nothing to
    the energy term: with arbitrary predictions, the loss sums equal numpy's over the labelled
    structure's energy per atom and both structures' force components."""
    labelled, force_only = emt_cells(2, seed=60)
    force_only = force_only.copy()
    force_only.arrays["forces"] = np.random.default_rng(0).normal(size=(len(force_only), 3))
    force_only.info.update({FORCES_ONLY: True, "energy": 1e6})
    (batch,) = labelled_batches([labelled, force_only], 4.0, ELEMENTS, batch_size=2)
    assert batch.globals["has_energy"].tolist()[:2] == [True, False]
    rng = np.random.default_rng(1)
    n_node, n_graph = batch.nodes["positions"].shape[0], batch.n_node.shape[0]
    outputs = Outputs(jnp.asarray(rng.normal(size=n_graph)), None, jnp.asarray(rng.normal(size=(n_node, 3))),
                      jnp.zeros((n_graph, 3, 3)), None)
    sums = jax.device_get(loss_sums(outputs, batch, LossConfig(kind="mse")))
    energy = (float(outputs.energy[0]) - labelled.get_potential_energy()) / len(labelled)
    forces = np.concatenate([labelled.get_forces(), force_only.arrays["forces"]])
    assert sums["energy_count"] == 1
    np.testing.assert_allclose(sums["energy_loss"], energy**2, rtol=1e-12)
    assert sums["forces_count"] == forces.size
    np.testing.assert_allclose(sums["forces_loss"], np.sum(np.square(np.asarray(outputs.forces)[:len(forces)] - forces)),
                               rtol=1e-12)


@pytest.mark.slow
def test_lora_step_gradient_and_frozen_base_under_the_third_order_term(tiny_bundle, emt_reference):
    """LoRA (rank 2), Adam, structures plus the third-order term (weight 10) in one jitted step: the
    first step's gradient (Adam's first moment) equals central differences of its loss (float64),
    the term falls over eight steps on a fixed batch, and every base weight comes out bit for bit."""
    item = third_order_item_from_phono3py(emt_reference)
    strategy = lora_finetune(tiny_bundle.variables, rank=2, key=jax.random.PRNGKey(0))
    b1 = 0.9
    optimizer = optax.adam(2e-2, b1=b1)
    step = make_train_step(tiny_bundle.module(np.float64), strategy.merge, optimizer, LossConfig(kind="mse"),
                           third_order_config=ThirdOrderLossConfig(kind="mse", weight=10.0, directions=2))
    structures = labelled_batches(emt_cells(2, seed=61), tiny_bundle.config.r_max, ELEMENTS, batch_size=2)[0]
    pairs = ThirdOrderBatches([item], [phonon_graph(item, tiny_bundle.config.r_max, ELEMENTS)], 1, k=2, seed=1)
    batch = StepBatch(structures, None, pairs.batch(0, 1, 0))
    start = jax.device_put(strategy.trainable)
    state = optimizer.init(start)
    trainable, opt_state, metrics = step(start, strategy.frozen, state, batch)
    assert 10 * float(metrics["third_order"]) > 0.1 * float(metrics["loss"])
    gradient = jax.tree_util.tree_map(lambda m: np.asarray(m) / (1 - b1), opt_state[0].mu)
    assert_gradient_is_finite_differences(step, start, strategy.frozen, state, batch, gradient)
    losses = [float(metrics["third_order"])]
    for _ in range(7):
        trainable, opt_state, metrics = step(trainable, strategy.frozen, opt_state, batch)
        losses.append(float(metrics["third_order"]))
    assert losses[-1] < 0.7 * losses[0], losses
    before = strategy.merge(strategy.trainable, strategy.frozen)["params"]
    after = strategy.merge(trainable, strategy.frozen)["params"]
    moved = [p for p, a, b in zip(leaf_paths(before), leaves_bytes(before), leaves_bytes(after)) if a != b]
    adapted = set(leaf_paths(trainable))
    assert moved and all(any(a.startswith(p + ".") for a in adapted) for p in moved), moved


@pytest.mark.slow
def test_sequential_pairs_give_the_loss_and_gradient_of_the_vmapped_ones(tiny_bundle, emt_reference):
    """K = 3 random pairs, all weights trained, the third-order term alone: one SGD step with rate
    1 moves the weights by minus the gradient; the pairs one after another with rematerialisation
    (the default) give the vmapped step's loss and gradient to rounding (1e-12)."""
    item = third_order_item_from_phono3py(emt_reference)
    pairs = ThirdOrderBatches([item], [phonon_graph(item, tiny_bundle.config.r_max, ELEMENTS)], 1, k=3, seed=2)
    batch = StepBatch(None, None, pairs.batch(0, 1, 0))
    assert_same_term_and_gradient(tiny_bundle, batch, "third_order", [
        {"third_order_config": ThirdOrderLossConfig(kind="mse", weight=1.0, directions=3, sequential=sequential)}
        for sequential in (False, True)
    ])


@pytest.mark.slow
def test_third_order_term_under_freezing_keeps_frozen_leaves_bit_identical(tiny_bundle, emt_reference):
    """Freezing all but the radial MLP, AdamW with weight decay 0.1, the third-order term alone (a
    batch of phono3py items only, random pairs drawn afresh each step): the term falls, only the
    radial MLP moves, the step compiled once."""
    item = third_order_item_from_phono3py(emt_reference)
    strategy = freeze_finetune(tiny_bundle.variables, "interactions_0.radial_mlp.*")
    optimizer = masked_optimizer(optax.adamw(2e-2, weight_decay=0.1), strategy.labels)
    step = make_train_step(tiny_bundle.module(np.float64), strategy.merge, optimizer,
                           third_order_config=ThirdOrderLossConfig(weight=10.0, kind="mse"))
    pairs = ThirdOrderBatches([item], [phonon_graph(item, tiny_bundle.config.r_max, ELEMENTS)], 1, seed=2)
    fixed = pairs.batch(0, 1, 0)
    trainable = jax.device_put(strategy.trainable)
    opt_state = optimizer.init(trainable)
    losses = []
    for n in range(12):
        batch = StepBatch(None, None, fixed if n in (0, 11) else pairs.batch(0, 1, n))
        trainable, opt_state, metrics = step(trainable, strategy.frozen, opt_state, batch)
        if n in (0, 11):
            losses.append(float(metrics["third_order"]))
    assert step.compiled._cache_size() == 1
    assert losses[1] < losses[0], losses
    before = strategy.merge(strategy.trainable, strategy.frozen)["params"]
    after = strategy.merge(trainable, strategy.frozen)["params"]
    moved = [p for p, a, b in zip(leaf_paths(before), leaves_bytes(before), leaves_bytes(after)) if a != b]
    assert moved and all(p.startswith("interactions_0.radial_mlp") for p in moved), moved


@pytest.mark.slow
def test_finetune_on_phono3py_data_alone_with_validation_structures(tiny_bundle, emt_reference, tmp_path):
    """`finetune` with phono3py references only (no structures, no phonopy references) and validation
    structures: the strategy is built on the reference's own graph (this used to fail with an
    IndexError), every epoch trains, and the saved model differs from the base one."""
    import json

    from equitrain_jax.models.io import load_model
    from equitrain_jax.train import TrainConfig
    from equitrain_jax.train.finetune import finetune

    item = third_order_item_from_phono3py(emt_reference, "EMT Al")
    valid = displaced_supercells(item)[:2]
    finetune(tiny_bundle, [], valid, tmp_path / "run", strategy="lora", rank=2, phonon_batch_size=1,
             train_config=TrainConfig(epochs=2, learning_rate=1e-2, seed=0), phono3py=[(item, emt_reference)],
             third_order_config=ThirdOrderLossConfig(directions=1), check_anharmonicity=False, progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [entry["epoch"] for entry in history if "train_loss" in entry] == [1, 2]
    assert all(np.isfinite(entry["train_loss"]) and entry["train_loss"] > 0 for entry in history[1:])
    tuned = load_model(tmp_path / "run" / "model")
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(tuned.variables),
                                                          jax.tree_util.tree_leaves(tiny_bundle.variables)))


@pytest.mark.slow
def test_polar_phono3py_reference_and_model_carry_dft_born_charges(tiny_bundle):
    """phono3py's ZnTe example (benchmarks/data; Born charges and ε∞ in its YAML) reads with the
    NAC parameters ``phono3py.load`` finds there, and its κ(300 K) is phono3py.load's (with NAC, which
    moves it; 10×10×10 mesh); a model's exact fc3/fc2 on a polar template (B2 NiAl with Born charges
    ±1.5 e, our tiny alloy MACE) carry the template's parameters, atom for atom."""
    from pathlib import Path

    import phono3py

    from equitrain_jax.phonons.anharmonicity import model_phono3py
    from equitrain_jax.phonons.conductivity import kappa_summary, phono3py_with_displacements, run_thermal_conductivity

    path = Path(__file__).parents[2] / "benchmarks" / "data" / "ZnTe-PBEsol-phono3py" / "phono3py_params_ZnTe.yaml.xz"
    _, ours = read_third_order_reference(path)
    theirs = phono3py.load(path, symmetrize_fc=True, is_compact_fc=False, log_level=0)
    assert theirs.nac_params is not None
    for key in ("born", "dielectric", "factor"):
        np.testing.assert_allclose(ours.nac_params[key], theirs.nac_params[key], rtol=0, atol=1e-12)
    kappas = []
    for ph3 in (ours, theirs):
        run_thermal_conductivity(ph3, (10, 10, 10), temperatures=[300.0])
        kappas.append(kappa_summary(ph3)["kappa_W_per_mK"][0][0])
    ours.nac_params = None
    run_thermal_conductivity(ours, (10, 10, 10), temperatures=[300.0])
    without = kappa_summary(ours)["kappa_W_per_mK"][0][0]
    print(f"κ(300 K): ours {kappas[0]:.3f}, phono3py.load {kappas[1]:.3f}, without NAC {without:.3f} W/(m·K)")
    assert abs(kappas[0] / kappas[1] - 1) < 1e-3 < abs(without / kappas[1] - 1)

    atoms = bulk("NiAl", "cesiumchloride", a=2.9)
    template = phono3py_with_displacements(atoms, np.diag([2, 2, 2]))
    born = np.array([np.eye(3) * 1.5 * sign for sign in (1, -1)])
    template.nac_params = {"born": born, "dielectric": np.eye(3) * 8.0, "factor": 14.4}
    model = model_phono3py(Potential(tiny_bundle, dtype="float64"), template)
    symbols = list(model.primitive.symbols)
    np.testing.assert_allclose(model.nac_params["born"], born[[list(template.primitive.symbols).index(s) for s in symbols]])
    np.testing.assert_allclose(model.nac_params["dielectric"], np.eye(3) * 8.0)
