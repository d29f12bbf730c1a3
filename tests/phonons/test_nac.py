"""The non-analytic correction (LO–TO splitting) of a model's force constants with DFT Born charges:
against phonopy's own NAC applied by phonopy to the same force constants (read from files), the
LO–TO splitting of a diatomic cubic crystal worked out by hand, phonopy's NaCl example (VASP, in
``benchmarks/data/phonopy-examples``), and references read from beside their YAML, never from the
working directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import ase.io
import numpy as np
import phonopy
import pytest
from phonopy.file_IO import write_FORCE_CONSTANTS
from phonopy.physical_units import get_physical_units

from phonon_models import phonon_potential, quiet, unitcells

from equitrain_jax.phonons import band_structure, compare_phonons, load_reference, phonopy_from_potential
from equitrain_jax.phonons.compare import path_frequencies, reference_nac_source
from equitrain_jax.phonons.modes import commensurate_qpoints, modes_at
from equitrain_jax.phonons.nac import apply_nac, gamma_limit_frequencies, read_born, transfer_nac_params

NACL = Path(__file__).parents[2] / "benchmarks" / "data" / "phonopy-examples" / "NaCl"
DIRECTIONS = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [0.3, -0.7, 0.2]])  # Cartesian
NPOINTS = 11


@pytest.fixture(scope="module")
def nacl_model():
    """The random model's force constants of rocksalt NaCl (2×2×2 primitive cells), with the NaCl
    example's DFT Born charges and ε∞ read from its BORN file."""
    phonon = quiet(phonopy_from_potential, phonon_potential(), unitcells()["NaCl-rocksalt"], 2)
    return apply_nac(phonon, read_born(NACL / "BORN", phonon))


def test_nac_equals_phonopys_own_on_the_same_force_constants(tmp_path, nacl_model):
    """The model's force constants written to FORCE_CONSTANTS and loaded by phonopy with the BORN
    file (phonopy reads and applies it itself): the same frequencies at Γ approached along four
    directions, at q 10⁻³ from Γ along them, and along the band path (phonopy's band structure
    through Γ against `path_frequencies`), to 1e-6 THz; and the LO modes really are split."""
    unitcell = unitcells()["NaCl-rocksalt"]
    ase.io.write(tmp_path / "POSCAR", unitcell, format="vasp")
    write_FORCE_CONSTANTS(nacl_model.force_constants, filename=str(tmp_path / "FORCE_CONSTANTS"))
    theirs = phonopy.load(unitcell_filename=tmp_path / "POSCAR", supercell_matrix=[2, 2, 2], primitive_matrix="auto",
                          force_constants_filename=tmp_path / "FORCE_CONSTANTS", born_filename=NACL / "BORN",
                          symmetrize_fc=False, log_level=0)
    theirs.masses = unitcell.get_masses()  # ASE's (Cl 35.45 amu), not phonopy's table (35.453)
    assert theirs.nac_params is not None
    reciprocal = np.linalg.inv(theirs.primitive.cell)  # columns: reciprocal vectors (no 2π)
    for direction in DIRECTIONS:
        reduced = np.linalg.solve(reciprocal, direction)  # phonopy's nac_q_direction
        theirs.run_qpoints([[0, 0, 0]], nac_q_direction=reduced)
        mine = gamma_limit_frequencies(nacl_model, direction)
        np.testing.assert_allclose(mine, np.sort(theirs.qpoints.frequencies[0]), rtol=0, atol=1e-6)
        assert mine[-1] - mine[-2] > 1.0, f"premise: LO above TO along {direction} ({mine[-3:]})"
        near = 1e-3 * reduced / np.linalg.norm(reduced)
        theirs.run_qpoints([near])
        nacl_model.run_qpoints([near])
        np.testing.assert_allclose(nacl_model.qpoints.frequencies, theirs.qpoints.frequencies, rtol=0, atol=1e-6)
    segments = band_structure(nacl_model, npoints=NPOINTS)["qpoints"]
    theirs.run_band_structure(segments)
    through_gamma = sum(np.any(np.all(np.abs(q) < 1e-12, axis=1)) for q in segments)
    assert through_gamma >= 2, "premise: the path passes Γ"
    for mine, expected in zip(path_frequencies(nacl_model, segments), theirs.get_band_structure_dict()["frequencies"]):
        np.testing.assert_allclose(mine, expected, rtol=0, atol=1e-6)


