"""Analytic Hessians against finite differences of the model's own forces, and third derivatives
against finite differences of Hessian-vector products (float64)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk
from ase.constraints import FixAtoms, FixBondLength

from phonon_models import hessian_potential, phonon_potential, rattled_sic

from equitrain_jax.calculator import Calculator
from equitrain_jax.data import batch_graphs
from equitrain_jax.models import quantities
from equitrain_jax.phonons.hessian import (
    free_atom_indices,
    hessian,
    hessian_rows,
    hessian_vector_products,
    partial_hessian,
    vibrations_data,
)

STEP = 2e-3  # Å
STENCIL = {-2: 1.0 / 12, -1: -8.0 / 12, 1: 8.0 / 12, 2: -1.0 / 12}  # 4th-order first derivative


def finite_difference_hessian(potential, atoms, step=STEP) -> np.ndarray:
    """H[k, j] = −∂F_j/∂r_k by a 4th-order central stencil of forces, [3N, 3N] eV/Å².

    Forces come from `Potential.evaluate` (first derivatives only, neighbour list rebuilt at
    every displaced structure), so nothing here uses a second derivative.
    """
    n = len(atoms)
    displaced = []
    for k in range(3 * n):
        for offset in STENCIL:
            moved = atoms.copy()
            moved.positions[k // 3, k % 3] += offset * step
            displaced.append(moved)
    forces = np.array([out["forces"] for out in potential.evaluate(displaced, batch_size=1)])
    forces = forces.reshape(3 * n, len(STENCIL), 3 * n)
    weights = np.array(list(STENCIL.values()))
    return -np.einsum("s,ksj->kj", weights, forces) / step


@pytest.fixture(scope="module")
def system():
    potential = hessian_potential()
    atoms = rattled_sic()
    analytic = hessian(potential, atoms)  # default chunk: 24 rows, two calls
    return potential, atoms, analytic, finite_difference_hessian(potential, atoms)


def test_hessian_equals_finite_differences_of_forces(system):
    """Forward-over-reverse Hessian against a 4th-order stencil of forces; h = 2e-3 Å gives a
    truncation error ~h⁴ and a rounding error ~1e-13/h: measured 1.4e-9 eV/Å² for max |H| = 20 eV/Å²
    (7e-11 relative); the tolerance is 1e-9 of max |H|."""
    potential, atoms, analytic, reference = system
    n = len(atoms)
    scale = np.abs(reference).max()
    assert scale > 0.5, f"force constants too small ({scale:.3g} eV/Å²) to test anything"
    np.testing.assert_allclose(analytic.reshape(3 * n, 3 * n), reference, rtol=0, atol=1e-9 * scale)


def test_hessian_rows_and_calculator_agree_with_finite_differences(system):
    """Selected rows, in any order, with a chunk size that leaves a padded last chunk (24 rows in
    chunks of 9), and Calculator.get_hessian ([3N, 3N])."""
    potential, atoms, _, reference = system
    n = len(atoms)
    reference = reference.reshape(n, 3, n, 3)
    scale = np.abs(reference).max()
    chosen = [5, 0, 11, 2, 15, 9, 13, 1]
    rows = hessian_rows(potential, atoms, chosen, chunk_size=9)
    assert rows.shape == (len(chosen), 3, n, 3)
    np.testing.assert_allclose(rows, reference[chosen], rtol=0, atol=1e-9 * scale)
    calc = Calculator(potential)
    from_calculator = calc.get_hessian(atoms)
    assert from_calculator.shape == (3 * n, 3 * n)
    np.testing.assert_allclose(from_calculator, reference.reshape(3 * n, 3 * n), rtol=0, atol=1e-9 * scale)


def test_hessian_symmetric_and_translation_invariant(system):
    """Before any symmetrisation: H = Hᵀ (mixed partials) and Σ_j H[i, :, j, :] = 0 (a rigid
    translation leaves the energy unchanged), both to rounding (1e-8 eV/Å²)."""
    _, atoms, analytic, _ = system
    n = len(atoms)
    scale = np.abs(analytic).max()
    flat = analytic.reshape(3 * n, 3 * n)
    assert np.abs(flat - flat.T).max() < 1e-10 * max(scale, 1.0)
    assert np.abs(analytic.sum(axis=2)).max() < 1e-8
    assert np.abs(analytic.sum(axis=0)).max() < 1e-8


def batched_graph(potential, structures):
    """One padded device graph holding all ``structures`` (a batch, as a train step sees it)."""
    return potential.device_graph(batch_graphs([potential.graph(atoms) for atoms in structures]))


def test_pure_hessian_vector_product_on_a_batch(system):
    """`quantities.hessian_vector_product` on a padded graph of two structures (as a train step
    sees a batch): each structure's block of H·v is its own product, against the
    finite-difference Hessian, and padding nodes get none."""
    potential, atoms, _, reference = system
    n = len(atoms)
    graph = batched_graph(potential, [atoms, atoms])
    positions = graph.nodes["positions"]
    tangent = np.zeros(positions.shape)
    tangent[: 2 * n] = np.random.default_rng(5).normal(size=(2 * n, 3))
    hvp = jax.jit(functools.partial(quantities.hessian_vector_product, potential.node_energy_fn))
    product = np.asarray(hvp(potential.variables, graph, positions, jnp.asarray(tangent)))
    for block in (slice(0, n), slice(n, 2 * n)):
        expected = (reference @ tangent[block].reshape(-1)).reshape(n, 3)
        np.testing.assert_allclose(product[block], expected, rtol=0, atol=1e-9 * np.abs(expected).max())
    assert np.all(product[2 * n :] == 0.0)


@pytest.mark.slow
def test_hessian_vector_product_is_differentiable_in_the_parameters(system):
    """A Hessian-supervised loss, Σ (H·v)·w, differentiated with respect to the model's parameters
    inside jit, against a 4th-order central difference of the loss along a random parameter
    direction (relative agreement 1e-7)."""
    potential, atoms, _, _ = system
    graph = potential.device_graph(potential.graph(atoms))
    positions = graph.nodes["positions"]
    rng = np.random.default_rng(7)
    tangent, weights = (np.zeros(positions.shape) for _ in range(2))
    tangent[: len(atoms)], weights[: len(atoms)] = rng.normal(size=(2, len(atoms), 3))
    hvp = functools.partial(quantities.hessian_vector_product, potential.node_energy_fn)

    def loss(params):
        variables = {**potential.variables, "params": params}
        return jnp.sum(hvp(variables, graph, positions, jnp.asarray(tangent)) * weights)

    params = potential.variables["params"]
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
    direction = treedef.unflatten([jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])
    gradient = jax.jit(jax.grad(loss))(params)
    analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree_util.tree_leaves(gradient), jax.tree_util.tree_leaves(direction)))
    step = 1e-4
    moved = jax.jit(lambda t: loss(jax.tree_util.tree_map(lambda p, d: p + t * d, params, direction)))
    numeric = (8 * (moved(step) - moved(-step)) - (moved(2 * step) - moved(-2 * step))) / (12 * step)
    assert abs(analytic - float(numeric)) <= 1e-7 * abs(analytic), (analytic, float(numeric))


def test_third_order_product_matches_finite_differences_of_hessian_vector_products():
    """Σ ∂³E/∂R_i∂R_j∂R_k v_j w_k as `jax.jvp` of H·v against a 4th-order central difference of
    H(R + t w)·v in t (same neighbour list), h = 1e-3 Å: stencil error ~h⁴·|∂⁵E| and rounding
    ~1e-13/h, far below the 1e-7 (relative to max |result|) tolerance.  The small mp0a-small
    model on a rattled 8-atom rocksalt cell keeps the two compilations cheap."""
    potential = phonon_potential()
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    atoms.rattle(0.05, seed=8)
    graph = potential.device_graph(potential.graph(atoms))
    positions = graph.nodes["positions"]
    rng = np.random.default_rng(6)
    v, w = (np.zeros(positions.shape) for _ in range(2))
    v[: len(atoms)], w[: len(atoms)] = rng.normal(size=(2, len(atoms), 3))
    v, w = jnp.asarray(v), jnp.asarray(w)
    third = jax.jit(functools.partial(quantities.third_order_product, potential.node_energy_fn))
    analytic = np.asarray(third(potential.variables, graph, positions, v, w))
    hvp = jax.jit(functools.partial(quantities.hessian_vector_product, potential.node_energy_fn))
    step = 1e-3
    at = {k: np.asarray(hvp(potential.variables, graph, positions + k * step * w, v)) for k in (-2, -1, 1, 2)}
    numeric = (8 * (at[1] - at[-1]) - (at[2] - at[-2])) / (12 * step)
    scale = np.abs(analytic).max()
    assert scale > 0.1, f"third derivatives too small ({scale:.3g} eV/Å³) to test anything"
    np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-7 * scale)


def test_hessian_vector_products_along_arbitrary_patterns(system):
    """H·v for dense random patterns (5 of them in chunks of 2, so the last chunk is padded)
    against the finite-difference Hessian contracted with v, and bad shapes named."""
    potential, atoms, _, reference = system
    n = len(atoms)
    vectors = np.random.default_rng(3).normal(size=(5, n, 3))
    products = hessian_vector_products(potential, atoms, vectors, chunk_size=2)
    expected = np.einsum("kj,vj->vk", reference, vectors.reshape(5, 3 * n)).reshape(5, n, 3)
    np.testing.assert_allclose(products, expected, rtol=0, atol=1e-9 * np.abs(expected).max())
    with pytest.raises(ValueError, match=r"shape \[K, 16, 3\]"):
        hessian_vector_products(potential, atoms, vectors[:, :4])


def test_partial_hessian_of_the_free_atoms(system):
    """Under ASE's FixAtoms, `partial_hessian` takes the free atoms' rows and columns only: against
    the finite-difference Hessian's block of those atoms (free atoms displaced, forces on free
    atoms) and the analytic full Hessian's block, the ASE `VibrationsData` built from it, and bad
    selections named.  Eight free atoms: 24 rows, the fixture's compiled chunk shape."""
    potential, atoms, analytic, reference = system
    n = len(atoms)
    reference = reference.reshape(n, 3, n, 3)
    scale = np.abs(reference).max()
    constrained = atoms.copy()
    fixed = [0, 2, 3, 6, 9, 10, 12, 15]
    constrained.set_constraint(FixAtoms(indices=fixed))
    free = free_atom_indices(constrained)
    assert free.tolist() == [1, 4, 5, 7, 8, 11, 13, 14]
    block = partial_hessian(potential, constrained)
    assert block.shape == (8, 3, 8, 3)
    np.testing.assert_allclose(block, reference[np.ix_(free, range(3), free, range(3))], rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(block, analytic[np.ix_(free, range(3), free, range(3))], rtol=0, atol=1e-12 * scale)
    vibrations = vibrations_data(potential, constrained)
    assert vibrations.get_indices().tolist() == free.tolist()
    np.testing.assert_array_equal(vibrations.get_hessian(), block)
    chosen = free[::-1]  # explicit indices, in their own order, whatever the constraints say
    np.testing.assert_allclose(
        partial_hessian(potential, constrained, chosen),
        reference[np.ix_(chosen, range(3), chosen, range(3))],
        rtol=0,
        atol=1e-9 * scale,
    )

    with pytest.raises(ValueError, match="every atom is fixed"):
        partial_hessian(potential, _all_fixed(atoms))
    with pytest.raises(ValueError, match="repeat"):
        partial_hessian(potential, atoms, [1, 1])
    with pytest.raises(ValueError, match="out of range"):
        partial_hessian(potential, atoms, [1, n])
    with pytest.raises(ValueError, match=r"\[-1, 2\] out of range"):
        partial_hessian(potential, atoms, [-1, 2])
    with pytest.raises(ValueError, match="indices is empty"):
        partial_hessian(potential, atoms, [])


def test_free_atoms_follow_ase_and_ignore_other_constraints():
    """`free_atom_indices` is ASE's rule: FixAtoms removes atoms, a bond constraint does not."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.set_constraint([FixAtoms(indices=[0, 5]), FixBondLength(1, 2)])
    assert free_atom_indices(atoms).tolist() == [1, 2, 3, 4, 6, 7]
    assert free_atom_indices(bulk("Si", "diamond", a=5.43)).tolist() == [0, 1]


def _all_fixed(atoms):
    fixed = atoms.copy()
    fixed.set_constraint(FixAtoms(indices=range(len(atoms))))
    return fixed
