"""The ASE calculator: ASE optimisers, filters, constraints and MD; properties; heads; dtypes;
compilation caching; input validation.

Models are random-weight mace-torch MACE-MP "medium" architectures (8 channels) converted in
memory.  ``avg_num_neighbors=2`` (instead of a realistic ~30 for Si at a 6 Å cutoff) makes the
random model's forces of physical size, about 1 eV/Å on rattled silicon, so that relaxation and
MD move atoms appreciably; such a model does not have diamond Si as a minimum, so the
optimiser tests check that energy and forces go down, not where they end up.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.fd import calculate_numerical_stress
from ase.constraints import FixSymmetry
from ase.filters import FrechetCellFilter
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from ase.spacegroup.symmetrize import check_symmetry

from common import ELEMENTS

pytest.importorskip("torch")
pytest.importorskip("mace")

from equitrain_jax.calculator import Calculator  # noqa: E402
from equitrain_jax.convert import convert_model  # noqa: E402
from equitrain_jax.convert.architectures import build_mace_torch  # noqa: E402
from equitrain_jax.data import pad_to_bucket  # noqa: E402
from equitrain_jax.models.io import ModelBundle  # noqa: E402
from equitrain_jax.potential import Potential  # noqa: E402

MODEL = dict(architecture="mp0a-medium", atomic_numbers=ELEMENTS, channels=8, avg_num_neighbors=2.0)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return ModelBundle(*convert_model(build_mace_torch(seed=2, **MODEL)))


@pytest.fixture(scope="module")
def potential(bundle) -> Potential:
    """float64 potential shared by the tests of this file (compiled once per bucket size)."""
    return Potential(bundle, dtype="float64")


@pytest.fixture(scope="module")
def two_heads() -> ModelBundle:
    return ModelBundle(*convert_model(build_mace_torch(seed=4, heads=("pbe", "r2scan"), **MODEL)))


def silicon(rattle: float = 0.05, seed: int = 1) -> Atoms:
    """8-atom conventional diamond cell of Si, rattled (every such cell pads to one bucket)."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


def max_force(atoms: Atoms) -> float:
    return float(np.linalg.norm(atoms.get_forces(), axis=1).max())


def test_bfgs_lowers_energy_and_forces(potential):
    atoms = silicon(seed=1)
    atoms.calc = Calculator(potential)
    energy, force = atoms.get_potential_energy(), max_force(atoms)
    assert force > 0.1, "a rattled structure should feel forces"
    BFGS(atoms, logfile=None).run(fmax=1e-4, steps=20)  # a fixed number of steps
    assert atoms.get_potential_energy() < energy - 0.1
    assert max_force(atoms) < 0.7 * force


def test_cell_relaxation_keeps_symmetry(potential):
    """FrechetCellFilter + FixSymmetry on hexagonal Si (lonsdaleite, P6_3/mmc): its internal
    coordinate z and its c/a ratio are free, so forces and anisotropic stress are non-zero and
    the optimiser moves atoms and cell, yet the space group must survive."""
    atoms = bulk("SiSi", "wurtzite", a=3.84, c=6.27) * (2, 1, 1)  # 8 atoms, Si-cubic-sized bucket
    assert check_symmetry(atoms, 1e-6).number == 194
    atoms.calc = Calculator(potential)
    assert max_force(atoms) > 0.05
    stress = atoms.get_stress()
    assert abs(stress[0] - stress[2]) > 1e-3, "stress should be anisotropic"
    atoms.set_constraint(FixSymmetry(atoms, symprec=1e-6))
    energy, cell, positions = atoms.get_potential_energy(), atoms.cell.cellpar(), atoms.positions.copy()
    BFGS(FrechetCellFilter(atoms), maxstep=0.05, logfile=None).run(fmax=1e-4, steps=5)
    assert atoms.get_potential_energy() < energy
    assert np.abs(atoms.cell.cellpar()[:3] - cell[:3]).max() > 0.01, "the cell should have relaxed"
    assert np.abs(atoms.positions - positions).max() > 1e-3, "atoms should have moved"
    assert check_symmetry(atoms, 1e-6).number == 194
    np.testing.assert_allclose(atoms.cell.cellpar()[3:], [90.0, 90.0, 120.0], atol=1e-8)


