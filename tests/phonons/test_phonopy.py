"""Analytic force constants in phonopy against phonopy's own finite displacements."""

from __future__ import annotations

import json
import warnings

import numpy as np
import phonopy
import pytest
import yaml
from ase import Atoms
from ase.build import bulk
from phonopy import Phonopy
from phonopy.harmonic.displacement import get_least_displacements
from phonopy.structure.symmetry import Symmetry

from phonon_models import phonon_potential, quiet, unitcells

from equitrain_jax.calculator import Calculator
from equitrain_jax.phonons import (
    SupercellTooSmallWarning,
    band_structure,
    check_supercell_size,
    force_constants,
    phonopy_from_calculator,
    phonopy_from_potential,
    thermal_properties,
    total_dos,
    write_results,
)
from equitrain_jax.phonons import CUTOFF_FREQUENCY_THZ, ase_to_phonopy, perpendicular_widths, phonopy_to_ase

SUPERCELL = 2 * np.eye(3, dtype=int)
DISTANCE = 1e-3  # Å, phonopy's displacement (±): FD error ~ DISTANCE² ≈ 1e-6 relative
MESH = (8, 8, 8)
R_GAS = 8.314462618  # J/K/mol


def finite_displacement_phonopy(potential, unitcell) -> Phonopy:
    """Phonopy's own route: displaced supercells, forces from our ASE calculator, phonopy's solver."""
    return quiet(phonopy_from_calculator, Calculator(potential), unitcell, SUPERCELL, distance=DISTANCE,
                 plusminus=True, symmetrize=False)


@pytest.fixture(scope="module", params=sorted(unitcells()))
def crystal(request):
    potential = phonon_potential()
    unitcell = unitcells()[request.param]
    ours = quiet(phonopy_from_potential, potential, unitcell, SUPERCELL, method="full", symmetrize=False)
    reference = finite_displacement_phonopy(potential, unitcell)
    return request.param, potential, unitcell, ours, reference


def test_force_constants_and_frequencies_match_finite_displacements(crystal):
    """Same supercell atom order (phonopy's); fc within the ±1e-3 Å FD error, frequencies on the
    automatic band path and an 8×8×8 mesh within 1e-3 THz."""
    name, _, _, ours, reference = crystal
    fc, fc_fd = ours.force_constants, reference.force_constants
    assert fc.shape == fc_fd.shape == (16, 16, 3, 3)
    scale = np.abs(fc_fd).max()
    assert scale > 0.1, f"{name}: force constants too small to test anything ({scale:.3g} eV/Å²)"
    np.testing.assert_allclose(fc, fc_fd, rtol=0, atol=1e-5 * scale)

    ours_bands = band_structure(ours, npoints=11)["frequencies"]
    reference.auto_band_structure(npoints=11)
    ref_bands = reference.get_band_structure_dict()["frequencies"]
    assert len(ours_bands) == len(ref_bands) > 1
    for mine, ref in zip(ours_bands, ref_bands):
        np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-3)
    ours.run_mesh(MESH, is_gamma_center=True)
    reference.run_mesh(MESH, is_gamma_center=True)
    mine, ref = ours.get_mesh_dict()["frequencies"], reference.get_mesh_dict()["frequencies"]
    assert np.abs(ref).max() > 1.0
    np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-3)


def test_symmetry_reduced_force_constants_equal_full(crystal):
    """Rows of the distinct atoms only, rotated by phonopy, equal every row computed (1e-10 relative),
    both with our own Symmetry and through phonopy_from_potential (primitive + translations path)."""
    name, potential, unitcell, ours, _ = crystal
    full = ours.force_constants
    supercell = phonopy_to_ase(ours.supercell)
    distinct = Symmetry(ase_to_phonopy(supercell)).get_independent_atoms()
    assert 3 * len(distinct) <= 3 * len(supercell) // 8, f"{name}: symmetry should save rows"
    reduced = force_constants(potential, supercell, method="symmetry")
    scale = np.abs(full).max()
    np.testing.assert_allclose(reduced, full, rtol=0, atol=1e-10 * scale)
    via_phonopy = quiet(phonopy_from_potential, potential, unitcell, SUPERCELL, method="symmetry", symmetrize=False)
    np.testing.assert_allclose(via_phonopy.force_constants, full, rtol=0, atol=1e-10 * scale)


