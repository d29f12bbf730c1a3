"""The command line on a converted model: evaluate writes mace-torch's numbers."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest

from common import ELEMENTS, structures, torch_reference

torch = pytest.importorskip("torch")
pytest.importorskip("mace")

from equitrain_jax import cli  # noqa: E402
from equitrain_jax.convert.architectures import build_mace_torch  # noqa: E402


def test_convert_then_evaluate(tmp_path, capsys):
    module = build_mace_torch("mp0b", atomic_numbers=ELEMENTS, channels=8, seed=11)
    model_file = tmp_path / "model.model"
    torch.save(module, model_file)
    cli.main(["convert", str(model_file), "-o", str(tmp_path / "model")])
    atoms = [structures()["triclinic"], structures()["molecule"]]
    ase.io.write(tmp_path / "in.xyz", atoms)
    cli.main(["evaluate", str(tmp_path / "in.xyz"), "--model", str(tmp_path / "model"), "-o", str(tmp_path / "out.xyz")])
    printed = capsys.readouterr().out
    assert "max|F|" in printed and len(printed.strip().splitlines()) >= 3
    reference = torch_reference(module, atoms)
    for written, ref in zip(ase.io.read(tmp_path / "out.xyz", index=":"), reference):
        assert abs(written.get_potential_energy() - ref["energy"]) < 1e-6
        np.testing.assert_allclose(written.get_forces(), ref["forces"], atol=1e-6)


def test_evaluate_unknown_element_is_a_clear_error(tmp_path, capsys):
    cli.main(["convert", "--architecture", "mp0a-small", "--channels", "8", "-o", str(tmp_path / "model")])
    gold = structures()["molecule"].copy()
    gold.numbers[0] = 79
    ase.io.write(tmp_path / "gold.xyz", gold)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", str(tmp_path / "gold.xyz"), "--model", str(tmp_path / "model")])
    assert exit_info.value.code == 2
    assert "Au" in capsys.readouterr().err


def test_finetune_command_lowers_validation_force_error(tmp_path, capsys):
    """LoRA fine-tuning from the command line on EMT-labelled Cu cells (EMT is the reference)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from equitrain_jax import Calculator

    build = build_mace_torch("mp0a-small", atomic_numbers=(29,), channels=8, seed=2, avg_num_neighbors=2.0)
    torch.save(build, tmp_path / "cu.model")
    cli.main(["convert", str(tmp_path / "cu.model"), "-o", str(tmp_path / "base")])
    structures = []
    for i in range(10):
        atoms = bulk("Cu", "fcc", a=3.6 * (1 + 0.02 * (i % 3 - 1)), cubic=True)
        atoms.rattle(0.1, seed=i)
        atoms.calc = EMT()
        atoms.info["energy"], atoms.arrays["forces"] = atoms.get_potential_energy(), atoms.get_forces()
        atoms.info["stress"] = atoms.get_stress()
        atoms.calc = None
        structures.append(atoms)
    ase.io.write(tmp_path / "train.xyz", structures[:8])
    ase.io.write(tmp_path / "valid.xyz", structures[8:])
    out = tmp_path / "tuned"
    cli.main(["finetune", "--model", str(tmp_path / "base"), "--train", str(tmp_path / "train.xyz"),
              "--valid", str(tmp_path / "valid.xyz"), "--strategy", "lora", "--epochs", "13", "--lr", "1e-2",
              "--ema", "0.5", "--schedule", "plateau", "--dtype", "float64", "-o", str(out)])
    assert "fine-tuned model" in capsys.readouterr().out
    cli.main(["finetune", "--model", str(tmp_path / "base"), "--train", str(tmp_path / "train.xyz"),
              "--valid", str(tmp_path / "valid.xyz"), "--strategy", "lora", "--epochs", "15", "--lr", "1e-2",
              "--ema", "0.5", "--schedule", "plateau", "--dtype", "float64", "-o", str(out), "--resume"])
    assert (out / "adapters.npz").is_file() and (out / "checkpoints" / "best").is_dir()
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(16))  # 13 epochs, then 2 more after resuming

    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(SystemExit):
        cli.main(["finetune", "--model", str(tmp_path / "base"), "--train", str(tmp_path / "empty.xyz"), "-o", str(tmp_path / "x")])
    assert "empty.xyz" in capsys.readouterr().err

    def force_mae(model_dir):
        errors = []
        for atoms in structures[8:]:
            reference = atoms.arrays["forces"]
            atoms = atoms.copy()
            atoms.calc = Calculator(model_dir)
            errors.append(np.abs(atoms.get_forces() - reference).mean())
        return np.mean(errors)

    before, after = force_mae(tmp_path / "base"), force_mae(out / "model")
    assert after < 0.5 * before, (before, after)


