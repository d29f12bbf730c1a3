"""``equitrain-jax finetune --phonons`` from the command line: phonon-only training with a
validation reference, its history, record and summary, and the per-epoch phonon-frequency MAE
against an independent one (phonopy finite displacements of the base model's forces)."""

from __future__ import annotations

import functools
import json

import numpy as np
import phonopy
import pytest

from .conftest import equitrain_jax


@pytest.fixture(scope="module")
def tuned(workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("phonons") / "run"
    done = equitrain_jax("finetune", "--model", "base", "--phonons", "cu_phonons.yaml", "--valid-phonons",
                         "cu_phonons.yaml", "--strategy", "full", "--epochs", "2", "--lr", "5e-3", "--hessian-directions",
                         "2", "--monitor", "phonon_mae", "--dtype", "float64", "--no-anharmonicity-check",  # the guard: its own (slow) test
                         "-o", str(out), cwd=workspace)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def test_history_record_and_summary(tuned):
    out, done = tuned
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 3
    for entry in history:
        assert {"phonon_mae_thz", "hessian_mae_ev_per_a2", "hessian_rmse_ev_per_a2", "valid_hessian_loss"} <= set(entry)
        assert "forces_mae_mev_per_a" not in entry  # no validation structures
        np.testing.assert_allclose(entry["valid_loss"], entry["valid_hessian_loss"], rtol=1e-12)
    assert history[-1]["phonon_mae_thz"] < history[0]["phonon_mae_thz"]
    record = json.loads((out / "run.json").read_text())
    assert record["train"]["monitor"] == "phonon_mae"
    assert record["hessian"]["directions"] == 2 and record["hessian"]["mode"] == "random"
    (phonons,) = record["phonons"]
    assert phonons["n_atoms"] == 8 and phonons["source"] == "cu_phonons.yaml"
    assert phonons["nac_applied_to_force_constants"] is False
    assert record["n_train"] == 0 and not record["valid_phonons_are_the_training_references"]
    best = min(history, key=lambda h: h["phonon_mae_thz"])
    assert f"phonon MAE {history[0]['phonon_mae_thz']:.3f} → {best['phonon_mae_thz']:.3f} THz" in done.stdout


def test_phonon_mae_is_that_of_phonopy_finite_displacements(tuned, workspace):
    """Epoch 0's ``phonon_mae_thz`` (from the model's exact Hessian) against phonopy's own
    workflow on the base model: forces of its displaced supercells (±0.01 Å) from the ASE
    calculator, force constants by phonopy, frequencies on the same 8×8×8 Γ-centred mesh,
    compared band by band with the reference's."""
    from equitrain_jax.calculator import Calculator
    from equitrain_jax.phonons.bridge import phonopy_to_ase
    from equitrain_jax.potential import Potential

    out, _ = tuned
    reference = phonopy.load(workspace / "cu_phonons.yaml", log_level=0)
    model = phonopy.Phonopy(reference.unitcell, reference.supercell_matrix, primitive_matrix=reference.primitive_matrix)
    model.generate_displacements(distance=0.01, is_plusminus=True)
    calculator = functools.partial(Calculator, Potential(workspace / "base", dtype="float64"))
    forces = []
    for cell in model.supercells_with_displacements:
        atoms = phonopy_to_ase(cell)
        atoms.calc = calculator()
        forces.append(atoms.get_forces())
    model.forces = np.array(forces)
    model.produce_force_constants()
    frequencies = []
    for phonon in (model, reference):
        phonon.run_mesh([8, 8, 8], is_gamma_center=True, is_mesh_symmetry=False)
        frequencies.append(phonon.get_mesh_dict()["frequencies"])
    expected = np.mean(np.abs(frequencies[0] - frequencies[1]))
    recorded = json.loads((out / "history.json").read_text())[0]["phonon_mae_thz"]
    assert expected > 0.1
    np.testing.assert_allclose(recorded, expected, rtol=1e-3)
