"""Physical symmetries and derivative consistency of the JAX MACE, independent of mace-torch.

Every check compares the model with itself under a transformation whose effect physics fixes:
E(3) (rotations, reflections, translations), permutation of atoms, forces = −∂E/∂R and
stress = (1/V) ∂E/∂ε by finite differences of the energy.  Architectures: mp0b3 (density
normalisation, ZBL, Agnesi transform, l ≤ 1 hidden features) and mp0a-large (l = 2 hidden
features).  Random weights, 8 channels, float64.

The periodic triclinic crystal and the molecule are always evaluated together in one batch of
two, so that each architecture is compiled once (every transformation keeps the padded sizes).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from common import (
    ELEMENTS,
    SYMMETRY_RTOL,
    assert_close,
    assert_forces_match_finite_differences,
    central_difference,
    ethanol,
    random_rotation,
    rotated,
    triclinic_crystal,
)

pytest.importorskip("torch")
pytest.importorskip("mace")

from equitrain_jax.convert import convert_model  # noqa: E402
from equitrain_jax.convert.architectures import build_mace_torch  # noqa: E402
from equitrain_jax.models.io import ModelBundle  # noqa: E402
from equitrain_jax.potential import Potential  # noqa: E402

ARCHITECTURES = ["mp0b3", "mp0a-large"]
FD_STEP = 1e-4  # Å, and dimensionless strain
FD_FORCE_TOL = 1e-8  # eV/Å (the stencil error is ~1e-10 here; ~1e-6 would hide small bugs)
FD_STRESS_TOL = 1e-9  # eV/Å³ (stencil error ~1e-11)


@functools.lru_cache(maxsize=None)
def potential(arch: str) -> Potential:
    module = build_mace_torch(arch, atomic_numbers=ELEMENTS, channels=8, seed=11)
    return Potential(ModelBundle(*convert_model(module)), dtype="float64")


def evaluate(arch: str, crystal, molecule):
    """Outputs for (crystal, molecule) in one batch: two dicts."""
    crystal_out, molecule_out = potential(arch).evaluate([crystal, molecule])
    return crystal_out, molecule_out


@functools.lru_cache(maxsize=None)
def reference(arch: str):
    return evaluate(arch, triclinic_crystal(), ethanol())


@pytest.fixture(params=ARCHITECTURES)
def arch(request):
    return request.param


def test_outputs_are_nontrivial(arch):
    """Guard: the checks below would prove nothing on zero forces or stress."""
    crystal, molecule = reference(arch)
    for out in (crystal, molecule):
        assert out["forces"].dtype == np.float64
        assert np.abs(out["forces"]).max() > 1e-3
    assert np.abs(crystal["stress"] - np.diag(np.diag(crystal["stress"]))).max() > 1e-5
    assert np.all(molecule["stress"] == 0.0), "a molecule (zero cell) has no stress"


@pytest.mark.parametrize("proper", [True, False], ids=["rotation", "improper"])
def test_rotation(arch, proper):
    rotation = random_rotation(seed=5 if proper else 6, proper=proper)
    crystal, molecule = triclinic_crystal(), ethanol()
    outputs = evaluate(arch, rotated(crystal, rotation), rotated(molecule, rotation))
    for name, out, ref in zip(("crystal", "molecule"), outputs, reference(arch)):
        assert abs(out["energy"] - ref["energy"]) <= SYMMETRY_RTOL * abs(ref["energy"]), name
        assert_close(out["energies"], ref["energies"], f"{name} per-atom energies")
        assert_close(out["forces"], ref["forces"] @ rotation.T, f"{name} forces")
        assert_close(out["virial"], rotation @ ref["virial"] @ rotation.T, f"{name} virial")
    assert_close(outputs[0]["stress"], rotation @ reference(arch)[0]["stress"] @ rotation.T, "stress")


def test_translation(arch):
    rng = np.random.default_rng(8)
    crystal, molecule = triclinic_crystal(), ethanol()
    crystal.translate(rng.uniform(-7.0, 7.0, size=3))
    before = crystal.get_scaled_positions(wrap=False)
    crystal.wrap()
    assert np.abs(crystal.get_scaled_positions(wrap=False) - before).max() > 0.5, "nothing was wrapped"
    molecule.translate(rng.uniform(-7.0, 7.0, size=3))
    outputs = evaluate(arch, crystal, molecule)
    for name, out, ref in zip(("crystal", "molecule"), outputs, reference(arch)):
        assert abs(out["energy"] - ref["energy"]) <= SYMMETRY_RTOL * abs(ref["energy"]), name
        assert_close(out["energies"], ref["energies"], f"{name} per-atom energies")
        assert_close(out["forces"], ref["forces"], f"{name} forces")
        assert_close(out["virial"], ref["virial"], f"{name} virial")
    assert_close(outputs[0]["stress"], reference(arch)[0]["stress"], "stress")


def test_permutation(arch):
    rng = np.random.default_rng(9)
    crystal, molecule = triclinic_crystal(), ethanol()
    perms = [rng.permutation(len(crystal)), rng.permutation(len(molecule))]
    assert all(np.any(p != np.arange(len(p))) for p in perms)
    outputs = evaluate(arch, crystal[perms[0]], molecule[perms[1]])
    for name, out, ref, perm in zip(("crystal", "molecule"), outputs, reference(arch), perms):
        assert abs(out["energy"] - ref["energy"]) <= SYMMETRY_RTOL * abs(ref["energy"]), name
        assert_close(out["energies"], ref["energies"][perm], f"{name} per-atom energies")
        assert_close(out["forces"], ref["forces"][perm], f"{name} forces")
        assert_close(out["virial"], ref["virial"], f"{name} virial")


def test_per_atom_energies_sum_to_total(arch):
    for out in reference(arch):
        assert out["energies"].shape == out["forces"].shape[:1]
        assert abs(out["energies"].sum() - out["energy"]) <= 1e-12 * np.abs(out["energies"]).sum()
        assert np.ptp(out["energies"]) > 1e-3, "per-atom energies should differ between atoms"


def test_forces_match_finite_differences(arch):
    """F = −∂E/∂R by central differences, three atoms of each structure along x, y, z."""
    assert_forces_match_finite_differences(
        lambda structures: evaluate(arch, *structures), [triclinic_crystal(), ethanol()], reference(arch),
        ([0, 5, 11], [0, 2, 8]), FD_STEP, FD_FORCE_TOL,
    )


def strained(atoms, epsilon: np.ndarray):
    """Homogeneous deformation r → (1 + ε) r of cell and positions (rows: r @ (1 + ε)^T)."""
    atoms = atoms.copy()
    deformation = np.eye(3) + epsilon
    if atoms.cell.rank == 3:
        atoms.set_cell(atoms.cell.array @ deformation.T, scale_atoms=True)
    else:
        atoms.positions = atoms.positions @ deformation.T
    return atoms


def test_stress_matches_finite_differences(arch):
    """σ = (1/V) ∂E/∂ε for symmetric strains; the molecule's virial −∂E/∂ε likewise."""
    crystal, molecule = triclinic_crystal(), ethanol()
    volume = crystal.get_volume()
    ref_c, ref_m = reference(arch)
    for i, j in [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]:
        epsilon = np.zeros((3, 3))
        epsilon[i, j] += 0.5
        epsilon[j, i] += 0.5

        def energies(t):
            outputs = evaluate(arch, strained(crystal, t * epsilon), strained(molecule, t * epsilon))
            return [out["energy"] for out in outputs]

        de_c, de_m = central_difference(energies, FD_STEP)
        stress, virial = de_c / volume, -de_m
        assert abs(stress - ref_c["stress"][i, j]) < FD_STRESS_TOL, (i, j, stress, ref_c["stress"][i, j])
        assert abs(stress - ref_c["stress"][j, i]) < FD_STRESS_TOL
        assert abs(virial - ref_m["virial"][i, j]) < FD_FORCE_TOL, (i, j, virial, ref_m["virial"][i, j])
