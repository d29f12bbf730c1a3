"""Helpers shared by the tests: test structures, mace-torch references computed on the spot, small
converted models, symmetry and finite-difference checks, and the Al/Ni/Cu fixtures (a model and
EMT-labelled cells) of the training and adapter tests.  Import it as ``from common import …``."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule, surface
from ase.calculators.emt import EMT

ELEMENTS = (1, 6, 8, 14)
"""H, C, O, Si: the elements of `structures` and of the parity models."""
ALLOY_ELEMENTS = (13, 28, 29)
"""Al, Ni, Cu: the elements of `alloy_bundle`, `alloy_cell` and `emt_cells` (EMT knows them)."""


def triclinic_crystal() -> Atoms:
    """Periodic triclinic cell with H, C, O, Si at random positions (no pair closer than 0.9 Å)."""
    rng = np.random.default_rng(7)
    cell = np.array([[5.2, 0.0, 0.0], [1.1, 4.9, 0.0], [0.7, -0.9, 5.6]])
    positions = []
    while len(positions) < 12:
        candidate = rng.uniform(size=3) @ cell
        trial = Atoms("X" * (len(positions) + 1), positions=positions + [candidate], cell=cell, pbc=True)
        if len(positions) == 0 or trial.get_distances(len(positions), range(len(positions)), mic=True).min() > 0.9:
            positions.append(candidate)
    numbers = rng.choice(ELEMENTS, size=len(positions))
    return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)


def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=2)
    return atoms


def with_isolated_atom() -> Atoms:
    """A molecule plus a Si atom 20 Å away: it has no neighbours within any cutoff."""
    atoms = molecule("H2O")
    atoms += Atoms("Si", positions=[[20.0, 0.0, 0.0]])
    return atoms


def silicon_slab() -> Atoms:
    """Si(100) slab periodic in x, y only, with 8 Å of vacuum along z."""
    atoms = surface(bulk("Si", "diamond", a=5.43), (1, 0, 0), 4, vacuum=4.0)
    atoms.pbc = (True, True, False)
    atoms.rattle(0.03, seed=3)
    return atoms


def structures() -> dict[str, Atoms]:
    return {
        "triclinic": triclinic_crystal(),
        "molecule": ethanol(),
        "isolated_atom": with_isolated_atom(),
        "slab": silicon_slab(),
    }


def torch_reference(module, atoms_list, head=None):
    """Energy, forces, stress (3x3) and virial from mace-torch's own calculator in float64.

    mace-torch divides the virial by the volume of a cell it enlarges along non-periodic
    directions; the virial is recovered with that same volume.
    """
    import mace  # noqa: F401  (before e3nn)
    import torch
    from mace.calculators import MACECalculator
    from mace.data.neighborhood import get_neighborhood

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        calc = MACECalculator(models=module, default_dtype="float64", head=head)
        results = []
        for atoms in atoms_list:
            atoms = atoms.copy()
            atoms.calc = calc
            stress = atoms.get_stress(voigt=False)
            *_, mace_cell = get_neighborhood(
                atoms.positions, calc.r_max, tuple(bool(p) for p in atoms.pbc), atoms.cell.array.copy()
            )
            results.append(
                dict(
                    energy=atoms.get_potential_energy(),
                    forces=atoms.get_forces(),
                    stress=stress,
                    virial=-stress * abs(np.linalg.det(mace_cell)),
                    periodic=bool(atoms.pbc.all()),
                )
            )
    finally:
        torch.set_default_dtype(previous)
    return results


def converted_bundle(architecture: str, atomic_numbers, seed: int, channels: int = 8, **kwargs):
    """A mace-torch model of ``architecture`` with random weights, converted in memory (float64)."""
    import mace  # noqa: F401  (before e3nn)

    from equitrain_jax.convert import convert_model
    from equitrain_jax.convert.architectures import build_mace_torch
    from equitrain_jax.models.io import ModelBundle
    from equitrain_jax.potential import enable_float64

    enable_float64()
    module = build_mace_torch(architecture, atomic_numbers=atomic_numbers, channels=channels, seed=seed, **kwargs)
    return ModelBundle(*convert_model(module))


# ----------------------------------------------------------------------------- symmetry checks

SYMMETRY_RTOL = 1e-9  # relative to the largest |value| of the compared quantity


def random_rotation(seed: int, proper: bool = True) -> np.ndarray:
    """Haar-random orthogonal 3x3 matrix with det +1 (proper) or −1 (with a reflection)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q = -q
    if not proper:
        q = q @ np.diag([1.0, 1.0, -1.0])  # a reflection; not a rotation
    assert np.allclose(q @ q.T, np.eye(3), atol=1e-14)
    assert np.isclose(np.linalg.det(q), 1.0 if proper else -1.0)
    return q


