"""Exact fc3 and thermal conductivity against phono3py's own finite displacements of the same model
(forces from our ASE calculator), and the ``equitrain-jax conductivity`` command."""

from __future__ import annotations

import json
import warnings

import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule

from third_order_models import kappa_potential, silicon

from equitrain_jax import cli
from equitrain_jax.calculator import Calculator
from equitrain_jax.models.io import save_model
from equitrain_jax.phonons.conductivity import (
    fc3_work,
    kappa_summary,
    phono3py_from_calculator,
    phono3py_from_potential,
    run_thermal_conductivity,
)

MESH = (7, 7, 7)
TEMPERATURES = (300.0, 600.0)


def quiet(fn, *args, **kwargs):
    """The 8-atom cell is narrower than 2·r_max: silence that warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def exact():
    """Our fc2 and fc3 of 8-atom Si (1×1×1 conventional supercell of the primitive cell), default method
    ("rows")."""
    return quiet(phono3py_from_potential, kappa_potential(), silicon(), 1)


@pytest.fixture(scope="module")
def finite_differences():
    """phono3py's finite-displacement fc2 and fc3 with ± displacements of 0.03 and 0.015 Å, forces from
    `equitrain_jax.Calculator` (neighbour list rebuilt for each supercell): 32 supercells each."""
    calculator = Calculator(kappa_potential())
    return {d: quiet(phono3py_from_calculator, calculator, silicon(), 1, distance=d, is_plusminus=True)
            for d in (0.03, 0.015)}


def largest_difference(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max()


def test_exact_fc3_equals_finite_differences_within_their_error(exact, finite_differences):
    """Finite-difference fc3 and fc2 approach ours as the displacement shrinks, with errors of second order
    in it (halving d quarters them).  Measured (max |fc3| 12.3 eV/Å³, max |fc2| 2.34 eV/Å²): fc3 errors
    1.04e-2 and 2.74e-3 eV/Å³ (8.4e-4 and 2.2e-4 relative), fc2 errors 2.0e-2 and 5.0e-3 eV/Å²."""
    scale3, scale2 = np.abs(exact.fc3).max(), np.abs(exact.fc2).max()
    assert scale3 > 5.0, f"fc3 too small ({scale3:.3g} eV/Å³) to test anything"
    fc3_errors = [largest_difference(finite_differences[d].fc3, exact.fc3) for d in (0.03, 0.015)]
    fc2_errors = [largest_difference(finite_differences[d].fc2, exact.fc2) for d in (0.03, 0.015)]
    assert fc3_errors[1] < 5e-4 * scale3 and fc2_errors[1] < 4e-3 * scale2, (fc3_errors, fc2_errors)
    assert 3.2 < fc3_errors[0] / fc3_errors[1] < 4.8, fc3_errors
    assert 3.2 < fc2_errors[0] / fc2_errors[1] < 4.8, fc2_errors


def test_exact_fc3_depends_neither_on_the_distance_nor_on_the_method(exact, tmp_path):
    """phono3py's solver is exact for exact derivatives, so fc3 does not depend on the displacement distance;
    the "displacements" method (second-order forces of every displaced supercell, fitted by phono3py as DFT
    forces) takes another path through the derivatives and phono3py's solver than the default "rows" (the
    exact change of fc2 along the first displacement).  Measured: 1.8e-13 and 1.9e-14 relative.  The exact
    second-order forces saved as a phono3py data set give phono3py's own fit the same fc3."""
    import phono3py

    scale = np.abs(exact.fc3).max()
    small = quiet(phono3py_from_potential, kappa_potential(), silicon(), 1, distance=0.003)
    displacements = quiet(phono3py_from_potential, kappa_potential(), silicon(), 1, method="displacements")
    assert largest_difference(small.fc3, exact.fc3) < 1e-11 * scale
    assert largest_difference(displacements.fc3, exact.fc3) < 1e-11 * scale
    assert fc3_work(exact) == 16 and fc3_work(exact, "displacements") == 16  # nested jvps of each method

    # the exact second-order forces as a phono3py data set: phono3py fits the same fc3 from the saved file
    path = tmp_path / "phono3py_params.yaml"
    displacements.save(path)
    reloaded = phono3py.load(path, produce_fc=False, log_level=0)
    reloaded.produce_fc3(is_compact_fc=True)
    assert largest_difference(reloaded.fc3, exact.fc3) < 1e-11 * scale


