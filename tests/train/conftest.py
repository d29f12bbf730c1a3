"""A small converted MACE-MP medium model (8 channels) on Al, Ni, Cu and EMT-labelled alloy cells."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from ase.build import bulk
from conftest import converted_bundle
from ase.calculators.emt import EMT

from equitrain_jax.data import atoms_to_graph, pad_to_bucket
from equitrain_jax.models.config import MACEConfig
from equitrain_jax.models.io import ModelBundle
from equitrain_jax.potential import enable_float64

pytest.importorskip("torch")
pytest.importorskip("mace")

ELEMENTS = (13, 28, 29)


@pytest.fixture(scope="session")
def bundle():
    return converted_bundle("mp0a-medium", ELEMENTS, seed=1)


def tiny_mace(elements=ELEMENTS, seed: int = 0) -> ModelBundle:
    """One interaction, 4 scalar channels, correlation 2, random weights (float64): a MACE that
    compiles in seconds, for tests of the training machinery rather than of the model."""
    enable_float64()
    config = MACEConfig(
        atomic_numbers=tuple(elements), r_max=4.0, num_bessel=4, max_ell=1, hidden_irreps="4x0e",
        num_interactions=1, correlation=(2,), readout_mlp_channels=4, radial_mlp=(8,), avg_num_neighbors=8.0,
        atomic_energies=(tuple(-3.0 - 0.5 * i for i in range(len(elements))),),
    )
    graph = pad_to_bucket(atoms_to_graph(bulk("Cu", "fcc", a=3.6, cubic=True), config.r_max, config.atomic_numbers))
    variables = jax.jit(ModelBundle(config, {}).module(np.float64).init)(jax.random.PRNGKey(seed), graph)
    return ModelBundle(config, jax.tree_util.tree_map(np.asarray, variables))


@pytest.fixture(scope="session")
def tiny_bundle():
    return tiny_mace()


def emt_cells(count: int, seed: int) -> list:
    """Rattled, strained 4-atom fcc cells of random Al/Ni/Cu occupation with EMT labels
    attached as a finished calculator (energy eV, forces eV/Å, stress eV/Å³)."""
    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.numbers = rng.choice(ELEMENTS, size=len(atoms))
        atoms.set_cell(atoms.cell * rng.uniform(0.98, 1.04), scale_atoms=True)
        atoms.rattle(0.1, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.get_stress()
        atoms.get_forces()
        cells.append(atoms)
    return cells
