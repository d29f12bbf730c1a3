"""SevenNet-0 in JAX against sevenn itself, and its physical symmetries.

Parity: the stored numbers of sevenn's own ASE calculator on the same checkpoint
(``tests/fixtures/sevennet/reference.json``, written by ``scripts/sevennet_reference.py`` in a
separate sevenn environment): a rattled triclinic four-element cell, a molecule and four more
structures, all evaluated here in one padded batch.  Symmetries: rotations, translations and atom
permutations, and forces and stress against finite differences of the energy (float64).  SevenNet-0
has no parity (every irrep is even), so reflections are not a symmetry of the model and are not
tested.

Each float64 check compiles the model once more (about 10 s each on 2 idle cores, several times that
on a busy machine), so only the float32 parity runs by default; the rest is marked slow
(``python -m pytest -m slow tests/models/test_sevennet.py``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress
from common import (
    SYMMETRY_RTOL,
    assert_close,
    assert_forces_match_finite_differences,
    central_difference,
    random_rotation,
    rotated,
)

pytest.importorskip("torch")
if importlib.util.find_spec("sevenn") is None:
    pytest.skip("SevenNet-0 ships in sevenn: pip install --no-deps sevenn==0.13.0", allow_module_level=True)

from equitrain_jax import Calculator
from equitrain_jax.convert.sevennet import convert_checkpoint, pretrained_checkpoint
from equitrain_jax.models.io import ModelBundle
from equitrain_jax.potential import Potential

REFERENCE = json.loads((Path(__file__).parents[1] / "fixtures" / "sevennet" / "reference.json").read_text())
GROUPS = ("crystal", "molecule", "batch")
# sevenn runs in float32; its float64 numbers come from the same weights in a float64 sevenn model
# (measured: float32 ~1e-7 relative, 9e-6 eV/Å, 2e-7 eV/Å³; float64 2e-16 relative, 2e-14 eV/Å,
# 4e-16 eV/Å³)
TOLERANCES = {
    "float32": {"energy_rtol": 1e-5, "forces": 1e-4, "stress": 1e-6},
    "float64": {"energy_rtol": 1e-12, "forces": 1e-10, "stress": 1e-10},
}
FD_STEP = 1e-4  # Å
FD_STRAIN_STEP = 1e-5  # the XPLOR switch's second derivative jumps at r_on: a smaller step keeps
# the stencil error of pairs near 4.5 Å (a few in the crystal) below the tolerance
FD_FORCE_TOL = 1e-7  # eV/Å
FD_STRESS_TOL = 1e-8  # eV/Å³


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    """SevenNet-0 (11Jul2024) inside the installed sevenn package, the weights of the reference."""
    path = pretrained_checkpoint("sevennet-0")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == REFERENCE["checkpoint_sha256"]
    return path


@pytest.fixture(scope="module")
def bundle(checkpoint) -> ModelBundle:
    return ModelBundle(*convert_checkpoint(checkpoint))


@pytest.fixture(scope="module")
def potentials(bundle):
    return {dtype: Potential(bundle, dtype=dtype) for dtype in ("float32", "float64")}


def to_atoms(record: dict) -> Atoms:
    return Atoms(numbers=record["numbers"], positions=record["positions"], cell=record["cell"], pbc=record["pbc"])


def reference_structures() -> list[Atoms]:
    return [to_atoms(r) for group in GROUPS for r in REFERENCE["structures"][group]]


def reference_results(dtype: str) -> list[dict]:
    return [r for group in GROUPS for r in REFERENCE["results"][dtype][group]]


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_parity_with_sevenn(potentials, dtype):
    """Every reference structure, one padded batch: energies, per-atom energies, forces, stress."""
    tol = TOLERANCES[dtype]
    structures = reference_structures()
    outputs = potentials[dtype].evaluate(structures, batch_size=len(structures))
    errors = {"energy": 0.0, "forces": 0.0, "stress": 0.0}
    for atoms, out, ref in zip(structures, outputs, reference_results(dtype)):
        energy_error = abs(out["energy"] - ref["energy"])
        assert energy_error <= tol["energy_rtol"] * abs(ref["energy"]), (atoms.symbols, out["energy"], ref["energy"])
        assert np.abs(out["energies"] - ref["energies"]).max() <= tol["energy_rtol"] * np.abs(ref["energies"]).max()
        force_error = np.abs(out["forces"] - np.asarray(ref["forces"])).max()
        assert force_error <= tol["forces"], (atoms.symbols, force_error)
        errors["energy"] = max(errors["energy"], energy_error / abs(ref["energy"]))
        errors["forces"] = max(errors["forces"], force_error)
        if "stress" in ref:
            stress_error = np.abs(full_3x3_to_voigt_6_stress(out["stress"]) - np.asarray(ref["stress"])).max()
            assert stress_error <= tol["stress"], (atoms.symbols, stress_error)
            errors["stress"] = max(errors["stress"], stress_error)
    print(f"{dtype}: max relative energy error {errors['energy']:.2g}, force error {errors['forces']:.2g} eV/Å, "
          f"stress error {errors['stress']:.2g} eV/Å³")


@pytest.mark.slow
def test_ase_calculator_matches_sevenn(potentials):
    """The ASE calculator on the converted model gives sevenn's float32 numbers."""
    atoms = to_atoms(REFERENCE["structures"]["crystal"][0])
    ref = REFERENCE["results"]["float32"]["crystal"][0]
    atoms.calc = Calculator(potentials["float32"])
    assert abs(atoms.get_potential_energy() - ref["energy"]) <= 1e-5 * abs(ref["energy"])
    assert np.abs(atoms.get_forces() - np.asarray(ref["forces"])).max() <= 1e-4
    assert np.abs(atoms.get_stress() - np.asarray(ref["stress"])).max() <= 1e-6