def test_exact_fc3_with_a_pair_cutoff_equals_finite_differences(exact):
    """With phono3py's pair cutoff (3 Å: nearest neighbours only) phono3py displaces 11 instead of 16
    supercells; ours still equals its finite differences within their error (2.2e-4 relative at 0.015 Å,
    as without the cutoff), while the cutoff itself changes fc3 by 2.8e-3 relative."""
    scale = np.abs(exact.fc3).max()
    ours = quiet(phono3py_from_potential, kappa_potential(), silicon(), 1, cutoff_pair_distance=3.0)
    reference = quiet(phono3py_from_calculator, Calculator(kappa_potential()), silicon(), 1, distance=0.015,
                      is_plusminus=True, cutoff_pair_distance=3.0)
    assert fc3_work(ours, "displacements") == 11
    assert largest_difference(ours.fc3, reference.fc3) < 5e-4 * scale
    assert largest_difference(ours.fc3, exact.fc3) > 1e-3 * scale  # premise: the cutoff matters


def test_kappa_converges_to_the_exact_one(exact, finite_differences):
    """RTA κ on a 7³ mesh at 300 and 600 K: finite differences approach ours at second order in the
    displacement.  Measured at 300 K: ours 4.767, finite differences 4.632 (0.03 Å) and 4.736 (0.015 Å)
    W/(m·K).  Then the direct solution (LBTE, 5³ mesh, 300 K): ours 4.246, finite differences at 0.015 Å
    4.234 W/(m·K)."""
    kappas = {}
    for name, ph3 in (("exact", exact), *finite_differences.items()):
        run_thermal_conductivity(ph3, MESH, temperatures=TEMPERATURES)
        kappas[name] = np.asarray(kappa_summary(ph3)["kappa_W_per_mK"])
    ours = kappas["exact"]
    assert ours[0, 0] > 1.0 and np.allclose(ours[:, :3], ours[:, :1]) and np.abs(ours[:, 3:]).max() < 1e-10
    errors = [np.abs(kappas[d] - ours).max(axis=1) / ours[:, 0] for d in (0.03, 0.015)]
    assert np.all(errors[1] < 0.01), errors
    assert np.all((errors[0] / errors[1] > 3.0) & (errors[0] / errors[1] < 5.5)), errors

    direct = {}
    for name, ph3 in (("exact", exact), ("fd", finite_differences[0.015])):
        run_thermal_conductivity(ph3, (5, 5, 5), temperatures=[300.0], is_lbte=True)
        direct[name] = kappa_summary(ph3, is_lbte=True)
    kappa, kappa_rta = (np.asarray(direct["exact"][key])[0, 0] for key in ("kappa_W_per_mK", "kappa_RTA_W_per_mK"))
    assert abs(kappa - kappa_rta) > 1e-3 * kappa  # the direct solution is not the RTA
    assert abs(np.asarray(direct["fd"]["kappa_W_per_mK"])[0, 0] - kappa) < 0.01 * kappa


# ---------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def model_and_structure(tmp_path_factory):
    directory = tmp_path_factory.mktemp("conductivity")
    bundle = kappa_potential().bundle
    save_model(directory / "model", bundle.config, bundle.variables)
    ase.io.write(directory / "si.cif", silicon())
    return directory


