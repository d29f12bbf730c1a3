"""Imaginary modes: scans along a mode against phonopy's eigenvalues, and a crystal that is unstable
by physics (simple-cubic Lennard-Jones) found, scanned and followed to a lower-symmetry structure."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from phonon_models import phonon_potential, quiet, unitcells

from equitrain_jax.phonons import (
    analyse_imaginary_modes,
    commensurate_qpoints,
    follow_mode,
    imaginary_modes,
    modes_at,
    phonopy_from_calculator,
    phonopy_from_potential,
    scan_mode,
    scan_mode_2d,
)
from equitrain_jax.phonons.scans import scan_minimum
from equitrain_jax.phonons.plots import plot_mode_scan_2d, plot_mode_scans

# CODATA 2018, independent of phonopy's unit factors
EV = 1.602176634e-19  # J
AMU = 1.66053906660e-27  # kg
ANGSTROM = 1e-10  # m
STENCIL = {-2: -1.0 / 12, -1: 16.0 / 12, 0: -30.0 / 12, 1: 16.0 / 12, 2: -1.0 / 12}  # 4th-order 2nd derivative

# Ar-like Lennard-Jones, simple cubic with the nearest neighbours at the pair minimum 2^(1/6)·σ.
SIGMA, EPSILON = 3.4, 0.0104  # Å, eV
LATTICE = 2 ** (1 / 6) * SIGMA


def eigenvalue_from_frequency(frequency_thz: float) -> float:
    """λ = sign(f)·(2π f)² in eV/(amu·Å²) from f in THz, by the SI constants."""
    omega = 2 * np.pi * frequency_thz * 1e12  # rad/s
    return float(np.sign(frequency_thz) * omega**2 * AMU * ANGSTROM**2 / EV)


def scan_curvatures(phonon, mode, model, step: float) -> np.ndarray:
    """d²E/dQ² at Q = 0 along each pattern (eV/(amu·Å²)), 4th-order stencil on `scan_mode` energies."""
    scan = scan_mode(phonon, mode, model, amplitudes=step * np.array(sorted(STENCIL)))
    return scan["energies"] @ np.array([STENCIL[k] for k in sorted(STENCIL)]) / step**2


def test_scan_curvature_is_the_phonopy_eigenvalue():
    """Diamond Si under the random model (analytic fc, 2×2×2): along every pattern of the Γ optical
    mode, the imaginary pair at q = (½,0,0) and the highest mode at (½,½,0), the curvature of the
    energy (Potential.evaluate, neighbour lists rebuilt; no Hessian) at Q = 0 equals (2πf)² of
    phonopy's frequency f, converted with SI constants (1e-6 relative; measured 2.5e-7, which is
    phonopy's unit factor against SI 2018)."""
    potential = phonon_potential()
    phonon = quiet(phonopy_from_potential, potential, unitcells()["Si-diamond"], 2)
    chosen = [modes_at(phonon, [0, 0, 0])[1], modes_at(phonon, [0.5, 0, 0])[0], modes_at(phonon, [0.5, 0.5, 0])[-1]]
    assert chosen[1].frequency < -0.5, "premise: this model makes diamond Si unstable at (½,0,0)"
    assert [len(mode.patterns) for mode in chosen] == [3, 2, 2]
    for mode in chosen:
        expected = eigenvalue_from_frequency(mode.frequency)
        assert abs(mode.eigenvalue - expected) < 1e-6 * abs(expected)  # phonopy's constants: 2.5e-7 off SI 2018
        curvatures = scan_curvatures(phonon, mode, potential, step=0.02)
        np.testing.assert_allclose(curvatures, expected, rtol=1e-6, err_msg=str(mode.to_dict()))


def test_mode_patterns_are_eigenvectors_of_the_supercell():
    """fcc Cu (EMT, phonopy finite displacements) in a 2×2×2 conventional supercell, whose matrix on
    the primitive cell is not diagonal: at each of the 32 commensurate q-points, every pattern is an
    eigenvector of the supercell's mass-weighted force constants M^-½ Φ M^-½ with the eigenvalue of
    phonopy's frequency (residual below 1e-6·|λ|: phonopy's unit factor is 2.5e-7 off SI), the
    patterns of a mode are orthonormal, and together they span all 3N directions."""
    phonon = phonopy_from_calculator(EMT(), bulk("Cu", "fcc", a=3.6, cubic=True), 2)
    n = len(phonon.supercell)
    weights = np.repeat(np.asarray(phonon.supercell.masses), 3) ** -0.5
    dynamical = phonon.force_constants.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) * np.outer(weights, weights)
    qpoints = commensurate_qpoints(phonon, symmetry_reduce=False)
    assert len(qpoints) == 32 and len(commensurate_qpoints(phonon)) < 32
    patterns = []
    for qpoint in qpoints:
        for mode in modes_at(phonon, qpoint):
            flat = mode.patterns.reshape(len(mode.patterns), 3 * n)
            np.testing.assert_allclose(flat @ flat.T, np.eye(len(flat)), rtol=0, atol=1e-12)
            expected = eigenvalue_from_frequency(mode.frequency) if abs(mode.frequency) > 1e-6 else 0.0
            residual = flat @ dynamical - expected * flat
            assert np.abs(residual).max() < 1e-12 + 1e-6 * abs(expected), (qpoint, mode.bands)
            patterns.append(flat)
    assert np.linalg.matrix_rank(np.concatenate(patterns), tol=1e-8) == 3 * n


