"""Comparison with a reference: errors against hand computations from phonopy's own frequencies
and thermal properties, references read from phonopy files, and clear errors for a wrong one."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from phonopy import Phonopy
from phonopy.file_IO import write_FORCE_CONSTANTS, write_FORCE_SETS

from phonon_models import other_potential, phonon_potential, quiet, unitcells

from equitrain_jax.calculator import Calculator
from equitrain_jax.phonons import (
    band_structure,
    compare_phonons,
    load_reference,
    phonopy_from_calculator,
    phonopy_from_potential,
    write_results,
)
from equitrain_jax.phonons import CUTOFF_FREQUENCY_THZ, ase_to_phonopy
from equitrain_jax.phonons.plots import plot_band_structure_and_dos, plot_thermal_properties

MESH = (4, 4, 4)
NPOINTS = 11
THERMAL = {"free_energy": "free_energy_kJ_per_mol", "entropy": "entropy_J_per_K_mol",
           "heat_capacity": "heat_capacity_J_per_K_mol"}


def permuted_primitive(atoms):
    """The same crystal with its cell vectors cycled (a, b, c) → (b, c, a): another primitive setting."""
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell.array[[1, 2, 0]], scale_atoms=False)
    return atoms


@pytest.fixture(scope="module")
def model_and_reference():
    """Model: analytic fc of NaCl, 2×2×2.  Reference: phonopy finite displacements (0.01 Å) with a
    differently seeded model, in a 3×3×3 supercell of a cyclically permuted primitive cell (kept as
    phonopy's primitive)."""
    unitcell = unitcells()["NaCl-rocksalt"]
    model = quiet(phonopy_from_potential, phonon_potential(), unitcell, 2)
    reference = quiet(phonopy_from_calculator, Calculator(other_potential()), permuted_primitive(unitcell), 3,
                      primitive_matrix="P")
    return model, reference


def hand_errors(model, reference, qpoints) -> dict:
    """The errors by hand: each reduced q of the model carried through Cartesian coordinates into the
    reference's basis, frequencies from phonopy's get_frequencies one q-point at a time."""
    cartesian = qpoints @ np.linalg.inv(model.primitive.cell).T
    in_reference = cartesian @ reference.primitive.cell.T
    mine = np.array([model.get_frequencies(q) for q in qpoints])
    theirs = np.array([reference.get_frequencies(q) for q in in_reference])
    difference = mine - theirs
    return {
        "mae_THz": np.abs(difference).mean(),
        "rmse_THz": np.sqrt((difference**2).mean()),
        "max_abs_error_THz": np.abs(difference).max(),
        "max_frequency_error_THz": mine.max() - theirs.max(),
    }


def phonopy_thermal(phonon, temperature=300.0) -> dict:
    phonon.run_mesh(MESH, is_gamma_center=True)
    phonon.run_thermal_properties(temperatures=[temperature], cutoff_frequency=CUTOFF_FREQUENCY_THZ)
    return {key: phonon.get_thermal_properties_dict()[key][0] for key in THERMAL}


def test_errors_match_a_hand_computation(model_and_reference):
    """Band-path and mesh MAE/RMSE/max errors against phonopy's frequencies q-point by q-point
    (Cartesian mapping, not the integer transformation), thermal errors against phonopy's own F, S, Cv
    differences; the errors are not small, so the test sees them."""
    model, reference = model_and_reference
    result = compare_phonons(model, reference, npoints=NPOINTS, mesh=MESH)
    assert result["primitive_transformation"] == [[0, 1, 0], [0, 0, 1], [1, 0, 0]]
    band_q = np.concatenate(band_structure(model, npoints=NPOINTS)["qpoints"])
    model.run_mesh(MESH, is_gamma_center=True, is_mesh_symmetry=False)
    mesh_q = model.get_mesh_dict()["qpoints"]
    for name, qpoints in (("band_path", band_q), ("mesh", mesh_q)):
        expected = hand_errors(model, reference, qpoints)
        assert result[name]["n_qpoints"] == len(qpoints)
        assert expected["mae_THz"] > 0.1, f"premise: the two models differ ({expected['mae_THz']:.3g} THz)"
        for key, value in expected.items():
            np.testing.assert_allclose(result[name][key], value, rtol=1e-9, atol=1e-12, err_msg=f"{name} {key}")
    mine, theirs = phonopy_thermal(model), phonopy_thermal(reference)
    for key, label in THERMAL.items():
        entry = result["thermal"][label]
        np.testing.assert_allclose([entry["model"], entry["reference"]], [mine[key], theirs[key]], rtol=1e-12)
        np.testing.assert_allclose(entry["error"], mine[key] - theirs[key], rtol=1e-9, atol=1e-12)
        assert abs(entry["error"]) > 1e-3, key


def test_comparison_with_itself_is_zero(tmp_path, model_and_reference):
    """The model against itself: every error is exactly 0.  Against its own written
    phonopy_params.yaml (fc kept to 10 decimals, re-symmetrised on loading): MAE below 1e-7 THz
    (measured 1.4e-8), largest error below 1e-6 THz (1.6e-7, an acoustic mode near Γ), thermal
    errors below 1e-6 (measured 1.5e-7 J/K/mol)."""
    model, _ = model_and_reference
    keys = ("mae_THz", "rmse_THz", "max_abs_error_THz", "max_frequency_error_THz")
    same = compare_phonons(model, model, npoints=NPOINTS, mesh=MESH)
    assert all(same[name][key] == 0.0 for name in ("band_path", "mesh") for key in keys)
    assert all(same["thermal"][label]["error"] == 0.0 for label in THERMAL.values())
    paths = write_results(model, tmp_path, npoints=NPOINTS, mesh=MESH)
    result = compare_phonons(model, load_reference(paths["yaml"]), npoints=NPOINTS, mesh=MESH)
    for name in ("band_path", "mesh"):
        assert result[name]["mae_THz"] < 1e-7 and result[name]["max_abs_error_THz"] < 1e-6, result[name]
    for label in THERMAL.values():
        assert abs(result["thermal"][label]["error"]) < 1e-6, (label, result["thermal"][label])


def test_reference_from_force_sets_and_force_constants_files(tmp_path, model_and_reference):
    """A phonopy.yaml (structure only) with FORCE_SETS beside it, and with a FORCE_CONSTANTS file
    named explicitly, give the in-memory reference's frequencies (1e-6 THz: FORCE_SETS keeps 10
    decimals) and its comparison."""
    model, reference = model_and_reference
    for name in ("sets", "constants"):
        (tmp_path / name).mkdir()
        reference.save(tmp_path / name / "phonopy.yaml", settings={"force_sets": False, "displacements": False,
                                                                     "force_constants": False})
    write_FORCE_SETS(reference.dataset, filename=str(tmp_path / "sets" / "FORCE_SETS"))
    write_FORCE_CONSTANTS(reference.force_constants, filename=str(tmp_path / "fc.txt"))
    from_sets = load_reference(tmp_path / "sets" / "phonopy.yaml")
    from_constants = load_reference(tmp_path / "constants" / "phonopy.yaml", force_constants=tmp_path / "fc.txt")
    qpoints = np.array([[0, 0, 0], [0.5, 0, 0], [0.5, 0.25, 0.1], [1 / 3, 1 / 3, 0]])
    expected = np.array([reference.get_frequencies(q) for q in qpoints])
    direct = compare_phonons(model, reference, npoints=NPOINTS, mesh=MESH)
    for loaded in (from_sets, from_constants):
        np.testing.assert_allclose([loaded.get_frequencies(q) for q in qpoints], expected, rtol=0, atol=1e-6)
        result = compare_phonons(model, loaded, npoints=NPOINTS, mesh=MESH)
        np.testing.assert_allclose(result["mesh"]["mae_THz"], direct["mesh"]["mae_THz"], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="no force constants"):
        load_reference(tmp_path / "constants" / "phonopy.yaml")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_reference(tmp_path / "missing.yaml")


def test_wrong_reference_raises_a_clear_error(model_and_reference):
    """Another crystal (diamond Si), or the same atoms on a lattice 15 % larger, are refused by name
    before any frequency is computed (the references need no force constants to be refused)."""
    model, _ = model_and_reference
    silicon = quiet(Phonopy, ase_to_phonopy(unitcells()["Si-diamond"]), supercell_matrix=np.eye(3, dtype=int))
    with pytest.raises(ValueError, match=r"different crystal.*is Si2 .*\[14, 14\].*is ClNa .*\[11, 17\]"):
        compare_phonons(model, silicon)
    stretched = bulk("NaCl", "rocksalt", a=5.64 * 1.15)
    stretched = quiet(Phonopy, ase_to_phonopy(stretched), supercell_matrix=np.eye(3, dtype=int))
    with pytest.raises(ValueError, match="primitive lattice is not the model's"):
        compare_phonons(model, stretched)


def test_overlay_plot_of_several_models(tmp_path, model_and_reference):
    """Three phonon sets (the third: the model's force constants softened by 20 %), two primitive
    settings, one figure with a legend."""
    model, reference = model_and_reference
    softer = Phonopy(model.unitcell, supercell_matrix=model.supercell_matrix, primitive_matrix=model.primitive_matrix)
    softer.force_constants = 0.8 * model.force_constants
    path = plot_band_structure_and_dos({"model": model, "reference": reference, "softer": softer},
                                       tmp_path / "overlay.png", mesh=MESH)
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10_000


def test_thermal_plot_of_several_models(tmp_path, model_and_reference):
    """F, S, Cv against T for two primitive settings of NaCl in one figure; another crystal is
    refused by name (per-mole numbers of different primitive cells would not compare)."""
    model, reference = model_and_reference
    path = plot_thermal_properties({"model": model, "reference": reference}, tmp_path / "thermal.png",
                                   mesh=MESH, t_max=600)
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10_000
    silicon = quiet(Phonopy, ase_to_phonopy(unitcells()["Si-diamond"]), supercell_matrix=np.eye(3, dtype=int))
    with pytest.raises(ValueError, match="different crystal"):
        plot_thermal_properties({"model": model, "Si": silicon}, tmp_path / "refused.png", mesh=MESH)
    assert not (tmp_path / "refused.png").exists()