def test_displacement_force_constants_equal_full(crystal):
    """One Hessian-vector product per phonopy least displacement (1 for diamond, 2 for rocksalt),
    fitted by phonopy's solver, equals every row computed (1e-10 relative), with and without
    phonopy's primitive cell, and is phonopy_from_potential's default."""
    name, potential, unitcell, ours, _ = crystal
    full = ours.force_constants
    supercell = phonopy_to_ase(ours.supercell)
    symmetry = Symmetry(ase_to_phonopy(supercell))
    expected_products = {"Si-diamond": 1, "NaCl-rocksalt": 2}[name]
    assert len(get_least_displacements(symmetry, is_plusminus=False)) == expected_products
    scale = np.abs(full).max()
    for primitive in (None, ours.primitive):
        fc = force_constants(potential, supercell, method="displacements", symmetry=symmetry, primitive=primitive)
        np.testing.assert_allclose(fc, full, rtol=0, atol=1e-10 * scale)
    default = quiet(phonopy_from_potential, potential, unitcell, SUPERCELL, symmetrize=False)
    np.testing.assert_allclose(default.force_constants, full, rtol=0, atol=1e-10 * scale)


def test_displacement_force_constants_low_symmetry():
    """A triclinic (P1) cell: phonopy asks for 3 displacements per atom, and the fit of the exact
    harmonic forces gives the full Hessian's force constants (1e-10 relative)."""
    potential = phonon_potential()
    cell = Atoms("NaClSiNa", scaled_positions=[[0, 0, 0], [0.3, 0.1, 0.45], [0.6, 0.55, 0.2], [0.1, 0.7, 0.8]],
                 cell=[[4.1, 0, 0], [0.6, 4.3, 0], [0.4, -0.5, 4.6]], pbc=True)
    phonon = Phonopy(ase_to_phonopy(cell), supercell_matrix=np.diag([2, 1, 1]), primitive_matrix="P")
    supercell = phonopy_to_ase(phonon.supercell)
    assert len(get_least_displacements(phonon.symmetry, is_plusminus=False)) == 3 * len(cell)
    full = force_constants(potential, supercell, method="full")
    fc = force_constants(potential, supercell, method="displacements", symmetry=phonon.symmetry,
                         primitive=phonon.primitive)
    np.testing.assert_allclose(fc, full, rtol=0, atol=1e-10 * np.abs(full).max())
    with pytest.raises(ValueError, match="method must be one of"):
        force_constants(potential, supercell, method="rows")


def test_raw_force_constants_obey_sum_rule_and_symmetry(crystal):
    """Unsymmetrised analytic fc: Σ_j Φ[i, j] = 0 and Φ[i, j] = Φ[j, i]ᵀ to ~1e-8 eV/Å²
    (the FD ones of the same model only to their ~1e-6 error)."""
    _, _, _, ours, _ = crystal
    fc = ours.force_constants
    assert np.abs(fc.sum(axis=1)).max() < 1e-8
    assert np.abs(fc - fc.transpose(1, 0, 3, 2)).max() < 1e-8


def test_thermal_properties_match_phonopy_finite_displacements():
    """F, S, Cv (symmetrised fc, default path: phonopy displacements with exact Hessian-vector forces) against phonopy's own thermal
    properties of its finite-displacement fc (same mesh and cutoff frequency), Cv → 3·n·R (the harmonic
    high-T limit) and a total DOS that integrates to 3·n."""
    potential = phonon_potential()
    unitcell = unitcells()["NaCl-rocksalt"]
    ours = quiet(phonopy_from_potential, potential, unitcell, SUPERCELL)
    reference = finite_displacement_phonopy(potential, unitcell)
    reference.symmetrize_force_constants(show_drift=False)
    temperatures = [50.0, 300.0, 1000.0, 30000.0]
    mine = thermal_properties(ours, mesh=MESH, temperatures=temperatures)
    reference.run_mesh(MESH, is_gamma_center=True)
    assert reference.get_mesh_dict()["frequencies"].min() > -1e-3, "premise: no imaginary modes"
    reference.run_thermal_properties(temperatures=temperatures, cutoff_frequency=CUTOFF_FREQUENCY_THZ)
    ref = reference.get_thermal_properties_dict()
    np.testing.assert_allclose(mine["temperatures"], temperatures)
    for key in ("free_energy", "entropy", "heat_capacity"):
        np.testing.assert_allclose(mine[key], ref[key], rtol=1e-5, atol=1e-6, err_msg=key)
    limit = 3 * len(ours.primitive) * R_GAS
    cv = mine["heat_capacity"]
    assert cv[0] < 0.9 * limit and np.all(np.diff(cv) > 0)
    # the 3 Γ acoustic modes of 3·n·512 are left out (cutoff): limit·(1 − 1/1024) at high T
    assert abs(cv[-1] / limit - 1.0) < 2e-3
    dos = total_dos(ours, mesh=MESH)
    integral = np.trapezoid(dos["total_dos"], dos["frequency_points"])
    assert abs(integral - 3 * len(ours.primitive)) < 0.05 * 3 * len(ours.primitive)