def test_lo_to_splitting_is_the_born_charges_dipole_term(nacl_model):
    """Physics: in a cubic diatomic crystal the longitudinal modes at Γ are the eigenvalues of the
    analytic ω_TO² on the optical pattern (√m₂, −√m₁)/√(m₁+m₂) plus the dipole term
    (4π·e²/(4πε₀)/(V ε∞)) (Z_κ Z_κ'/√(m_κ m_κ')), the same along every direction; the transverse
    ones keep the analytic frequencies.  From the model's own Γ frequencies without NAC, the
    BORN file's charges made neutral, the cell volume and the masses: 1e-6 THz."""
    analytic = np.sort(nacl_model.get_frequencies([0, 0, 0]))  # exactly at Γ phonopy applies no NAC
    to_thz = get_physical_units().DefaultToTHz  # f = √λ · this, λ in eV/(Å²·amu)
    transverse = analytic[-1]
    assert np.allclose(analytic[-3:], transverse) and transverse > 0.1, f"premise: a stable TO mode ({analytic})"
    masses = np.asarray(nacl_model.primitive.masses)
    charges = np.array([np.trace(z) / 3 for z in read_born(NACL / "BORN", nacl_model)["born"]])
    charges -= charges.mean()  # charge neutrality, which phonopy imposes (+1.08703 and −1.08672 → ±1.086875)
    epsilon = 2.43533967
    factor = 14.4  # the BORN file's first line, e²/(4πε₀) in eV·Å
    dipole = 4 * np.pi * factor / (nacl_model.primitive.volume * epsilon) * np.outer(charges, charges) / np.sqrt(
        np.outer(masses, masses))
    optical = np.array([np.sqrt(masses[1]), -np.sqrt(masses[0])]) / np.sqrt(masses.sum())
    longitudinal = (transverse / to_thz) ** 2 * np.outer(optical, optical) + dipole
    expected = np.sqrt(np.clip(np.linalg.eigvalsh(longitudinal), 0, None)) * to_thz
    for direction in DIRECTIONS:
        frequencies = gamma_limit_frequencies(nacl_model, direction)
        np.testing.assert_allclose(frequencies[-1], expected[-1], rtol=0, atol=1e-6)
        np.testing.assert_allclose(frequencies[3:5], [transverse, transverse], rtol=0, atol=1e-6)
    assert expected[-1] - transverse > 1.0, "premise: the splitting is large"


def test_modes_at_the_supercells_qpoints_are_unchanged_by_nac(nacl_model):
    """The mode analysis sees the supercell's modes: at Γ and every commensurate q-point the modes
    with NAC have the frequencies and patterns of those without (phonopy's NAC changes nothing
    there); at a q-point in between it does change them."""
    plain = quiet(phonopy_from_potential, phonon_potential(), unitcells()["NaCl-rocksalt"], 2)
    for qpoint in commensurate_qpoints(nacl_model):
        with_nac, without = modes_at(nacl_model, qpoint), modes_at(plain, qpoint)
        np.testing.assert_allclose([m.frequency for m in with_nac], [m.frequency for m in without], rtol=0, atol=1e-8)
        for a, b in zip(with_nac, without):
            overlap = np.einsum("kia,lia->kl", a.patterns, b.patterns)  # same spanned space: orthogonal overlap
            np.testing.assert_allclose(np.abs(np.linalg.svd(overlap, compute_uv=False)), 1.0, atol=1e-6)
    between = [0.1, 0.2, 0.05]
    assert np.abs(nacl_model.get_frequencies(between) - plain.get_frequencies(between)).max() > 0.1


def test_nacl_example_reference_reads_its_born_file(nacl_model):
    """Phonopy's NaCl example (phonopy_disp.yaml with FORCE_SETS and BORN beside it): the reference
    has the example's NAC as phonopy.load gives it (its DFT LO 7.40 THz at Γ, TO 4.62 THz), and
    the model on its cells inherits the same parameters."""
    reference = load_reference(NACL / "phonopy_disp.yaml")
    assert reference_nac_source(NACL / "phonopy_disp.yaml") == str(NACL / "BORN")
    theirs = phonopy.load(NACL / "phonopy_disp.yaml", force_sets_filename=NACL / "FORCE_SETS",
                          born_filename=NACL / "BORN", log_level=0)
    for direction in DIRECTIONS:
        np.testing.assert_allclose(gamma_limit_frequencies(reference, direction),
                                   gamma_limit_frequencies(theirs, direction), rtol=0, atol=1e-9)
    lo_to = gamma_limit_frequencies(reference, [1, 0, 0])
    assert abs(lo_to[-1] - 7.396) < 1e-3 and abs(lo_to[-2] - 4.616) < 1e-3, lo_to
    moved = transfer_nac_params(reference.nac_params, reference, nacl_model)  # another cell setting, same atoms
    np.testing.assert_allclose(moved["born"], reference.nac_params["born"], atol=1e-12)
    assert moved["factor"] == 14.4


