"""Quasi-harmonic approximation from one batch of Hessian-vector products against phonopy's own
finite displacements of the same model, one-by-one force constants, and finite differences of
frequencies in volume.

Rocksalt NaCl with the small random model of `phonon_models`: it has no imaginary modes, and its
E(V) has a minimum near a = 0.95 × 5.64 Å, so the grid is centred there (5 volumes, ±4 % in
volume, 2×2×2 primitive supercells of 16 atoms, 8×8×8 q-mesh, 0–300 K).
"""

from __future__ import annotations

import copy
import csv
import json
import warnings

import numpy as np
import pytest
from phonon_models import phonon_potential, quiet, unitcells
from phonopy import Phonopy

from equitrain_jax.calculator import Calculator
from equitrain_jax.phonons import phonopy_from_calculator, phonopy_from_potential
from equitrain_jax.phonons.bridge import ase_to_phonopy, phonopy_to_ase
from equitrain_jax.phonons.gruneisen import mode_gruneisen
from equitrain_jax.phonons.qha import analyse
from equitrain_jax.phonons.qha_config import volume_factors
from equitrain_jax.phonons.volumes import scale_volume, volume_series

SUPERCELL = 2
N_VOLUMES, STRAIN = 5, 0.04
MESH = (8, 8, 8)
T_MAX = 300.0
DISTANCE = 1e-3  # Å, phonopy's ± displacements of the reference: force-constant error ~ DISTANCE²


@pytest.fixture(scope="module")
def series():
    potential = phonon_potential()
    centre = scale_volume(unitcells()["NaCl-rocksalt"], 0.95**3)
    return potential, quiet(volume_series, potential, centre, SUPERCELL, n_volumes=N_VOLUMES, strain_range=STRAIN)


@pytest.fixture(scope="module")
def finite_displacements(series):
    """Phonopy's route at the same (relaxed) unit cells: its ± displacements, forces from our ASE
    calculator, its solver; static energies from the calculator, per primitive cell."""
    potential, ours = series
    calculator = Calculator(potential)
    phonons, energies = [], []
    for phonon in ours.phonons:
        unitcell = phonopy_to_ase(phonon.unitcell)
        phonons.append(quiet(phonopy_from_calculator, calculator, unitcell, SUPERCELL,
                             primitive_matrix=phonon.primitive_matrix, distance=DISTANCE, plusminus=True))
        unitcell.calc = calculator
        energies.append(unitcell.get_potential_energy() * len(phonon.primitive) / len(phonon.unitcell))
    return phonons, np.array(energies)