def test_velocity_verlet_conserves_energy(potential):
    atoms = silicon(seed=2)
    atoms.calc = Calculator(potential)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    total, potential_energy = [atoms.get_total_energy()], [atoms.get_potential_energy()]
    for _ in range(20):
        dynamics.run(1)
        total.append(atoms.get_total_energy())
        potential_energy.append(atoms.get_potential_energy())
    assert np.ptp(potential_energy) > 0.02, "kinetic and potential energy should exchange"
    assert np.ptp(total) < 1e-3


def test_properties(potential):
    atoms = silicon(seed=3)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.03, -0.02], [0.0, 1.02, 0.04], [0.0, 0.0, 0.99]]),
                   scale_atoms=True)  # low symmetry: all six stress components differ
    calc = Calculator(potential)
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    assert isinstance(energy, float)
    assert atoms.get_potential_energy(force_consistent=True) == energy  # free_energy
    assert calc.get_property("free_energy", atoms) == energy
    energies = calc.get_property("energies", atoms)
    assert energies.shape == (len(atoms),)
    assert abs(energies.sum() - energy) < 1e-10 * np.abs(energies).sum()
    assert np.allclose(atoms.get_potential_energies(), energies, rtol=0, atol=0)
    forces = atoms.get_forces()
    assert forces.shape == (len(atoms), 3) and forces.dtype == np.float64
    stress = atoms.get_stress()
    assert stress.shape == (6,)
    assert np.abs(stress[3:]).min() > 1e-4, "shear components should be non-zero"
    # ASE's own finite differences, in ASE's Voigt order (xx, yy, zz, yz, xz, xy)
    probe = atoms.copy()
    probe.calc = Calculator(potential)
    numerical = calculate_numerical_stress(probe, eps=1e-5)
    np.testing.assert_allclose(stress, numerical, rtol=0, atol=1e-8)
    full = atoms.get_stress(voigt=False)
    np.testing.assert_allclose(full, full.T, atol=1e-12)
    np.testing.assert_allclose(stress, full[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]], atol=0)


def test_float32_close_to_float64(bundle, potential):
    atoms = silicon(seed=4)
    atoms.calc = Calculator(potential)
    e64, f64 = atoms.get_potential_energy(), atoms.get_forces()
    single = atoms.copy()
    single.calc = Calculator(bundle, dtype="float32")
    e32, f32, s32 = single.get_potential_energy(), single.get_forces(), single.get_stress()
    assert single.calc.potential.dtype == np.float32
    assert np.isfinite(e32) and np.all(np.isfinite(f32)) and np.all(np.isfinite(s32))
    assert abs(e32 - e64) <= 1e-5 * abs(e64)
    assert np.abs(f32 - f64).max() <= 1e-4 * np.abs(f64).max()
    assert e32 != e64, "float32 should differ from float64 by rounding, or it was not float32"


def test_float32_keeps_its_precision_far_from_the_origin(bundle):
    """Unwrapped molecular dynamics: the same rattled cell with every atom 5000 Å out (and one
    atom a further 40 cells away), in float32, gives the forces and stress of the cell near the
    origin to float32 rounding.  Before the graph moved atoms towards the origin
    (`equitrain_jax.data.graph.near_origin`), the forces here were off by 2e-3 relative."""
    near = silicon(seed=5)
    far = near.copy()
    far.positions += 5000.0 * np.array([1.0, 0.3, -0.7])
    far.positions[3] += 40 * far.cell[1]
    results = []
    for atoms in (near, far):
        atoms.calc = Calculator(bundle, dtype="float32")
        results.append((atoms.get_forces(), atoms.get_stress()))
    (f_near, s_near), (f_far, s_far) = results
    assert np.abs(f_far - f_near).max() <= 1e-5 * np.abs(f_near).max()
    assert np.abs(s_far - s_near).max() <= 1e-5 * np.abs(s_near).max()


