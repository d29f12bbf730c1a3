"""``equitrain-jax phonons`` with a reference that carries Born charges (phonopy's NaCl example,
BORN beside its YAML): the model gets the same NAC, or with ``--nac none`` neither side has any;
the numbers are those of phonopy's own loading of the written files, and bad Born input is a
one-line error before any work."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import phonopy
import pytest

from common import tiny_mace

from equitrain_jax import cli
from equitrain_jax.models.io import save_model
from equitrain_jax.phonons import compare_phonons

NACL = Path(__file__).parents[2] / "benchmarks" / "data" / "phonopy-examples" / "NaCl"
REFERENCE = NACL / "phonopy_disp.yaml"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("nac-cli") / "model"
    bundle = tiny_mace((11, 17, 29), seed=3)
    save_model(directory, bundle.config, bundle.variables)
    return directory


def phonons(*args: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a 1×1×1 conventional cell is narrower than 2·r_max
        cli.main(["phonons", str(NACL / "POSCAR-unitcell"), "--supercell", "1", "1", "1", *args])


@pytest.mark.slow  # 34 s on the shared machine: the default run keeps the cheap checks below
def test_reference_nac_is_applied_to_the_model(tmp_path, model, capsys):
    """Default: the reference's BORN goes to the model too (printed, in summary.json, in the written
    phonopy_params.yaml); the comparison equals compare_phonons of phonopy.load's own reading of the
    written model (its nac_params) and of the reference with its BORN."""
    out = tmp_path / "auto"
    phonons("--model", str(model), "--reference", str(REFERENCE), "-o", str(out))
    printed = capsys.readouterr().out
    assert f"the reference's NAC parameters (from {NACL / 'BORN'}) are applied to the model as well" in printed
    assert "NAC: Gonze–Lee (phonopy), Z* and ε∞ from" in printed and "Na +1.087, Cl -1.087" in printed
    assert "vs reference: both with NAC, the same Z* and ε∞" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nac"]["applied"] and summary["nac"]["source"] == str(NACL / "BORN")
    assert summary["nac"]["method"] == "gonze" and summary["nac"]["primitive_symbols"] == ["Na", "Cl"]
    assert json.loads((out / "imaginary_modes.json").read_text())["nac_applied"]
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["nac"] == {"model": True, "reference": True, "method": "gonze", "same_parameters": True}
    written = phonopy.load(out / "phonopy_params.yaml", log_level=0)
    assert written.nac_params is not None, "the written model carries its NAC parameters"
    dft = phonopy.load(REFERENCE, force_sets_filename=NACL / "FORCE_SETS", born_filename=NACL / "BORN", log_level=0)
    expected = compare_phonons(written, dft)
    for name in ("band_path", "mesh"):
        np.testing.assert_allclose(comparison[name]["mae_THz"], expected[name]["mae_THz"], rtol=1e-7)
        np.testing.assert_allclose(comparison[name]["max_frequency_error_THz"],
                                   expected[name]["max_frequency_error_THz"], rtol=1e-7)
    np.testing.assert_allclose(comparison["thermal"]["free_energy_kJ_per_mol"]["reference"],
                               expected["thermal"]["free_energy_kJ_per_mol"]["reference"], rtol=1e-9)


@pytest.mark.slow
def test_no_nac_removes_the_references_and_born_goes_to_both(tmp_path, model, capsys):
    """``--nac none``: the reference's NAC is removed as well (printed); the comparison equals
    phonopy.load's reference without NAC, whose free energy differs from the one with it.  A BORN
    given for a reference without Born charges is applied to both (printed)."""
    out = tmp_path / "none"
    phonons("--model", str(model), "--reference", str(REFERENCE), "--nac", "none", "-o", str(out))
    printed = capsys.readouterr().out
    assert "--nac none: the reference's NAC parameters" in printed and "vs reference: both without NAC" in printed
    assert json.loads((out / "summary.json").read_text())["nac"] == {"applied": False}
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["nac"] == {"model": False, "reference": False, "method": None}
    dft = phonopy.load(REFERENCE, force_sets_filename=NACL / "FORCE_SETS", is_nac=False, log_level=0)
    expected = compare_phonons(phonopy.load(out / "phonopy_params.yaml", is_nac=False, log_level=0), dft)
    for name in ("band_path", "mesh"):
        np.testing.assert_allclose(comparison[name]["mae_THz"], expected[name]["mae_THz"], rtol=1e-7)
    with_nac = phonopy.load(REFERENCE, force_sets_filename=NACL / "FORCE_SETS", born_filename=NACL / "BORN",
                            log_level=0)
    free_energy = comparison["thermal"]["free_energy_kJ_per_mol"]["reference"]
    with_nac.run_mesh([20, 20, 20], is_gamma_center=True)
    with_nac.run_thermal_properties(temperatures=[300.0], cutoff_frequency=0.01)
    assert abs(with_nac.get_thermal_properties_dict()["free_energy"][0] - free_energy) > 1e-3, \
        "premise: NAC changes the reference's free energy"

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(REFERENCE, bare)
    shutil.copy(NACL / "FORCE_SETS", bare)
    phonons("--model", str(model), "--born", str(NACL / "BORN"), "--reference", str(bare / REFERENCE.name),
            "-o", str(tmp_path / "both"))
    printed = capsys.readouterr().out
    assert f"the reference has no NAC parameters; --born {NACL / 'BORN'} is applied to it as well" in printed
    assert json.loads((tmp_path / "both" / "comparison.json").read_text())["nac"]["same_parameters"]


def test_born_option_is_checked_before_any_work(tmp_path, model, capsys):
    """--born: a missing file, --born with --nac none, a BORN of the wrong length and one that
    disagrees with the reference's own: exit status 2, one line naming the problem, nothing written."""
    wrong = tmp_path / "BORN-short"
    wrong.write_text("14.4\n2 0 0 0 2 0 0 0 2\n1 0 0 0 1 0 0 0 1\n")
    other = tmp_path / "BORN-other"
    other.write_text((NACL / "BORN").read_text().replace("1.08703", "1.2"))
    cases = {
        ("--born", str(tmp_path / "missing")): "--born file",
        ("--born", str(NACL / "BORN"), "--nac", "none"): "nothing would use the Born charges",
        ("--born", str(wrong)): "Na (atom 1), Cl (atom 2)",
        ("--born", str(other), "--reference", str(REFERENCE)): "other Born charges or ε∞ than the reference's own",
    }
    for index, (args, message) in enumerate(cases.items()):
        out = tmp_path / f"out{index}"
        with pytest.raises(SystemExit) as exit_info:
            phonons("--model", str(model), *args, "-o", str(out))
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in error and len(error.strip().splitlines()) == 1, error
        assert not (out / "summary.json").exists()