def test_reference_files_come_from_beside_the_yaml_not_the_working_directory(tmp_path, monkeypatch):
    """phonopy.load reads BORN, FORCE_SETS and FORCE_CONSTANTS from the working directory (the
    premise, checked); load_reference reads only what lies beside the YAML."""
    here, there = tmp_path / "cwd", tmp_path / "reference"
    here.mkdir(), there.mkdir()
    shutil.copy(NACL / "phonopy_disp.yaml", there)
    for name in ("FORCE_SETS", "BORN"):
        shutil.copy(NACL / name, here)
    monkeypatch.chdir(here)
    premise = phonopy.load(there / "phonopy_disp.yaml", log_level=0)
    assert premise.nac_params is not None and premise.force_constants is not None, "premise: phonopy reads the cwd"
    with pytest.raises(ValueError, match="no force constants"):
        load_reference(there / "phonopy_disp.yaml")
    shutil.copy(NACL / "FORCE_SETS", there)
    assert load_reference(there / "phonopy_disp.yaml").nac_params is None
    assert reference_nac_source(there / "phonopy_disp.yaml") is None
    (here / "BORN").write_text("14.4\n9 0 0 0 9 0 0 0 9\n3 0 0 0 3 0 0 0 3\n-3 0 0 0 -3 0 0 0 -3\n")
    shutil.copy(NACL / "BORN", there)
    loaded = load_reference(there / "phonopy_disp.yaml")
    np.testing.assert_allclose(loaded.nac_params["born"][0], 1.08703 * np.eye(3), atol=1e-12)
    assert load_reference(there / "phonopy_disp.yaml", nac=False).nac_params is None


def test_born_files_that_do_not_fit_are_named_errors(tmp_path, nacl_model):
    """Too few or too many lines for the structure's independent atoms, charges of another atom
    order (not neutral), a dielectric tensor that is not positive definite: ValueErrors naming the
    file and the atoms the lines stand for."""
    cases = {
        "short": ("14.4\n2 0 0 0 2 0 0 0 2\n1 0 0 0 1 0 0 0 1\n", "not enough"),
        "long": ("14.4\n2 0 0 0 2 0 0 0 2\n1 0 0 0 1 0 0 0 1\n-1 0 0 0 -1 0 0 0 -1\n1 0 0 0 1 0 0 0 1\n", "Too many"),
        "charged": ("14.4\n2 0 0 0 2 0 0 0 2\n1 0 0 0 1 0 0 0 1\n1 0 0 0 1 0 0 0 1\n", "charge neutrality"),
        "epsilon": ("14.4\n-2 0 0 0 2 0 0 0 2\n1 0 0 0 1 0 0 0 1\n-1 0 0 0 -1 0 0 0 -1\n", "not positive definite"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message) as error:
            read_born(tmp_path / name, nacl_model)
        assert str(tmp_path / name) in str(error.value) and "Na (atom 1), Cl (atom 2)" in str(error.value)


def test_a_reference_with_nac_is_never_compared_with_a_model_without(nacl_model):
    """compare_phonons refuses one-sided NAC either way; with the same parameters on both it
    compares, and says so."""
    reference = load_reference(NACL / "phonopy_disp.yaml")
    plain = quiet(phonopy_from_potential, phonon_potential(), unitcells()["NaCl-rocksalt"], 2)
    with pytest.raises(ValueError, match="the reference has NAC .* and the model has none"):
        compare_phonons(plain, reference, npoints=NPOINTS, mesh=(4, 4, 4))
    with pytest.raises(ValueError, match="the model has NAC .* and the reference has none"):
        compare_phonons(nacl_model, load_reference(NACL / "phonopy_disp.yaml", nac=False), npoints=NPOINTS,
                        mesh=(4, 4, 4))
    result = compare_phonons(nacl_model, reference, npoints=NPOINTS, mesh=(4, 4, 4))
    assert result["nac"] == {"model": True, "reference": True, "method": "gonze", "same_parameters": True}