@pytest.fixture(scope="module")
def lennard_jones():
    """Simple-cubic LJ at the pair minimum: the nearest neighbours pull with zero force, so they
    resist no shear (transverse stiffness φ'(r)/r = 0), and the second neighbours sit beyond the
    inflection point (φ'' < 0): the sc lattice is unstable against shearing planes, the textbook
    case of a pair-potential lattice that collapses towards close packing.  Force constants by
    phonopy's finite displacements (±1e-3 Å) with ASE's calculator."""
    calculator = LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=2.5 * SIGMA, smooth=True)
    unitcell = Atoms("Ar", cell=np.eye(3) * LATTICE, pbc=True)
    phonon = phonopy_from_calculator(calculator, unitcell, 2, distance=1e-3, plusminus=True)
    return calculator, phonon


def test_unstable_modes_of_simple_cubic_lennard_jones_are_found(lennard_jones):
    """Every frequency below −0.05 THz at the 8 commensurate q-points (phonopy, no symmetry
    reduction) is found, one q-point per star: the shear modes at X (a degenerate pair, 2 patterns)
    and M (one); Γ holds only the three zero acoustic modes."""
    _, phonon = lennard_jones
    modes = imaginary_modes(phonon, threshold=0.05)
    all_q = commensurate_qpoints(phonon, symmetry_reduce=False)
    assert len(all_q) == 8 and len(commensurate_qpoints(phonon)) == 4  # Γ, X, M, R
    unstable = sorted({round(f, 8) for q in all_q for f in phonon.get_frequencies(q) if f < -0.05})
    assert len(unstable) == 2
    assert sorted(round(mode.frequency, 8) for mode in modes) == unstable
    by_star = {tuple(np.sort(np.abs(mode.qpoint))): mode for mode in modes}
    assert set(by_star) == {(0.0, 0.0, 0.5), (0.0, 0.5, 0.5)}
    assert by_star[(0.0, 0.0, 0.5)].bands == (0, 1) and len(by_star[(0.0, 0.0, 0.5)].patterns) == 2
    assert len(by_star[(0.0, 0.5, 0.5)].patterns) == 1
    assert np.abs(phonon.get_frequencies([0, 0, 0])).max() < 1e-3
    with pytest.raises(ValueError, match="positive frequency"):
        imaginary_modes(phonon, threshold=-0.05)


def test_lennard_jones_double_well_and_following_the_mode(lennard_jones, tmp_path):
    """Along each unstable mode: curvature at Q = 0 equals phonopy's (2πf)² (1e-5 relative; measured
    1e-6, the error of the ±1e-3 Å finite-displacement force constants), E(Q) = E(−Q) (a lattice
    translation maps one onto the other), and a double well: E falls from Q = 0 to a minimum inside
    the range, then rises again (shearing planes by a full lattice vector gives back sc).  Relaxing
    from that minimum (BFGS) ends below the undistorted energy with a lower space group than
    Pm-3m (221)."""
    calculator, phonon = lennard_jones
    scans = {}
    for mode in imaginary_modes(phonon):
        curvatures = scan_curvatures(phonon, mode, calculator, step=0.05)
        np.testing.assert_allclose(curvatures, eigenvalue_from_frequency(mode.frequency), rtol=1e-5)
        scan = scan_mode(phonon, mode, calculator, max_displacement=LATTICE / 3, npoints=21)
        energies = scan["energies"]
        np.testing.assert_allclose(energies, energies[:, ::-1], rtol=0, atol=1e-10)
        middle = len(scan["amplitudes"]) // 2
        assert scan["amplitudes"][middle] == 0.0 and np.all(energies[:, middle] == 0.0)
        minimum = scan_minimum(scan)
        assert minimum["energy_eV"] < -1e-3 and not minimum["at_edge_of_range"]
        assert np.all(energies[:, [0, -1]] > minimum["energy_eV"] + 1e-4)  # it rises again
        assert np.all(np.diff(energies[0, middle:][: np.argmin(energies[0, middle:]) + 1]) < 0)  # falls monotonically
        relaxed, record = follow_mode(phonon, mode, calculator, minimum["amplitude_amu05_A"], fmax=1e-4)
        assert record["converged"]
        assert record["relaxed_energy_change_eV"] <= minimum["energy_eV"] + 1e-9
        assert record["space_group_before"] == "Pm-3m (221)"
        assert int(record["space_group_after"].split("(")[1].rstrip(")")) < 221
        assert len(relaxed) == 8
        scans[f"q={mode.qpoint.tolist()}"] = scan
    assert plot_mode_scans(scans, tmp_path / "scans.png").read_bytes()[:4] == b"\x89PNG"


