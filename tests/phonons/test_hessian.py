"""Analytic Hessians against finite differences of the model's own forces (float64)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from phonon_models import hessian_potential, rattled_sic

from equitrain_jax.calculator import Calculator
from equitrain_jax.phonons.hessian import energy_of_positions, hessian, hessian_rows, hessian_vector_products

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


def test_energy_of_positions_gives_model_energy_and_forces(system):
    """fn(positions0) is the model's energy and −∇fn its forces (Potential.evaluate)."""
    potential, atoms, _, _ = system
    fn, positions = energy_of_positions(potential, atoms)
    np.testing.assert_allclose(np.asarray(positions), atoms.positions, rtol=0, atol=1e-12)
    (expected,) = potential.evaluate([atoms])
    energy, gradient = jax.jit(jax.value_and_grad(fn))(positions)
    assert abs(float(energy) - expected["energy"]) < 1e-9
    np.testing.assert_allclose(-np.asarray(gradient), expected["forces"], rtol=0, atol=1e-10)


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