def test_no_stress_without_periodicity(potential):
    """A molecule's box is arbitrary, so it has no stress (ASE's PropertyNotImplementedError, as
    EMT raises); energy and forces are there."""
    from ase.build import molecule
    from ase.calculators.calculator import PropertyNotImplementedError

    atoms = molecule("SiH4")
    atoms.center(vacuum=5.0)
    atoms.calc = Calculator(potential)
    assert np.isfinite(atoms.get_potential_energy()) and atoms.get_forces().shape == (5, 3)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_misspelt_keyword_is_refused(bundle):
    with pytest.raises(TypeError, match="dtyp"):
        Calculator(bundle, dtyp="float32")


def test_numpy_dtype_and_a_single_structure(bundle):
    assert Potential(bundle, dtype=np.float32).dtype == np.float32
    potential = Potential(bundle, dtype="float64")
    with pytest.raises(TypeError, match=r"pass \[atoms\]"):
        potential.evaluate(silicon())
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        potential.evaluate([silicon()], batch_size=0)


def test_heads(two_heads):
    atoms = silicon(seed=5)
    energies = {}
    for head in ("pbe", "r2scan"):
        probe = atoms.copy()
        probe.calc = Calculator(two_heads, head=head)
        energies[head] = probe.get_potential_energy()
    assert abs(energies["pbe"] - energies["r2scan"]) > 1e-3
    with pytest.raises(ValueError, match="pbe") as error:
        Calculator(two_heads)
    assert "r2scan" in str(error.value)
    with pytest.raises(ValueError, match="hse06"):
        Calculator(two_heads, head="hse06")


def test_no_recompilation_within_a_bucket(potential):
    structures = [silicon(seed=seed) for seed in (10, 11, 12, 13)]
    sizes = {len(pad_to_bucket(potential.graph(atoms)).senders) for atoms in structures}
    assert len(sizes) == 1, "precondition: the rattled structures should share one bucket"
    calc = Calculator(potential)
    energies = [calc.get_potential_energy(structures[0])]
    compiled = potential.compiled_shapes()
    assert compiled >= 1
    for atoms in structures[1:]:
        energies.append(calc.get_potential_energy(atoms))
    assert potential.compiled_shapes() == compiled
    assert len(set(energies)) == len(energies), "each structure should really have been evaluated"


def _two_si(distance: float, **kwargs) -> Atoms:
    return Atoms("Si2", positions=[[0.0, 0.0, 0.0], [distance, 0.0, 0.0]], **kwargs)


BAD_INPUTS = {
    "unknown element": (Atoms("SiAu", positions=[[0, 0, 0], [2.4, 0, 0]]), "Au"),
    "pbc with zero cell": (_two_si(2.4, pbc=True), "cell"),
    "NaN position": (Atoms("Si2", positions=[[0, 0, 0], [np.nan, 0, 0]]), "NaN"),
    "atoms too close": (_two_si(0.05), "0.1"),
    "too close across the boundary": (
        Atoms("Si2", positions=[[0.02, 1, 1], [4.97, 1, 1]], cell=[5.0, 5.0, 5.0], pbc=True),
        "0.1",
    ),
    "empty": (Atoms(), "empty"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_before_compilation(bundle, case):
    atoms, word = BAD_INPUTS[case]
    fresh = Potential(bundle, dtype="float64")  # no compiled shapes yet
    atoms = atoms.copy()
    atoms.calc = Calculator(fresh)
    with pytest.raises(ValueError, match=word) as error:
        atoms.get_potential_energy()
    assert type(error.value) is ValueError
    assert not any("/jax/" in str(entry.path) for entry in error.traceback), "raised inside JAX"
    assert fresh.compiled_shapes() == 0


def test_missing_model_directory():
    with pytest.raises(FileNotFoundError, match="convert"):
        Calculator("/nonexistent/dir")


def test_bad_dtype(bundle):
    with pytest.raises(ValueError, match="float16") as error:
        Potential(bundle, dtype="float16")
    assert "float32" in str(error.value) and "float64" in str(error.value)