def test_two_dimensional_scan_of_the_degenerate_pair(lennard_jones, tmp_path):
    """The X shear pair: near Q = 0 the energy surface is ½λ(Q₁² + Q₂²) (Hessian of the 2D scan by
    central differences = λ·I, 1e-4 relative to λ; measured 1.2e-5, the O(h²) stencil error); a
    1-pattern mode has no 2D scan."""
    calculator, phonon = lennard_jones
    pair = next(mode for mode in imaginary_modes(phonon) if len(mode.patterns) == 2)
    step = 0.05
    scan = scan_mode_2d(phonon, pair, calculator, amplitudes=[-step, 0.0, step])
    e = scan["energies"]
    hessian = np.array([
        [e[2, 1] - 2 * e[1, 1] + e[0, 1], (e[2, 2] - e[2, 0] - e[0, 2] + e[0, 0]) / 4],
        [(e[2, 2] - e[2, 0] - e[0, 2] + e[0, 0]) / 4, e[1, 2] - 2 * e[1, 1] + e[1, 0]],
    ]) / step**2
    expected = eigenvalue_from_frequency(pair.frequency)
    np.testing.assert_allclose(hessian, expected * np.eye(2), rtol=0, atol=1e-4 * abs(expected))
    wide = scan_mode_2d(phonon, pair, calculator, max_displacement=LATTICE / 3, npoints=9)
    assert wide["energies"].shape == (9, 9) and wide["energies"].min() < -1e-3
    assert plot_mode_scan_2d(wide, tmp_path / "scan2d.png").read_bytes()[:4] == b"\x89PNG"
    single = next(mode for mode in imaginary_modes(phonon) if len(mode.patterns) == 1)
    with pytest.raises(ValueError, match="two patterns"):
        scan_mode_2d(phonon, single, calculator)


def test_analysis_scans_the_most_unstable_modes_and_lists_all(lennard_jones):
    """analyse_imaginary_modes with max_modes=1: the M mode (−0.34 THz, below the X pair) is scanned
    and followed, the X pair only listed; the summary is JSON-ready."""
    import json

    calculator, phonon = lennard_jones
    report, results = analyse_imaginary_modes(phonon, calculator, max_displacement=LATTICE / 3, max_modes=1, fmax=1e-4)
    assert report["n_imaginary_modes"] == 2 and len(results) == 1 and results[0]["scan_2d"] is None
    first, second = report["modes"]
    assert first["frequency_THz"] < second["frequency_THz"] < -0.05
    assert first["double_well"] and first["follow"]["relaxed_energy_change_eV"] < first["scan_minimum"]["energy_eV"]
    assert "scan_minimum" not in second and second["n_patterns"] == 2
    json.dumps(report)


@pytest.mark.slow
def test_following_the_shear_mode_with_the_cell_relaxed_reaches_fcc(lennard_jones):
    """The X shear pair of sc Lennard-Jones, followed with the cell relaxed too, ends in the
    close-packed ground state: space group Fm-3m (225) and the energy per atom of an fcc LJ crystal
    relaxed on its own (ASE, 1-atom cell; 1e-5 eV/atom).  ~1.5 min on 2 busy cores."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    calculator, phonon = lennard_jones
    pair = next(mode for mode in imaginary_modes(phonon) if len(mode.patterns) == 2)
    minimum = scan_minimum(scan_mode(phonon, pair, calculator, max_displacement=LATTICE / 3, npoints=21))
    relaxed, record = follow_mode(phonon, pair, calculator, minimum["amplitude_amu05_A"], relax_cell=True, fmax=1e-4)
    assert record["converged"] and record["space_group_after"] == "Fm-3m (225)"
    fcc = bulk("Ar", "fcc", a=np.sqrt(2) * LATTICE)
    fcc.calc = calculator
    BFGS(FrechetCellFilter(fcc), logfile=None).run(fmax=1e-5, steps=200)
    per_atom = (record["energy_eV"] + record["relaxed_energy_change_eV"]) / len(relaxed)
    assert abs(per_atom - fcc.get_potential_energy()) < 1e-5


def test_new_phonopy_finds_the_primitive_cell_of_a_conventional_cell_without_phonopys_default_warning():
    """``primitive_matrix="auto"`` on conventional diamond Si (8 atoms): phonopy's fcc primitive matrix
    (2 atoms), and no `PrimitiveMatrixAutoDefaultWarning` (phonopy warns about its own default even
    when "auto" is asked for)."""
    import warnings

    from ase.build import bulk
    from phonopy.structure.cells import PrimitiveMatrixAutoDefaultWarning

    from equitrain_jax.phonons.bridge import new_phonopy

    with warnings.catch_warnings():
        warnings.simplefilter("error", PrimitiveMatrixAutoDefaultWarning)
        phonon = new_phonopy(bulk("Si", "diamond", a=5.43, cubic=True), 1)
    assert len(phonon.primitive) == 2
    np.testing.assert_allclose(np.abs(phonon.primitive_matrix), 0.5 * (1 - np.eye(3)))
