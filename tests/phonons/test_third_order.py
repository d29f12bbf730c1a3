"""Exact third derivatives (jvp of Hessian-vector products) against finite differences of the model's
own Hessian-vector products and forces, and against the physics every third derivative obeys."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from phonopy.structure.symmetry import Symmetry

from third_order_models import kappa_potential, silicon

from equitrain_jax.calculator import Calculator
from equitrain_jax.phonons import hessian_vector_products
from equitrain_jax.phonons.bridge import ase_to_phonopy
from equitrain_jax.phonons.third_order import (
    _energy_fn,
    displaced_forces,
    second_order_forces,
    third_order_product,
    third_order_products,
    third_order_rows,
)


def rattled_silicon():
    atoms = silicon()
    atoms.rattle(0.05, seed=3)
    return atoms


def random_directions(n_atoms, count, seed):
    return np.random.default_rng(seed).normal(size=(count, n_atoms, 3))


def test_jvp_of_hvp_equals_finite_differences_of_hvps():
    """∂³E[u, v, ·] against (H(r + hv)·u − H(r − hv)·u)/2h from `hessian_vector_products` at displaced
    structures (neighbour list rebuilt at each): the error is the h² term, so halving h quarters it.
    Measured on rattled 8-atom Si, max |∂³E[u, v]| 93 eV/Å: errors 5.3e-4 (h = 5e-4 Å) and 1.3e-4 (2.5e-4 Å)."""
    potential, atoms = kappa_potential(), rattled_silicon()
    u, v = random_directions(len(atoms), 3, seed=0), random_directions(len(atoms), 3, seed=1)
    exact = third_order_products(potential, atoms, u, v)
    scale = np.abs(exact).max()
    assert scale > 1.0, f"third derivatives too small ({scale:.3g}) to test anything"
    errors = []
    for step in (5e-4, 2.5e-4):
        plus, minus = atoms.copy(), atoms.copy()
        central = []
        for k in range(len(u)):
            plus.positions = atoms.positions + step * v[k]
            minus.positions = atoms.positions - step * v[k]
            difference = hessian_vector_products(potential, plus, u[k : k + 1]) - hessian_vector_products(
                potential, minus, u[k : k + 1]
            )
            central.append(difference[0] / (2 * step))
        errors.append(np.abs(exact - np.array(central)).max())
    assert errors[1] < 2e-5 * scale, errors
    assert 3.2 < errors[0] / errors[1] < 4.8, errors  # second order in h


def test_second_order_forces_against_the_models_forces():
    """F(r + su) to second order against the model's forces at the displaced structure (ASE
    calculator, neighbour list rebuilt): the error is the cubic term, so halving s divides it by 8.
    Measured: 3.4e-4 (s = 0.02 Å) and 4.3e-5 eV/Å (0.01 Å), ratio 7.9."""
    potential, atoms = kappa_potential(), rattled_silicon()
    direction = random_directions(len(atoms), 1, seed=2)[0]
    direction /= np.abs(direction).max()
    calculator = Calculator(potential)
    errors = []
    for size in (0.02, 0.01):
        moved = atoms.copy()
        moved.positions += size * direction
        moved.calc = calculator
        predicted = displaced_forces(potential, atoms, size * direction[None])[0]
        errors.append(np.abs(predicted - moved.get_forces()).max())
    assert errors[1] < 1e-4, errors
    assert 6.0 < errors[0] / errors[1] < 10.0, errors  # third order in s


@pytest.fixture(scope="module")
def full_tensor():
    """Every third derivative ∂³E/∂r_a ∂r_b ∂r_c of perfect 8-atom Si, [24, 24, 24] eV/Å³, from the
    rows along each unit vector (`third_order_rows`, 576 nested jvps)."""
    potential, atoms = kappa_potential(), silicon()
    n = 3 * len(atoms)
    rows = np.stack([third_order_rows(potential, atoms, unit.reshape(-1, 3)) for unit in np.eye(n)])
    return atoms, rows.transpose(0, 1, 3, 2, 4).reshape(n, n, n)  # [a, (j, β), (k, γ)]


def test_third_derivatives_are_symmetric_under_index_permutations(full_tensor):
    """Mixed partial derivatives commute: Φ_abc is the same for all six orders of a, b, c (to rounding),
    although the three slots are computed differently (outer jvp, inner jvp, gradient)."""
    _, phi = full_tensor
    scale = np.abs(phi).max()
    assert scale > 1.0
    for axes in ((1, 0, 2), (0, 2, 1), (2, 1, 0), (1, 2, 0), (2, 0, 1)):
        np.testing.assert_allclose(phi.transpose(axes), phi, rtol=0, atol=1e-11 * scale)


def test_third_derivatives_are_translation_invariant(full_tensor):
    """A rigid translation leaves the energy unchanged: Σ_k Φ[iα, jβ, kγ] = 0 for each i, α, j, β, γ."""
    atoms, phi = full_tensor
    n = len(atoms)
    summed = phi.reshape(3 * n, 3 * n, n, 3).sum(axis=2)
    assert np.abs(summed).max() < 1e-11 * np.abs(phi).max()


def test_third_derivatives_obey_the_crystal_symmetry(full_tensor):
    """For each of the 192 space-group operations (R, t) of diamond Si in the conventional cell (spglib,
    via phonopy), with atom map i → g(i): Φ[g(i), g(j), g(k)] = R⊗R⊗R · Φ[i, j, k] (Cartesian R)."""
    atoms, phi = full_tensor
    n = len(atoms)
    phi = phi.reshape(n, 3, n, 3, n, 3).transpose(0, 2, 4, 1, 3, 5)  # [i, j, k, α, β, γ]
    symmetry = Symmetry(ase_to_phonopy(atoms), symprec=1e-5)
    rotations = symmetry.symmetry_operations["rotations"]
    assert len(rotations) == 192
    lattice = atoms.cell.array.T
    scale = np.abs(phi).max()
    for rotation, mapping in zip(rotations, symmetry.atomic_permutations):
        cartesian = lattice @ rotation @ np.linalg.inv(lattice)
        rotated = np.einsum("ad,be,cf,ijkdef->ijkabc", cartesian, cartesian, cartesian, phi)
        moved = np.empty_like(phi)
        moved[np.ix_(mapping, mapping, mapping)] = rotated
        np.testing.assert_allclose(moved, phi, rtol=0, atol=1e-11 * scale)


@pytest.mark.slow
def test_pure_function_composes_with_jit():
    """`third_order_product` of the private energy function, jitted, equals the batched product, and
    `second_order_forces` at zero displacement are the forces."""
    potential, atoms = kappa_potential(), rattled_silicon()
    energy, args, positions = _energy_fn(potential, atoms)
    u, v = (jnp.asarray(x[0]) for x in (random_directions(len(atoms), 1, 4), random_directions(len(atoms), 1, 5)))

    @jax.jit
    def product(args, positions, u, v):
        return third_order_product(lambda r: energy(*args, r), positions, u, v)

    expected = third_order_products(potential, atoms, np.asarray(u)[None], np.asarray(v)[None])[0]
    np.testing.assert_allclose(product(args, positions, u, v), expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    forces = second_order_forces(lambda r: energy(*args, r), positions, jnp.zeros_like(positions))
    np.testing.assert_allclose(forces, potential.evaluate([atoms])[0]["forces"], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_gradient_through_the_third_derivative_with_respect_to_parameters():
    """Issue 20 trains on third derivatives: d/dθ Σ (∂³E[u, v] · w) by reverse mode through the nested
    jvps, against a central difference along a random parameter direction."""
    potential, atoms = kappa_potential(), rattled_silicon()
    energy, (variables, graph), positions = _energy_fn(potential, atoms)
    u, v, w = (jnp.asarray(x[0]) for x in (random_directions(len(atoms), 1, s) for s in (6, 7, 8)))

    def loss(variables):
        return jnp.sum(third_order_product(lambda r: energy(variables, graph, r), positions, u, v) * w)

    gradient = jax.jit(jax.grad(loss))(variables)
    leaves, treedef = jax.tree_util.tree_flatten(variables)
    rng = np.random.default_rng(9)
    direction = [rng.normal(size=np.shape(x)) if jnp.issubdtype(x.dtype, jnp.floating) else np.zeros(np.shape(x))
                 for x in leaves]
    directional = sum(np.sum(np.asarray(g) * d) for g, d in zip(jax.tree_util.tree_leaves(gradient), direction))
    step = 1e-5

    def shifted(sign):
        return jax.tree_util.tree_unflatten(treedef, [x + sign * step * d if jnp.issubdtype(x.dtype, jnp.floating)
                                                      else x for x, d in zip(leaves, direction)])

    central = (float(jax.jit(loss)(shifted(1))) - float(jax.jit(loss)(shifted(-1)))) / (2 * step)
    np.testing.assert_allclose(directional, central, rtol=1e-6)