def test_write_results_round_trip(tmp_path, crystal):
    """phonopy.load of the YAML gives our fc; summary.json matches phonopy on the FD fc."""
    name, _, _, ours, reference = crystal
    paths = write_results(ours, tmp_path, npoints=11, mesh=MESH)
    loaded = phonopy.load(paths["yaml"], produce_fc=False, log_level=0)
    stored = loaded.force_constants  # phonopy stores the compact form: rows of the primitive-cell atoms
    np.testing.assert_allclose(stored, ours.force_constants[ours.primitive.p2s_map], rtol=0, atol=1e-12)
    summary = json.loads(paths["summary"].read_text())
    np.testing.assert_allclose(
        summary["gamma_frequencies_THz"], np.sort(reference.get_frequencies([0, 0, 0])), rtol=0, atol=1e-3
    )
    reference.run_mesh(MESH, is_gamma_center=True)
    reference.auto_band_structure(npoints=11)
    lowest = min(reference.get_mesh_dict()["frequencies"].min(),
                 min(f.min() for f in reference.get_band_structure_dict()["frequencies"]))
    assert summary["has_imaginary_modes"] == bool(lowest < -summary["imaginary_tolerance_THz"])
    reference.run_thermal_properties(temperatures=[300.0], cutoff_frequency=CUTOFF_FREQUENCY_THZ)
    ref = reference.get_thermal_properties_dict()
    thermal = summary["thermal"]
    assert thermal["temperature_K"] == 300.0
    np.testing.assert_allclose(thermal["free_energy_kJ_per_mol"], ref["free_energy"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(thermal["entropy_J_per_K_mol"], ref["entropy"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(thermal["heat_capacity_J_per_K_mol"], ref["heat_capacity"][0], rtol=1e-4, atol=1e-5)
    # phonopy's own result files, against the finite-displacement reference
    band = yaml.safe_load(paths["band"].read_text())
    for point in band["phonon"][:: max(1, len(band["phonon"]) // 5)]:
        np.testing.assert_allclose([b["frequency"] for b in point["band"]],
                                   reference.get_frequencies(point["q-position"]), rtol=0, atol=1e-3)
    table = yaml.safe_load(paths["thermal"].read_text())["thermal_properties"]
    row = next(r for r in table if r["temperature"] == 300.0)
    np.testing.assert_allclose([row["free_energy"], row["entropy"], row["heat_capacity"]],
                               [ref["free_energy"][0], ref["entropy"][0], ref["heat_capacity"][0]], rtol=1e-4, atol=1e-5)
    assert table[0]["temperature"] == 0.0 and table[-1]["temperature"] == 1000.0
    frequencies, states = np.loadtxt(paths["dos"], unpack=True)
    assert np.trapezoid(states, frequencies) == pytest.approx(3 * len(ours.primitive), rel=0.02)
    assert summary["band_labels"][0] == "$\\Gamma$"
    # phonopy's convention: a label per segment, and one more where the path jumps or ends
    connections = summary["band_path_connections"]
    assert len(connections) == len(summary["band_frequencies_THz"]) and connections[-1] is False
    assert len(summary["band_labels"]) == len(connections) + connections.count(False)


def test_too_small_supercell_warns_with_numbers():
    """2×2×2 primitive diamond Si: width 2·a/√3 = 6.270 Å < 2·6 Å; 3×3×3 conventional (16.29 Å) is fine."""
    potential = phonon_potential()
    si = unitcells()["Si-diamond"]
    np.testing.assert_allclose(perpendicular_widths(si.cell.array), 5.43 / np.sqrt(3) * np.ones(3), rtol=1e-12)
    with pytest.warns(SupercellTooSmallWarning, match=r"6\.270 Å.*2·r_max = 12\.000 Å"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            phonopy_from_potential(potential, si, SUPERCELL, method="symmetry")
    big = bulk("Si", "diamond", a=5.43, cubic=True) * (3, 3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        widths = check_supercell_size(big, potential.cutoff)
    np.testing.assert_allclose(widths, 3 * 5.43)
    with pytest.warns(SupercellTooSmallWarning, match=r"10\.860 Å"):
        check_supercell_size(bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2), potential.cutoff)


def test_structures_phonopy_cannot_take_are_refused():
    """Phonopy takes every cell as a crystal: a slab (its vacuum then counts as bulk, and the force
    constants differ from the model's Hessian) and a molecule are refused by name, as are supercell
    matrices that are not whole numbers (2.5 was truncated to 2) or not right-handed (phonopy's
    'Cell trimming failed')."""
    potential = phonon_potential()
    slab = bulk("Si", "diamond", a=5.43, cubic=True)
    slab.center(vacuum=1.5, axis=2)
    slab.pbc = [True, True, False]
    with pytest.raises(ValueError, match=r"pbc=\[True, True, False\].*partial_hessian"):
        phonopy_from_potential(potential, slab, 1)
    si = unitcells()["Si-diamond"]
    with pytest.raises(ValueError, match="whole numbers"):
        phonopy_from_potential(potential, si, 2.5)
    with pytest.raises(ValueError, match="determinant -1"):
        phonopy_from_potential(potential, si, [[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="determinant 0"):
        phonopy_from_potential(potential, si, 0)