def test_conductivity_command_writes_phono3py_files_summary_and_plots(model_and_structure, finite_differences,
                                                                        tmp_path, capsys):
    """The command's κ against phono3py's finite differences of the same model (0.015 Å, within 1 %), its
    kappa-m555.hdf5 against its summary.json, and its phono3py_disp.yaml, fc2.hdf5 and fc3.hdf5 read back
    by phono3py, whose κ from them must be the command's: measured 0.29 % apart (4.2554 against 4.2677
    W/(m·K); fc2, fc3, masses, cells, q-point grids and dynamical matrices read back are the same, the
    phonon linewidths are not: phono3py.load's structure differs from ours in the last bit)."""
    import h5py
    import phono3py
    from phono3py.file_IO import read_fc2_from_hdf5, read_fc3_from_hdf5

    directory = model_and_structure
    out = tmp_path / "out"
    quiet(cli.main, ["conductivity", str(directory / "si.cif"), "--model", str(directory / "model"),
                     "--supercell", "1", "1", "1", "--mesh", "5", "5", "5", "--ts", "300", "600", "-o", str(out)])
    printed = capsys.readouterr().out
    assert "κ at 300 K (RTA): xx" in printed
    for name in ("kappa-m555.hdf5", "fc2.hdf5", "fc3.hdf5", "phono3py_disp.yaml", "summary.json"):
        assert (out / name).is_file(), name
    for name in ("kappa.png", "lifetimes.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["temperatures_K"] == [300.0, 600.0] and summary["mesh"] == [5, 5, 5]
    with h5py.File(out / "kappa-m555.hdf5") as kappa_file:
        np.testing.assert_allclose(kappa_file["kappa"][:], summary["kappa_W_per_mK"], rtol=1e-12)

    reference = finite_differences[0.015]
    run_thermal_conductivity(reference, (5, 5, 5), temperatures=[300.0, 600.0])
    expected = np.asarray(kappa_summary(reference)["kappa_W_per_mK"])
    np.testing.assert_allclose(summary["kappa_W_per_mK"], expected, rtol=0.01, atol=1e-9)

    reloaded = phono3py.load(out / "phono3py_disp.yaml", produce_fc=False, log_level=0)
    reloaded.fc2, reloaded.fc3 = read_fc2_from_hdf5(out / "fc2.hdf5"), read_fc3_from_hdf5(out / "fc3.hdf5")
    run_thermal_conductivity(reloaded, (5, 5, 5), temperatures=[300.0, 600.0])
    np.testing.assert_allclose(kappa_summary(reloaded)["kappa_W_per_mK"], summary["kappa_W_per_mK"], rtol=0.01,
                               atol=1e-9)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--mesh", "5", "5"], "--mesh needs three positive integers or one positive length"),
        (["--supercell", "0", "1", "1"], "--supercell needs three positive integers"),
        (["--cutoff-pair", "-1"], "--cutoff-pair is a positive distance"),
        (["--ts", "-5"], "--temperatures must be ≥ 0 K"),
    ],
)
def test_conductivity_command_rejects_bad_options(model_and_structure, tmp_path, capsys, arguments, message):
    directory = model_and_structure
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["conductivity", str(directory / "si.cif"), "--model", str(directory / "model"),
                  "-o", str(tmp_path / "out"), *arguments])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("equitrain-jax conductivity: error: ") and message in error
    assert error.count("\n") == 1 and not (tmp_path / "out").exists()


def test_conductivity_command_rejects_bad_inputs_before_any_work(model_and_structure, tmp_path, capsys):
    """A non-empty output directory (without --overwrite), a molecule, a missing file and an element the
    model does not know: status 2, one line naming the problem, nothing written."""
    directory = model_and_structure
    used = tmp_path / "used"
    used.mkdir()
    (used / "mine.txt").write_text("keep me")
    ase.io.write(tmp_path / "mol.xyz", molecule("H2O"))
    ase.io.write(tmp_path / "cu.cif", bulk("Cu", "fcc", a=3.6))
    cases = [
        ([str(directory / "si.cif"), "-o", str(used)], "is not empty (mine.txt); nothing was overwritten"),
        ([str(tmp_path / "mol.xyz"), "-o", str(tmp_path / "a")], "periodic in 3 directions"),
        ([str(tmp_path / "missing.cif"), "-o", str(tmp_path / "b")], "missing.cif does not exist"),
        ([str(tmp_path / "cu.cif"), "-o", str(tmp_path / "c")], "not supported by the model"),
    ]
    for arguments, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["conductivity", *arguments, "--model", str(directory / "model")])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, error
    assert [p.name for p in used.iterdir()] == ["mine.txt"]
    assert not any((tmp_path / name).exists() for name in "abc")