def test_phonons_command_writes_results_and_plot(tmp_path, capsys):
    """Relax, phonons, and a scan along each imaginary mode (this random model makes relaxed diamond
    Si unstable at q = (0, ½, 0)); phonopy's own frequencies of the written force constants say which
    modes there are.  Then the relaxed structure, with every Hessian row (--hessian full), against that run's
    force constants (one Hessian-vector product per phonopy displacement) as the reference: no error."""
    import json
    import warnings

    import phonopy
    from ase.build import bulk

    module = build_mace_torch("mp0a-small", atomic_numbers=(14,), channels=8, seed=4, avg_num_neighbors=2.0)
    torch.save(module, tmp_path / "si.model")
    cli.main(["convert", str(tmp_path / "si.model"), "-o", str(tmp_path / "model")])
    ase.io.write(tmp_path / "si.cif", bulk("Si", "diamond", a=5.43))
    out = tmp_path / "phonons"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a 2x2x2 primitive supercell is narrower than 2·r_max
        cli.main(["phonons", str(tmp_path / "si.cif"), "--model", str(tmp_path / "model"),
                  "--supercell", "2", "2", "2", "--relax", "--fmax", "1e-3", "--scan-modes", "-o", str(out)])
    printed = capsys.readouterr().out
    assert "space group Fd-3m → Fd-3m" in printed
    summary = json.loads((out / "summary.json").read_text())
    gamma = np.sort(np.abs(summary["gamma_frequencies_THz"]))
    assert np.all(gamma[:3] < 1e-3) and gamma[3] > 0.1  # three acoustic modes vanish at Γ
    assert (out / "band_dos.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "thermal.png").read_bytes()[:4] == b"\x89PNG"

    written = phonopy.load(out / "phonopy_params.yaml", log_level=0)
    analysis = json.loads((out / "imaginary_modes.json").read_text())
    assert analysis["threshold_THz"] == 0.05 and "imaginary mode(s)" in printed
    expected = sorted(f for q in analysis["qpoints_checked"] for f in written.get_frequencies(q) if f < -0.05)
    found = sorted(f for mode in analysis["modes"] for f in [mode["frequency_THz"]] * len(mode["bands"]))
    assert expected, "premise: this model has imaginary modes in relaxed diamond Si"
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-5)
    for index, mode in enumerate(analysis["modes"]):
        assert mode["double_well"] and mode["follow"]["relaxed_energy_change_eV"] < 0.0
        assert (out / f"mode_{index}_relaxed.extxyz").is_file()
    assert (out / "mode_scans.png").read_bytes()[:4] == b"\x89PNG"
    assert "space group Fd-3m (227) →" in printed

    again = tmp_path / "again"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli.main(["phonons", str(out / "relaxed.extxyz"), "--model", str(tmp_path / "model"), "--supercell", "2", "2",
                  "2", "--hessian", "full", "--reference", str(out / "phonopy_params.yaml"), "-o", str(again)])
    printed = capsys.readouterr().out
    comparison = json.loads((again / "comparison.json").read_text())
    for name in ("band_path", "mesh"):
        assert comparison[name]["mae_THz"] < 1e-6 and comparison[name]["max_abs_error_THz"] < 1e-5
    assert "vs reference, mesh: MAE 0.000 THz" in printed and "rerun with --scan-modes" in printed
    assert (again / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert (again / "comparison_thermal.png").read_bytes()[:4] == b"\x89PNG"


def test_phonons_command_keeps_partial_results_when_relaxation_fails(tmp_path, capsys):
    """A relaxation that cannot converge in 2 steps: a clean exit (status 2, no traceback), a message
    naming the kept files, and the last structure readable."""
    from ase.build import bulk

    cli.main(["convert", "--architecture", "mp0a-small", "--channels", "8", "-o", str(tmp_path / "model")])
    atoms = bulk("Si", "diamond", a=5.6)
    atoms.rattle(0.05, seed=1)
    ase.io.write(tmp_path / "si.extxyz", atoms)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["phonons", str(tmp_path / "si.extxyz"), "--model", str(tmp_path / "model"), "--relax",
                  "--relax-steps", "2", "--fmax", "1e-6", "-o", str(out)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "did not reach fmax=1e-06 eV/Å in 2 steps" in error and "partial results kept" in error
    assert str(out / "relaxed.extxyz") in error and "Traceback" not in error
    assert len(ase.io.read(out / "relaxed.extxyz")) == 2
    assert not (out / "summary.json").exists()


def test_phonons_command_rejects_a_missing_reference(tmp_path, capsys):
    ase.io.write(tmp_path / "si.cif", structures()["triclinic"])
    with pytest.raises(SystemExit):
        cli.main(["phonons", str(tmp_path / "si.cif"), "--model", str(tmp_path / "no-model"),
                  "--reference", str(tmp_path / "missing.yaml"), "-o", str(tmp_path / "out")])
    assert "missing.yaml does not exist" in capsys.readouterr().err


def test_phonons_command_rejects_a_molecule(tmp_path, capsys):
    cli.main(["convert", "--architecture", "mp0a-small", "--channels", "8", "-o", str(tmp_path / "model")])
    ase.io.write(tmp_path / "mol.xyz", structures()["molecule"])
    with pytest.raises(SystemExit):
        cli.main(["phonons", str(tmp_path / "mol.xyz"), "--model", str(tmp_path / "model"), "-o", str(tmp_path / "out")])
    assert "periodic in 3 directions" in capsys.readouterr().err


def test_compilation_cache_is_kept_on_disk_between_processes(tmp_path):
    """Two fresh processes compile the same program with the cache directory set: the first writes
    it, and the second finds it there (JAX's own cache-hit counter), so the command line does not
    recompile; an empty EQUITRAIN_JAX_CACHE_DIR turns the cache off."""
    import os
    import subprocess
    import sys

    script = (
        "import jax, jax.numpy as jnp\n"
        "from jax._src import monitoring\n"
        "hits = []\n"
        "monitoring.register_event_listener(lambda name, **kw: hits.append(name) if 'cache_hits' in name else None)\n"
        "from equitrain_jax.cli import enable_compilation_cache\n"
        "print('dir', enable_compilation_cache())\n"
        "jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((64, 64))).block_until_ready()\n"
        "print('hits', len(hits))\n"
    )
    env = {**os.environ, "EQUITRAIN_JAX_CACHE_DIR": str(tmp_path / "xla"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert f"dir {tmp_path / 'xla'}" in runs[0]
    assert "hits 0" in runs[0] and "hits 0" not in runs[1], runs
    assert any((tmp_path / "xla").iterdir())
    env["EQUITRAIN_JAX_CACHE_DIR"] = ""
    off = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert "dir None" in off
