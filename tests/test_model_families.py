"""Fine-tuning and phonons on the second model family: a small SevenNet-architecture model with
fresh weights goes through LoRA and multi-head fine-tuning (EMT as the reference) and the
analytic-Hessian phonon path (phonopy finite displacements of the same model as the reference)."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from equitrain_jax.adapters import lora_finetune
from equitrain_jax.adapters.heads import add_head
from equitrain_jax.calculator import Calculator
from equitrain_jax.data import atoms_to_graph, padded_device_graph
from equitrain_jax.models.sevennet import SevenNetConfig
from equitrain_jax.models.io import ModelBundle, load_model
from equitrain_jax.phonons import phonopy_from_calculator, phonopy_from_potential
from equitrain_jax.potential import Potential
from equitrain_jax.train import TrainConfig, fit, labelled_batches

ELEMENTS = (13, 28, 29)


@pytest.fixture(scope="module")
def sevennet():
    """Two interactions, 8 scalar / 4 vector / 2 rank-2 channels, random weights (float64)."""
    config = SevenNetConfig(
        atomic_numbers=ELEMENTS, node_irreps=("8x0e", "8x0e+4x1e+2x2e", "8x0e"), conv_denominators=(4.0, 4.0),
        scale=(0.5, 0.6, 0.7), shift=(-3.0, -4.5, -3.5), r_max=4.5, cutoff_on=4.0, radial_mlp=(16, 16), readout_hidden=4,
    )
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    graph = padded_device_graph(atoms_to_graph(cell, config.r_max, ELEMENTS))
    module = ModelBundle(config, {}).module(np.float64)
    return ModelBundle(config, jax.tree_util.tree_map(np.asarray, module.init(jax.random.PRNGKey(0), graph)))


def emt_cells(count, seed):
    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.numbers = rng.choice(ELEMENTS, size=len(atoms))
        atoms.rattle(0.1, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.get_forces(), atoms.get_stress()
        cells.append(atoms)
    return cells


def test_lora_finetune_of_sevennet_lowers_held_out_force_error(sevennet):
    train, held_out = emt_cells(8, seed=1), emt_cells(4, seed=2)
    batches = [labelled_batches(s, sevennet.config.r_max, ELEMENTS, batch_size=4) for s in (train, held_out)]
    strategy = lora_finetune(sevennet.variables, rank=4, key=jax.random.PRNGKey(1))
    result = fit(sevennet.module(np.float64), strategy, *batches, TrainConfig(epochs=20, learning_rate=3e-2))
    merged = ModelBundle(sevennet.config, strategy.merge(result.trainable, strategy.frozen))
    emt = np.concatenate([a.get_forces() for a in held_out])

    def mae(bundle):
        return 1e3 * np.abs(np.concatenate([o["forces"] for o in Potential(bundle).evaluate(held_out)]) - emt).mean()

    before, after = mae(sevennet), mae(merged)
    np.testing.assert_allclose(result.history[0]["forces_mae_mev_per_a"], before, rtol=1e-8)
    assert after < before / 2, (before, after)


def test_sevennet_force_constants_match_phonopy_finite_displacements(sevennet):
    potential = Potential(sevennet, dtype="float64")
    unitcell = bulk("Al", "fcc", a=4.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = phonopy_from_potential(potential, unitcell, 3, symmetrize=False)
        reference = phonopy_from_calculator(Calculator(potential), unitcell, 3, distance=1e-3, plusminus=True,
                                            symmetrize=False)
    scale = np.abs(reference.force_constants).max()
    assert scale > 0.01
    np.testing.assert_allclose(ours.force_constants, reference.force_constants, rtol=0, atol=1e-5 * scale)
    ours.run_mesh((6, 6, 6), is_gamma_center=True)
    reference.run_mesh((6, 6, 6), is_gamma_center=True)
    np.testing.assert_allclose(ours.get_mesh_dict()["frequencies"], reference.get_mesh_dict()["frequencies"], atol=1e-3)


def test_sevennet_new_head_copies_the_old_one_and_selects_its_own_shift(sevennet):
    """add_head on SevenNet: the copy predicts exactly what the old head predicts, which is
    unchanged.  Moving the new head's per-element shift by Δ_Z moves its energies by Σ_atoms Δ_Z
    and leaves its forces alone, while the old head keeps its values (each structure uses its own
    head's readout and shift).  A config whose shift does not match its heads is refused."""
    cells = emt_cells(3, seed=7)
    before = Potential(sevennet).evaluate(cells)
    config, variables = add_head(sevennet.config, sevennet.variables, "new")
    assert config.heads == ("Default", "new") and "readouts_1" in variables["params"]
    two = ModelBundle(config, variables)
    for head in (0, 1):
        for out, ref in zip(Potential(two, head=head).evaluate(cells), before):
            np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-13)
            np.testing.assert_allclose(out["forces"], ref["forces"], atol=1e-12)
    delta = np.array([0.25, -0.5, 1.0])
    scale, shift = config.head_scale_shift()
    shift[1] += delta
    moved = ModelBundle(config.with_head_scale_shift(scale, shift), variables)
    for atoms, out, ref in zip(cells, Potential(moved, head="new").evaluate(cells), before):
        expected = ref["energy"] + sum(delta[ELEMENTS.index(z)] for z in atoms.numbers)
        np.testing.assert_allclose(out["energy"], expected, rtol=1e-13)
        np.testing.assert_allclose(out["forces"], ref["forces"], atol=1e-12)
    for out, ref in zip(Potential(moved, head="Default").evaluate(cells), before):
        np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-13)
    with pytest.raises(ValueError, match=r"shift has shape \[3\]; it needs one value per element \(3\) for each of the 2 heads"):
        dataclasses.replace(config, shift=sevennet.config.shift)


def test_multihead_finetune_of_sevennet(sevennet, tmp_path):
    """Multi-head replay on SevenNet: EMT targets train the new ``Default`` head (held-out force
    error at least halved) while replay cells labelled by the pretrained model keep ``pt_head``
    close to its own predictions; the saved two-head model loads back."""
    from equitrain_jax.train.finetune import finetune

    target, held_out, replay = emt_cells(8, seed=60), emt_cells(3, seed=61), emt_cells(4, seed=62)
    for atoms, out in zip(replay, Potential(sevennet).evaluate(replay)):
        atoms.calc = None
        atoms.info["energy"], atoms.arrays["forces"], atoms.info["stress"] = out["energy"], out["forces"], out["stress"]
    finetune(sevennet, target, held_out, tmp_path, strategy="multihead", replay=replay,
             train_config=TrainConfig(epochs=20, learning_rate=3e-2), batch_size=4, dtype="float64", progress=False)
    tuned = load_model(tmp_path / "model")
    assert tuned.config.heads == ("pt_head", "Default")
    emt = np.concatenate([a.get_forces() for a in held_out])
    start = 1e3 * np.abs(np.concatenate([o["forces"] for o in Potential(sevennet).evaluate(held_out)]) - emt).mean()
    after = 1e3 * np.abs(np.concatenate([o["forces"] for o in Potential(tuned).evaluate(held_out)]) - emt).mean()
    assert after < start / 2, (start, after)
    drift = 1e3 * np.abs(np.concatenate([o["forces"] for o in Potential(tuned, head="pt_head").evaluate(replay)])
                         - np.concatenate([a.arrays["forces"] for a in replay])).mean()
    assert drift < start / 5, (drift, start)