def test_volume_grid_follows_ase_calculate_eos(series):
    """Volumes V0·(1 − s) … V0·(1 + s) evenly spaced; the relaxations kept the crystal's symmetry."""
    _, ours = series
    reference = ours.volumes[N_VOLUMES // 2]
    np.testing.assert_allclose(ours.volumes / reference, np.linspace(1 - STRAIN, 1 + STRAIN, N_VOLUMES), rtol=1e-12)
    np.testing.assert_allclose(ours.volume_factors, volume_factors(N_VOLUMES, STRAIN))
    assert all(ours.converged)
    assert all(p.symmetry.dataset.international == "Fm-3m" for p in ours.phonons)


def test_batched_volumes_equal_one_by_one(series):
    """One batch over all volumes against `phonopy_from_potential` per volume (its own compiled
    Hessian-vector products, one structure at a time): equal to rounding."""
    potential, ours = series
    for phonon in ours.phonons:
        single = quiet(phonopy_from_potential, potential, phonopy_to_ase(phonon.unitcell), SUPERCELL,
                       primitive_matrix=phonon.primitive_matrix, method="displacements")
        scale = np.abs(single.force_constants).max()
        np.testing.assert_allclose(phonon.force_constants, single.force_constants, rtol=0, atol=1e-11 * scale)


def test_qha_samples_a_gamma_centred_symmetry_reduced_grid(series):
    """phonopy.run_qha samples explicit mesh numbers on its shifted grid: no Γ (so its
    exclude_gamma_acoustic excluded nothing) and no symmetry reduction.  `analyse` samples the
    Γ-centred grid that a length gives (found by the phonopy-conventions audit, 2026-12-01)."""
    _, ours = series
    analyse(ours.phonons, ours.energies, t_max=T_MAX, mesh=MESH)
    for phonon in ours.phonons:
        assert "run_mesh" not in vars(phonon)  # phonopy's own method again afterwards
        qpoints = phonon.mesh.qpoints
        assert np.any(np.all(np.abs(qpoints) < 1e-12, axis=1)), "Γ is on the grid"
        assert len(qpoints) < np.prod(MESH) / 4, "the point group reduces the grid"


def test_qha_matches_phonopy_finite_displacements(series, finite_displacements):
    """The whole QHA — V(T), G(T), B(T), β(T), C_P(T) — from our batch against phonopy's QHA of
    phonopy's finite displacements at the same volumes.

    Tolerances from the reference's errors, measured with ±1e-3 Å displacements (and checked to
    scale as the displacement squared, i.e. to be the finite-difference error, at 5e-4 and 2e-3 Å):
    force constants 3.6e-6 relative, V(T) 5e-8 relative, G(T) 3e-7 eV, C_P 1.1e-6 relative.  B(T)
    (1e-6) and β(T) (3e-5 relative to its largest value) do not shrink with the displacement: they
    are set by phonopy's EOS fits, whose V₀ agree to ~1e-8 relative, and β is the central
    difference of V(T) over ±10 K, a relative change of only ~6e-4.  Each tolerance is ~5–10× the
    measured error.
    """
    _, ours = series
    phonons, energies = finite_displacements
    np.testing.assert_allclose(ours.energies, energies, rtol=0, atol=1e-10)
    fc_error = max(np.abs(a.force_constants - b.force_constants).max() / np.abs(b.force_constants).max()
                   for a, b in zip(ours.phonons, phonons))
    assert fc_error < 2e-5, fc_error
    mine = analyse(ours.phonons, ours.energies, t_max=T_MAX, mesh=MESH).result
    theirs = analyse(phonons, energies, t_max=T_MAX, mesh=MESH).result
    np.testing.assert_array_equal(mine.temperatures, theirs.temperatures)
    assert mine.temperatures[-1] == T_MAX
    np.testing.assert_allclose(mine.equilibrium_volumes, theirs.equilibrium_volumes, rtol=5e-7)
    np.testing.assert_allclose(mine.gibbs_free_energies, theirs.gibbs_free_energies, rtol=0, atol=3e-6)
    np.testing.assert_allclose(mine.bulk_moduli, theirs.bulk_moduli, rtol=1e-5)
    beta, beta_fd = mine.thermal_expansion, theirs.thermal_expansion
    assert beta.max() > 1e-5  # premise: a real expansion (β ~ 3e-5 /K at 300 K)
    np.testing.assert_allclose(beta, beta_fd, rtol=0, atol=2e-4 * beta.max())
    cp, cp_fd = mine.heat_capacity_P.heat_capacities, theirs.heat_capacity_P.heat_capacities
    np.testing.assert_allclose(cp, cp_fd, rtol=0, atol=1e-5 * cp.max())


def test_mode_gruneisen_equals_finite_differences_of_frequencies(series):
    """γ = −(V/ω) ∂ω/∂V by phonopy's perturbation formula (⟨e|∂D/∂V|e⟩/2ω² with ∂D/∂V from the
    neighbouring volumes) against the central difference of the frequencies themselves, both at
    V(1 ± h), h = 1e-3.  They differ at O(h²): at the QHA grid's own spacing (h = 2 %) by 0.01–0.015
    for γ ≈ 2, and by 0.27 for two close bands at L whose mixing is second order in ΔD; at
    h = 1e-3 that is 400× smaller (measured: 6e-5 at most); tolerance 5e-4."""
    potential, ours = series
    centre = phonopy_to_ase(ours.phonons[N_VOLUMES // 2].unitcell)
    primitive = ours.phonons[0].primitive_matrix
    step = 1e-3
    phonons = [quiet(phonopy_from_potential, potential, scale_volume(centre, 1 + sign * step), SUPERCELL,
                     primitive_matrix=primitive, method="displacements") for sign in (-1, 0, 1)]
    qpoints = np.array([[0.5, 0.0, 0.5], [0.5, 0.5, 0.5], [0.5, 0.25, 0.75], [0.1, 0.2, 0.3], [0.05, 0.0, 0.05]])
    frequencies, gamma = mode_gruneisen(phonons, 1, qpoints)
    omega = [np.array([p.get_frequencies(q) for q in qpoints]) for p in phonons]
    volumes = [p.primitive.volume for p in phonons]
    gamma_fd = -(volumes[1] / omega[1]) * (omega[2] - omega[0]) / (volumes[2] - volumes[0])
    np.testing.assert_allclose(frequencies, omega[1], rtol=1e-10)
    assert np.abs(gamma).max() > 1.0  # premise: γ of order one (≈ 2 here)
    np.testing.assert_allclose(gamma, gamma_fd, rtol=0, atol=5e-4)


def test_a_jump_in_the_force_constants_between_volumes_is_flagged(series):
    """The smoothness check of F_ph(V) at 300 K: quiet on the smooth model (residual 0.003 meV/atom
    measured), raised when the force constants of the two largest volumes are stiffened by 5 % — the
    kind of step a neighbour shell crossing a non-C² radius of the model's cutoff makes (SevenNet-0
    Si: 1.7 meV/atom)."""
    _, ours = series
    smooth = analyse(ours.phonons, ours.energies, t_max=T_MAX, mesh=MESH).summary["phonon_free_energy_smoothness"]
    assert smooth["smooth"] and smooth["cubic_fit_max_residual_meV_per_atom"] < 0.01
    stepped = [copy.deepcopy(p) for p in ours.phonons]
    for phonon in stepped[3:]:
        phonon.force_constants = 1.05 * phonon.force_constants
    jump = analyse(stepped, ours.energies, t_max=T_MAX, mesh=MESH).summary["phonon_free_energy_smoothness"]
    assert not jump["smooth"] and jump["cubic_fit_max_residual_meV_per_atom"] > 0.1


def test_qha_command_refuses_bad_input_before_any_work(tmp_path, capsys):
    """Exit status 2 and one line naming the problem, before the model is even loaded."""
    import ase.io
    from ase.build import molecule

    from equitrain_jax import cli

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # never read: every case fails before loading
    crystal, mol = tmp_path / "nacl.cif", tmp_path / "water.xyz"
    ase.io.write(crystal, unitcells()["NaCl-rocksalt"])
    ase.io.write(mol, molecule("H2O"))
    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("mine")
    other = tmp_path / "si-reference"  # a volume series of another crystal (zero force constants suffice)
    silicon = Phonopy(ase_to_phonopy(unitcells()["Si-diamond"]), supercell_matrix=np.eye(3, dtype=int),
                      primitive_matrix="P")
    silicon.force_constants = np.zeros((2, 2, 3, 3))
    (other / "v").mkdir(parents=True)
    silicon.save(other / "v" / "phonopy_params.yaml", settings={"force_constants": True})
    (other / "volumes.json").write_text(json.dumps({"phonopy_params": ["v/phonopy_params.yaml"] * 5,
                                                    "static_energies_eV": [0.0] * 5}))

    def command(*extra, structure=crystal, model=model, out=tmp_path / "out"):
        return ["qha", str(structure), "--model", str(model), "-o", str(out), *extra]

    cases = {
        "QHA needs at least 5 volumes": command("--volumes", "3"),
        "volume strain range must be in (0, 0.5)": command("--strain-range", "0.7"),
        "--mesh is one positive length": command("--mesh", "4", "4"),
        f"output directory {used} is not empty": command(out=used),
        f"structure {mol}: a phonon run needs a crystal periodic in 3 directions": command(structure=mol),
        f"--reference {tmp_path / 'none'}: no volumes.json in it": command("--reference", str(tmp_path / "none")),
        f"--reference {other} is another crystal: Si2 per primitive cell": command("--reference", str(other)),
        f"--model {tmp_path / 'nomodel'} does not exist": command(model=tmp_path / "nomodel"),
    }
    for message, argv in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("equitrain-jax qha: error: ") and message in error and "\n" not in error, error
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_qha_command_writes_phonopy_files_and_compares_with_a_reference(tmp_path, capsys):
    """The command end to end; then again, from the first run's relaxed structure, with the first
    run's volume series as --reference: every difference in the comparison table vanishes (to the
    8 decimals of the stored structure and the EOS fits' precision)."""
    import ase.io

    from equitrain_jax import cli
    from equitrain_jax.models.io import save_model

    potential = phonon_potential()
    save_model(tmp_path / "model", potential.bundle.config, potential.bundle.variables)
    ase.io.write(tmp_path / "nacl.cif", scale_volume(unitcells()["NaCl-rocksalt"], 0.95**3))
    common = ["--model", str(tmp_path / "model"), "--volumes", "5", "--strain-range", "0.04", "--supercell", "2", "2",
              "2", "--mesh", "8", "8", "8", "--tmax", "300"]
    first = tmp_path / "first"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli.main(["qha", str(tmp_path / "nacl.cif"), *common, "-o", str(first)])
    printed = capsys.readouterr().out
    assert "in one batch of Hessian-vector products" in printed and "negative thermal expansion: none" in printed
    for name in ("thermal_expansion.dat", "volume-temperature.dat", "bulk_modulus-temperature.dat",
                 "gibbs-temperature.dat", "Cp-temperature.dat", "gruneisen-temperature.dat", "gruneisen.yaml",
                 "e-v.dat", "volumes.json"):
        assert (first / name).stat().st_size > 0, name
    for name in ("qha.png", "gruneisen.png"):
        assert (first / name).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((first / "summary.json").read_text())
    expansion = np.loadtxt(first / "thermal_expansion.dat")
    assert expansion[-1, 0] == 300.0
    np.testing.assert_allclose(summary["at_300K"]["volumetric_thermal_expansion_per_K"], expansion[-1, 1], rtol=1e-9)  # %.15f
    # phonopy-qha redoes the QHA from the files written for it (e-v.dat, thermal_properties-<i>.yaml)
    import subprocess
    import sys
    from pathlib import Path

    redo = tmp_path / "phonopy-qha"
    redo.mkdir()
    inputs = [str(first / "e-v.dat"), *(str(first / f"thermal_properties-{i}.yaml") for i in range(1, 6))]
    subprocess.run([str(Path(sys.executable).parent / "phonopy-qha"), *inputs, "--eos", "vinet", "--tmax", "300"],
                   cwd=redo, check=True, capture_output=True)
    ours, theirs = np.loadtxt(first / "volume-temperature.dat"), np.loadtxt(redo / "volume-temperature.dat")
    n = min(len(ours), len(theirs))
    np.testing.assert_array_equal(ours[:n, 0], theirs[:n, 0])
    np.testing.assert_allclose(ours[:n, 1], theirs[:n, 1], rtol=1e-6)
    gibbs, their_gibbs = np.loadtxt(first / "gibbs-temperature.dat"), np.loadtxt(redo / "gibbs-temperature.dat")
    np.testing.assert_allclose(gibbs[:n, 1], their_gibbs[:n, 1], rtol=0, atol=1e-6)

    second = tmp_path / "second"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli.main(["qha", str(first / "relaxed.extxyz"), *common, "--keep-cell", "--reference", str(first),
                  "-o", str(second)])
    with (second / "comparison.csv").open() as handle:
        rows = list(csv.reader(handle))[1:]
    for row in rows:
        reference, difference = row[2], row[3]
        if difference:  # the centre went through relaxed.extxyz (8 decimals); β's floor is the EOS fits' (3e-5)
            assert abs(float(difference)) <= 1e-4 * max(1.0, abs(float(reference))), row
    assert "mode γ MAE" in rows[-1][0] and float(rows[-1][1]) < 1e-4