def rotated(atoms: Atoms, rotation: np.ndarray) -> Atoms:
    """Positions and cell (rows) mapped r → R r."""
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    atoms.positions = atoms.positions @ rotation.T
    return atoms


def assert_close(actual, expected, name, rtol=SYMMETRY_RTOL):
    """Largest |actual − expected| within ``rtol`` of the largest |expected|."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(np.abs(expected).max(), 1e-12)
    error = np.abs(actual - expected).max()
    assert error <= rtol * scale, f"{name}: max error {error:.3g} > {rtol:g} x {scale:.3g}"


def central_difference(energy_at, step: float):
    """dE/dt at t = 0 by the fourth-order central stencil (error ~ step⁴); ``energy_at(t)``
    returns an array of energies."""
    e = {k: np.asarray(energy_at(k * step)) for k in (-2, -1, 1, 2)}
    return (e[-2] - 8 * e[-1] + 8 * e[1] - e[2]) / (12 * step)


def assert_forces_match_finite_differences(evaluate, structures, reference, atom_indices, step: float, tol: float):
    """F = −∂E/∂R by `central_difference` for the atoms ``atom_indices[s]`` of each structure s along
    x, y and z; the structures are displaced together, ``evaluate(structures)`` giving one output
    dict each, and compared with the ``reference`` outputs (eV/Å, absolute ``tol``)."""
    for indices in zip(*atom_indices):
        for d in range(3):

            def energies(t, indices=indices, d=d):
                moved = [atoms.copy() for atoms in structures]
                for atoms, i in zip(moved, indices):
                    atoms.positions[i, d] += t
                return [out["energy"] for out in evaluate(moved)]

            for numeric, i, ref in zip(-central_difference(energies, step), indices, reference):
                assert abs(numeric - ref["forces"][i, d]) < tol, (i, d, numeric, ref["forces"][i, d])


def alloy_bundle(seed: int):
    """A small converted MACE-MP medium model (8 channels) on Al, Ni, Cu, in float64."""
    pytest.importorskip("torch")
    pytest.importorskip("mace")
    return converted_bundle("mp0a-medium", ALLOY_ELEMENTS, seed=seed)


def alloy_cell() -> Atoms:
    """A sheared, rattled 8-atom Al/Ni/Cu cell."""
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
    atoms.numbers = [13, 28, 29, 29, 13, 28, 28, 29]
    atoms.set_cell(atoms.cell.array + [[0.0, 0.2, 0.1], [0.3, 0.0, 0.0], [0.0, -0.2, 0.0]], scale_atoms=True)
    atoms.rattle(0.1, seed=4)
    return atoms


def emt_cells(count: int, seed: int) -> list:
    """Rattled, strained 4-atom fcc cells of random Al/Ni/Cu occupation with EMT labels
    attached as a finished calculator (energy eV, forces eV/Å, stress eV/Å³)."""
    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.numbers = rng.choice(ALLOY_ELEMENTS, size=len(atoms))
        atoms.set_cell(atoms.cell * rng.uniform(0.98, 1.04), scale_atoms=True)
        atoms.rattle(0.1, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.get_stress()
        atoms.get_forces()
        cells.append(atoms)
    return cells


def evaluate_with_params(potential, params, atoms) -> dict:
    """Energy (eV), forces (eV/Å), stress (eV/Å³) of ``atoms`` with ``params`` in ``potential``'s
    model (the compiled potential is reused; its params are swapped)."""
    potential.variables = {**potential.variables, "params": params}
    (out,) = potential.evaluate([atoms])
    return out


def tiny_mace(elements=ALLOY_ELEMENTS, seed: int = 0):
    """One interaction, 4 scalar channels, correlation 2, random weights (float64): a MACE that
    compiles in seconds, built in JAX without torch, for tests of the training machinery rather
    than of the model."""
    import jax

    from equitrain_jax.data import atoms_to_graph, enable_float64, pad_to_bucket
    from equitrain_jax.models.io import ModelBundle
    from equitrain_jax.models.mace import MACEConfig

    enable_float64()
    config = MACEConfig(
        atomic_numbers=tuple(elements), r_max=4.0, num_bessel=4, max_ell=1, hidden_irreps="4x0e",
        num_interactions=1, correlation=(2,), readout_mlp_channels=4, radial_mlp=(8,), avg_num_neighbors=8.0,
        atomic_energies=(tuple(-3.0 - 0.5 * i for i in range(len(elements))),),
    )
    graph = pad_to_bucket(atoms_to_graph(bulk("Cu", "fcc", a=3.6, cubic=True), config.r_max, config.atomic_numbers))
    variables = jax.jit(ModelBundle(config, {}).module(np.float64).init)(jax.random.PRNGKey(seed), graph)
    return ModelBundle(config, jax.tree_util.tree_map(np.asarray, variables))