def crystal_and_molecule() -> tuple[Atoms, Atoms]:
    return to_atoms(REFERENCE["structures"]["crystal"][0]), to_atoms(REFERENCE["structures"]["molecule"][0])


def evaluate(potentials, crystal, molecule):
    """float64 outputs for (crystal, molecule) in one batch: two dicts."""
    return potentials["float64"].evaluate([crystal, molecule])


@pytest.fixture(scope="module")
def reference(potentials):
    return evaluate(potentials, *crystal_and_molecule())


@pytest.mark.slow
def test_outputs_are_nontrivial(reference):
    crystal, molecule = reference
    for out in (crystal, molecule):
        assert np.abs(out["forces"]).max() > 1e-2
        assert np.ptp(out["energies"]) > 1e-2
    assert np.abs(crystal["stress"] - np.diag(np.diag(crystal["stress"]))).max() > 1e-5


@pytest.mark.slow
def test_rotation(potentials, reference):
    rotation = random_rotation(seed=5)
    crystal, molecule = crystal_and_molecule()
    outputs = evaluate(potentials, rotated(crystal, rotation), rotated(molecule, rotation))
    for name, out, ref in zip(("crystal", "molecule"), outputs, reference):
        assert abs(out["energy"] - ref["energy"]) <= SYMMETRY_RTOL * abs(ref["energy"]), name
        assert_close(out["energies"], ref["energies"], f"{name} per-atom energies")
        assert_close(out["forces"], ref["forces"] @ rotation.T, f"{name} forces")
        assert_close(out["virial"], rotation @ ref["virial"] @ rotation.T, f"{name} virial")


@pytest.mark.slow
def test_translation_and_wrapping(potentials, reference):
    rng = np.random.default_rng(8)
    crystal, molecule = crystal_and_molecule()
    crystal.translate(rng.uniform(-7.0, 7.0, size=3))
    crystal.wrap()
    molecule.translate(rng.uniform(-7.0, 7.0, size=3))
    outputs = evaluate(potentials, crystal, molecule)
    for name, out, ref in zip(("crystal", "molecule"), outputs, reference):
        assert abs(out["energy"] - ref["energy"]) <= SYMMETRY_RTOL * abs(ref["energy"]), name
        assert_close(out["forces"], ref["forces"], f"{name} forces")
        assert_close(out["virial"], ref["virial"], f"{name} virial")


@pytest.mark.slow
def test_permutation(potentials, reference):
    rng = np.random.default_rng(9)
    crystal, molecule = crystal_and_molecule()
    perms = [rng.permutation(len(crystal)), rng.permutation(len(molecule))]
    outputs = evaluate(potentials, crystal[perms[0]], molecule[perms[1]])
    for name, out, ref, perm in zip(("crystal", "molecule"), outputs, reference, perms):
        assert abs(out["energy"] - ref["energy"]) <= SYMMETRY_RTOL * abs(ref["energy"]), name
        assert_close(out["energies"], ref["energies"][perm], f"{name} per-atom energies")
        assert_close(out["forces"], ref["forces"][perm], f"{name} forces")


@pytest.mark.slow
def test_forces_match_finite_differences(potentials, reference):
    """F = −∂E/∂R by central differences, two atoms of each structure along x, y, z."""
    assert_forces_match_finite_differences(
        lambda structures: evaluate(potentials, *structures), list(crystal_and_molecule()), reference,
        ([0, 13], [0, 7]), FD_STEP, FD_FORCE_TOL,
    )


@pytest.mark.slow
def test_stress_matches_finite_differences(potentials, reference):
    """σ = (1/V) ∂E/∂ε for symmetric strains of the crystal."""
    crystal, molecule = crystal_and_molecule()
    volume = crystal.get_volume()
    for i, j in [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]:
        epsilon = np.zeros((3, 3))
        epsilon[i, j] += 0.5
        epsilon[j, i] += 0.5

        def energy(t, epsilon=epsilon):
            strained = crystal.copy()
            strained.set_cell(crystal.cell.array @ (np.eye(3) + t * epsilon).T, scale_atoms=True)
            return evaluate(potentials, strained, molecule)[0]["energy"]

        stress = central_difference(energy, FD_STRAIN_STEP) / volume
        assert abs(stress - reference[0]["stress"][i, j]) < FD_STRESS_TOL, (i, j, stress, reference[0]["stress"][i, j])