@pytest.mark.slow
def test_finite_differences_with_phono3pys_default_displacements_are_first_order():
    """In the 16-atom supercell (2×2×2 primitive cells) phono3py's default ("auto") displaces the first
    atom one way only, its opposite being a symmetry image: then the finite-difference fc3 error is of
    FIRST order in the distance (halving it halves the error), and of second order only with ±
    displacements.  Ours is the limit of both."""
    potential = kappa_potential()
    unitcell = bulk("Si", "diamond", a=silicon().cell[0, 0])
    ours = quiet(phono3py_from_potential, potential, unitcell, 2)
    scale = np.abs(ours.fc3).max()
    calculator = Calculator(potential)
    ratios = {}
    for plusminus in ("auto", True):
        errors = [largest_difference(quiet(phono3py_from_calculator, calculator, unitcell, 2, distance=d,
                                           is_plusminus=plusminus).fc3, ours.fc3) for d in (0.03, 0.015)]
        assert errors[1] < 0.05 * scale, (plusminus, errors, scale)
        ratios[plusminus] = errors[0] / errors[1]
    assert 1.7 < ratios["auto"] < 2.5 and 3.2 < ratios[True] < 4.8, ratios


def test_xplor_second_derivative_jumps_where_sevennet_declares_it():
    """Central second differences of the XPLOR switch just inside and just outside each radius of
    SevenNetConfig.derivative_jumps differ by the analytic jump; the first derivative does not jump."""
    from equitrain_jax.models.radial import xplor_cutoff
    from equitrain_jax.data.device import enable_float64
    from equitrain_jax.models.sevennet.config import SevenNetConfig

    config = SevenNetConfig(atomic_numbers=(14,), node_irreps=("4x0e", "4x0e"), conv_denominators=(1.0,),
                            scale=(1.0,), shift=(0.0,))
    jumps = config.derivative_jumps
    assert jumps == ((4.5, 2), (5.0, 2))
    h, e = 1e-4, 3e-4  # step, and how far from the radius the differences are taken
    s = lambda r: float(xplor_cutoff(np.float64(r), 4.5, 5.0))  # noqa: E731
    enable_float64()
    second = lambda r: (s(r + h) - 2 * s(r) + s(r - h)) / h**2  # noqa: E731
    first = lambda r: (s(r + h) - s(r - h)) / (2 * h)  # noqa: E731
    on2, max2 = 4.5**2, 5.0**2
    for radius, expected in ((4.5, -24 * on2 / (max2 - on2) ** 2), (5.0, -24 * max2 / (max2 - on2) ** 2)):
        # outside minus inside: at r_on the switch starts bending; at r_max it stops (s = 0 beyond)
        jump = second(radius + e) - second(radius - e)
        assert jump == pytest.approx(expected, rel=0.02)
        assert abs(first(radius + e) - first(radius - e)) < 0.02


def test_derivative_jump_warning_names_silicons_third_shell():
    """Diamond Si at a = 5.431 Å: the third shell, a·√11/4 = 4.5031 Å, is 3 mÅ beyond SevenNet-0's
    r_on = 4.5 Å (warned, with that distance); at a = 5.36 Å (4.444 Å) and for diamond C (a = 3.567 Å)
    no shell is within 0.03 Å of 4.5 or 5.0 Å (no warning)."""
    from equitrain_jax.phonons.bridge import NonSmoothRadiusWarning, check_derivative_jumps

    jumps = ((4.5, 2), (5.0, 2))
    with pytest.warns(NonSmoothRadiusWarning, match=r"4\.5031 Å \(radius 4\.5 Å, order 2\)"):
        close = check_derivative_jumps(bulk("Si", "diamond", a=5.431, cubic=True) * 2, jumps, 3)
    assert [d for d, _ in close] == pytest.approx([5.431 * np.sqrt(11) / 4], abs=1e-6)
    for atoms in (bulk("Si", "diamond", a=5.36, cubic=True) * 2, bulk("C", "diamond", a=3.567, cubic=True) * 3):
        with warnings.catch_warnings():
            warnings.simplefilter("error", NonSmoothRadiusWarning)
            assert check_derivative_jumps(atoms, jumps, 3) == []
    # order 1 (forces) is smooth everywhere under these jumps
    assert check_derivative_jumps(bulk("Si", "diamond", a=5.431, cubic=True) * 2, jumps, 1) == []
