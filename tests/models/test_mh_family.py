"""MACE-MH-1's architecture (non-linear interaction blocks, agnostic product, edge irreps, six heads)
beyond parity: LoRA fine-tuning keeps the model E(3)-equivariant, and phonons from the analytic
Hessian equal phonopy's finite displacements of mace-torch's own calculator on the same weights.
4 channels with the reduced symmetric-contraction basis (built in seconds), float64.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import numpy as np
import pytest
from ase.build import bulk

from common import ALLOY_ELEMENTS, alloy_cell, assert_close, emt_cells, random_rotation, rotated

torch = pytest.importorskip("torch")
pytest.importorskip("mace")

from equitrain_jax.adapters import lora_finetune  # noqa: E402
from equitrain_jax.convert import convert_model  # noqa: E402
from equitrain_jax.convert.architectures import ARCHITECTURES, build_mace_torch  # noqa: E402
from equitrain_jax.models.io import ModelBundle  # noqa: E402
from equitrain_jax.phonons import phonopy_from_calculator, phonopy_from_potential  # noqa: E402
from equitrain_jax.potential import Potential, enable_float64  # noqa: E402
from equitrain_jax.train import TrainConfig, fit, labelled_batches  # noqa: E402

MH1 = dataclasses.replace(ARCHITECTURES["mh1"], use_reduced_cg=True)
HEAD = "omat_pbe"


@pytest.mark.slow
def test_lora_finetune_keeps_mh1_equivariant():
    """LoRA (rank 2, default targets: the vectors and scalars of the non-linear blocks stay frozen)
    trained on EMT labels for a few epochs: the loss falls, and the merged model's energy is
    invariant and its forces and stress rotate with a rotated, reflected cell."""
    enable_float64()
    module = build_mace_torch(MH1, atomic_numbers=ALLOY_ELEMENTS, channels=4, seed=7)
    bundle = ModelBundle(*convert_model(module))
    head = bundle.config.heads.index(HEAD)
    train = labelled_batches(emt_cells(8, seed=1), bundle.config.r_max, ALLOY_ELEMENTS, batch_size=4, head=head)
    strategy = lora_finetune(bundle.variables, rank=2, key=jax.random.PRNGKey(1))
    result = fit(bundle.module(np.float64), strategy, train, train, TrainConfig(epochs=6, learning_rate=1e-2))
    losses = [epoch["valid_loss"] for epoch in result.history]
    assert losses[-1] < losses[0], losses
    merged = ModelBundle(bundle.config, strategy.merge(result.trainable, strategy.frozen))
    changed = jax.tree_util.tree_map(lambda a, b: float(np.abs(np.asarray(a) - b).max()),
                                     merged.variables["params"], bundle.variables["params"])
    assert max(jax.tree_util.tree_leaves(changed)) > 1e-4, "LoRA changed no weight"

    potential = Potential(merged, dtype="float64", head=HEAD)
    cell = alloy_cell()
    for proper in (True, False):
        rotation = random_rotation(seed=3, proper=proper)
        ref, out = potential.evaluate([cell, rotated(cell, rotation)])
        assert np.abs(ref["forces"]).max() > 1e-3
        assert abs(out["energy"] - ref["energy"]) <= 1e-9 * abs(ref["energy"])
        assert_close(out["forces"], ref["forces"] @ rotation.T, "forces")
        assert_close(out["stress"], rotation @ ref["stress"] @ rotation.T, "stress")


def mace_torch_calculator(module, head: str):
    from mace.calculators import MACECalculator

    previous = torch.get_default_dtype()
    try:
        return MACECalculator(models=module, default_dtype="float64", head=head)
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.slow
def test_mh1_phonons_match_phonopy_finite_displacements_of_mace_torch():
    """Diamond Si, 2×2×2 supercell: force constants from our analytic Hessian against phonopy's ±1e-3 Å
    displacements with mace-torch's calculator (FD error ~1e-6 relative), and the mesh frequencies."""
    enable_float64()
    module = build_mace_torch(MH1, atomic_numbers=(1, 6, 8, 14), channels=4, seed=8)
    potential = Potential(ModelBundle(*convert_model(module)), dtype="float64", head=HEAD)
    unitcell = bulk("Si", "diamond", a=5.43)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = phonopy_from_potential(potential, unitcell, 2, symmetrize=False)
            reference = phonopy_from_calculator(mace_torch_calculator(module, HEAD), unitcell, 2, distance=1e-3,
                                                plusminus=True, symmetrize=False)
    finally:
        torch.set_default_dtype(previous)
    scale = np.abs(reference.force_constants).max()
    assert scale > 0.01, scale  # eV/Å²: this random 4-channel model is soft (0.065), but not flat
    np.testing.assert_allclose(ours.force_constants, reference.force_constants, rtol=0, atol=1e-5 * scale)
    ours.run_mesh((6, 6, 6), is_gamma_center=True)
    reference.run_mesh((6, 6, 6), is_gamma_center=True)
    frequencies = reference.get_mesh_dict()["frequencies"]
    assert np.abs(frequencies).max() > 1.0
    np.testing.assert_allclose(ours.get_mesh_dict()["frequencies"], frequencies, rtol=0, atol=1e-3)
