"""A small random-weight SevenNet-architecture model and a silicon cell for the third-order and
thermal-conductivity tests (built once per session, so its compiled derivatives are shared)."""

from __future__ import annotations

import functools

import jax
import numpy as np
from ase import Atoms
from ase.build import bulk

from equitrain_jax.data import atoms_to_graph, pad_to_bucket
from equitrain_jax.models.sevennet import SevenNetConfig
from equitrain_jax.models.io import ModelBundle
from equitrain_jax.potential import Potential, enable_float64
from equitrain_jax.data import device_arrays as to_device

ELEMENTS = (8, 12, 14)  # O, Mg, Si


LATTICE_CONSTANT = 5.6
"""Å; neighbour shells at 2.42, 3.96 and 4.64 Å."""


def silicon() -> Atoms:
    """Conventional diamond Si, 8 atoms, a = `LATTICE_CONSTANT`."""
    return bulk("Si", "diamond", a=LATTICE_CONSTANT, cubic=True)


@functools.lru_cache(maxsize=None)
def kappa_potential() -> Potential:
    """Two interactions, 8 scalar / 4 vector / 2 rank-2 channels, float64, seed 6: at a = 5.6 Å diamond
    Si has no imaginary modes (0.46–6.3 THz on phonopy's 8³ mesh of the 8-atom cell) and strong
    third derivatives (12 eV/Å³; of 12 seeds and a = 5.3, 5.43, 5.6 Å, the only stable case above
    2 eV/Å³).  r_max = 4.2 Å with the switching from 3.6 Å, so no Si neighbour shell lies within 0.2 Å
    of a place where the cutoff function is not smooth (its second derivative jumps at both ends)."""
    enable_float64()
    config = SevenNetConfig(
        atomic_numbers=ELEMENTS, node_irreps=("8x0e", "8x0e+4x1e+2x2e", "8x0e"), conv_denominators=(4.0, 4.0),
        scale=(0.5, 0.6, 0.7), shift=(-3.0, -4.5, -3.5), r_max=4.2, cutoff_on=3.6, radial_mlp=(16, 16),
        readout_hidden=4,
    )
    graph = to_device(pad_to_bucket(atoms_to_graph(silicon(), config.r_max, ELEMENTS)))
    module = ModelBundle(config, {}).module(np.float64)
    variables = jax.tree_util.tree_map(np.asarray, jax.jit(module.init)(jax.random.PRNGKey(6), graph))  # 2x faster
    return Potential(ModelBundle(config, variables), dtype="float64")
