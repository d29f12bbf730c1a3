"""NAC (LO–TO splitting) from a ``--born`` file in the ``qha`` and ``conductivity`` commands, against
phonopy's and phono3py's own NAC: the written force constants loaded by them together with the
same BORN file (phonopy's NaCl and MgO examples, VASP, in ``benchmarks/data/phonopy-examples``),
which they read and apply themselves."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import ase.io
import numpy as np
import phonopy
from phonopy import Phonopy
import pytest
from phonon_models import phonon_potential, unitcells
from phonopy.file_IO import parse_BORN

from equitrain_jax import cli
from equitrain_jax.models.io import save_model
from equitrain_jax.phonons.qha_config import temperature_grid
from equitrain_jax.phonons.volumes import scale_volume

EXAMPLES = Path(__file__).parents[2] / "benchmarks" / "data" / "phonopy-examples"


def quiet_main(argv: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small supercells: narrower than 2·r_max
        cli.main(argv)


@pytest.mark.slow
def test_qha_with_born_equals_phonopys_qha_with_its_own_nac(tmp_path, capsys):
    """``qha --born`` on rocksalt NaCl (the small random model of `phonon_models`, 5 volumes): every
    volume written with the BORN file's Z* and ε∞, and V(T) and the Gibbs energy equal those of
    phonopy's own QHA (`phonopy.run_qha`) of the written force constants loaded with the BORN file
    by phonopy, which differ from those without NAC (the premise)."""
    born = EXAMPLES / "NaCl" / "BORN"
    potential = phonon_potential()
    save_model(tmp_path / "model", potential.bundle.config, potential.bundle.variables)
    ase.io.write(tmp_path / "nacl.extxyz", scale_volume(unitcells()["NaCl-rocksalt"], 0.95**3))
    out = tmp_path / "qha"
    quiet_main(["qha", str(tmp_path / "nacl.extxyz"), "--model", str(tmp_path / "model"), "--volumes", "5",
                "--strain-range", "0.04", "--supercell", "2", "2", "2", "--mesh", "8", "8", "8", "--tmax", "300",
                "--born", str(born), "-o", str(out)])
    printed = capsys.readouterr().out
    assert f"NAC: Gonze–Lee (phonopy), Z* and ε∞ from {born}" in printed and "at every volume" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nac"]["applied"] and summary["nac"]["source"] == str(born)
    assert summary["nac"]["same_at_every_volume"]
    lo, to = summary["nac"]["gamma_limit_frequencies_THz"]["x"][-1], summary["nac"]["gamma_limit_frequencies_THz"]["x"][-2]
    assert lo - to > 1.0, "premise: LO–TO splitting"

    volumes = json.loads((out / "volumes.json").read_text())
    temperatures = temperature_grid(300.0, 10.0)  # the command's grid (phonopy needs one beyond the last)

    def gamma_centred_mesh(phonon, mesh, *args, **kwargs):
        return Phonopy.run_mesh(phonon, mesh, *args, **{**kwargs, "is_gamma_center": True})

    def phonopys_qha(is_nac: bool):
        phonons = []
        for name in volumes["phonopy_params"]:
            # phonopy.load: force constants from the YAML; NAC only from the BORN file, read by phonopy
            phonon = phonopy.load(out / name, is_nac=False, log_level=0)
            if is_nac:
                phonon.nac_params = parse_BORN(phonon.primitive, filename=born)
            # on the Γ-centred grid the command samples (run_qha itself would shift the 8×8×8 grid)
            phonon.run_mesh = functools.partial(gamma_centred_mesh, phonon)
            phonons.append(phonon)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return phonopy.run_qha(phonons, temperatures, internal_energies=volumes["static_energies_eV"],
                                   mesh=[8, 8, 8], eos="vinet", exclude_gamma_acoustic=True)

    ours = np.loadtxt(out / "volume-temperature.dat")
    gibbs = np.loadtxt(out / "gibbs-temperature.dat")
    theirs = phonopys_qha(is_nac=True)
    np.testing.assert_array_equal(ours[:, 0], theirs.temperatures)
    np.testing.assert_allclose(ours[:, 1], theirs.equilibrium_volumes, rtol=1e-7)
    np.testing.assert_allclose(gibbs[:, 1], theirs.gibbs_free_energies, rtol=0, atol=1e-7)
    plain = phonopys_qha(is_nac=False)
    change = abs(plain.gibbs_free_energies[-1] - theirs.gibbs_free_energies[-1])
    assert change > 1e-4, f"premise: NAC changes G(300 K) ({change} eV)"


def test_qha_refuses_a_reference_with_nac_for_a_model_without(tmp_path, capsys):
    """A QHA reference whose phonons carry NAC parameters, and no --born for the model: exit status
    2 and one line naming the reference and the remedy, before the model is loaded (the model
    directory is a stub that would fail to load)."""
    from phonopy import Phonopy

    from equitrain_jax.phonons.bridge import ase_to_phonopy

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    nacl = unitcells()["NaCl-rocksalt"]
    ase.io.write(tmp_path / "nacl.extxyz", nacl)
    reference = tmp_path / "reference"
    phonon = Phonopy(ase_to_phonopy(nacl), supercell_matrix=np.eye(3, dtype=int), primitive_matrix="P")
    phonon.force_constants = np.zeros((2, 2, 3, 3))  # never used: the refusal comes first
    phonon.nac_params = parse_BORN(phonon.primitive, filename=EXAMPLES / "NaCl" / "BORN")
    (reference / "v").mkdir(parents=True)
    phonon.save(reference / "v" / "phonopy_params.yaml", settings={"force_constants": True})
    (reference / "volumes.json").write_text(json.dumps({"phonopy_params": ["v/phonopy_params.yaml"] * 5,
                                                        "static_energies_eV": [0.0] * 5}))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["qha", str(tmp_path / "nacl.extxyz"), "--model", str(model), "--reference", str(reference),
                  "-o", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in error, error
    assert error.startswith(f"equitrain-jax qha: error: --reference {reference}: its phonons have NAC parameters")
    assert "pass --born" in error and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_conductivity_with_born_equals_phono3pys_own_nac(tmp_path, capsys):
    """``conductivity --born`` on rocksalt MgO (the small SevenNet-architecture model of
    `third_order_models`, a = 4.4 Å), against the BORN file of phonopy's MgO example given to
    phono3py itself with the written fc2 and fc3: the harmonic frequencies on the grid of
    ``kappa-m555.hdf5`` equal those of phono3py's own NAC (1e-6 THz; without NAC they differ by
    THz), the written ``phono3py_disp.yaml`` carries the BORN file's parameters as phono3py reads
    them, and κ with NAC is several times κ without (the premise).  The command's own κ is not
    compared with a reload: phono3py's reloaded structure alone moves the linewidths, here κ by
    2 % (61.98 against 60.78 W/(m·K); see test_conductivity)."""
    import h5py
    import phono3py
    from ase.build import bulk
    from phono3py.file_IO import read_fc2_from_hdf5, read_fc3_from_hdf5
    from third_order_models import kappa_potential

    from equitrain_jax.phonons.conductivity import (
        kappa_summary,
        run_thermal_conductivity,
    )

    born = EXAMPLES / "MgO" / "BORN"
    save_model(tmp_path / "model", kappa_potential().bundle.config, kappa_potential().bundle.variables)
    ase.io.write(tmp_path / "mgo.extxyz", bulk("MgO", "rocksalt", a=4.4))
    out = tmp_path / "out"
    quiet_main(["conductivity", str(tmp_path / "mgo.extxyz"), "--model", str(tmp_path / "model"), "--supercell", "2",
                "2", "2", "--mesh", "5", "5", "5", "--ts", "300", "--born", str(born), "-o", str(out)])
    printed = capsys.readouterr().out
    assert f"NAC: Gonze–Lee (phonopy), Z* and ε∞ from {born}" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nac"]["applied"] and summary["nac"]["source"] == str(born)
    with h5py.File(out / "kappa-m555.hdf5") as kappa_file:
        frequencies = kappa_file["frequency"][:]

    written = phono3py.load(out / "phono3py_disp.yaml", produce_fc=False, log_level=0).nac_params
    kappa, grid = {}, {}
    for nac in ("BORN", "none"):
        ph3 = phono3py.load(out / "phono3py_disp.yaml", produce_fc=False, is_nac=False, log_level=0)
        ph3.fc2, ph3.fc3 = read_fc2_from_hdf5(out / "fc2.hdf5"), read_fc3_from_hdf5(out / "fc3.hdf5")
        if nac == "BORN":
            ph3.nac_params = parse_BORN(ph3.primitive, filename=born)
            for key in ("born", "dielectric", "factor"):
                np.testing.assert_allclose(written[key], ph3.nac_params[key], rtol=0, atol=1e-12)
        run_thermal_conductivity(ph3, (5, 5, 5), temperatures=[300.0])
        kappa[nac] = np.asarray(kappa_summary(ph3)["kappa_W_per_mK"])
        grid[nac] = np.asarray(ph3.thermal_conductivity.frequencies)
    np.testing.assert_allclose(frequencies, grid["BORN"], rtol=0, atol=1e-6)
    assert np.abs(frequencies - grid["none"]).max() > 1.0, "premise: NAC changes the frequencies on the grid"
    assert kappa["none"][0, 0] < 0.5 * kappa["BORN"][0, 0], f"premise: NAC changes κ ({kappa})"
