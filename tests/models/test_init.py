"""A model initialised from scratch (U matrices from e3nn-jax, random weights) is E(3)-equivariant."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from ase.build import bulk
from scipy.spatial.transform import Rotation

from equitrain_jax.data import atoms_to_graph, pad_to_bucket
from equitrain_jax.models import MACE, MACEConfig, energy_forces_stress
from equitrain_jax.potential import enable_float64


def test_scratch_model_is_equivariant_and_translation_invariant():
    enable_float64()
    config = MACEConfig(
        atomic_numbers=(6, 14),
        r_max=4.5,
        hidden_irreps="8x0e+8x1o+8x2e",
        atomic_energies=((-1.0, -2.0),),
        covalent_radii=(0.76, 1.11),
        avg_num_neighbors=4.0,
        interaction_first="RealAgnosticDensityInteractionBlock",
        interaction="RealAgnosticDensityResidualInteractionBlock",
        distance_transform="Agnesi",
        pair_repulsion=True,
    )
    model = MACE(config, param_dtype=jnp.float64)
    evaluate = jax.jit(functools.partial(energy_forces_stress, functools.partial(model.apply, method=MACE.node_energies)))
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True)
    atoms.rattle(0.1, seed=1)

    def outputs(structure, variables=None):
        graph = jax.tree_util.tree_map(jnp.asarray, pad_to_bucket(atoms_to_graph(structure, config.r_max, config.atomic_numbers)))
        if variables is None:
            variables = jax.jit(model.init)(jax.random.PRNGKey(0), graph)
        out = evaluate(variables, graph)
        return variables, float(out.energy[0]), np.asarray(out.forces[: len(structure)]), np.asarray(out.stress[0])

    variables, energy, forces, stress = outputs(atoms)
    assert np.abs(forces).max() > 1e-3
    rotation = Rotation.random(random_state=4).as_matrix() @ np.diag([1.0, 1.0, -1.0])  # improper
    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T + np.array([0.3, -1.2, 2.0])
    moved.cell = atoms.cell.array @ rotation.T
    _, energy2, forces2, stress2 = outputs(moved, variables)
    assert abs(energy2 - energy) < 1e-10 * abs(energy)
    np.testing.assert_allclose(forces2, forces @ rotation.T, atol=1e-10)
    np.testing.assert_allclose(stress2, rotation @ stress @ rotation.T, atol=1e-10)
