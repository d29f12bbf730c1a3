"""``equitrain-jax finetune --phono3py`` from the command line: third-order term, fc2 Hessian term and
force-only displaced supercells from one phono3py reference (EMT copper, written as a DFT run
writes ``phono3py_params.yaml``), its record, and the anharmonicity guard's report against phono3py's
Grüneisen parameters of the reference's own fc2 and fc3."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from .conftest import equitrain_jax


@pytest.mark.slow
def test_phono3py_run_record_and_anharmonicity_report(workspace, tmp_path):
    import phono3py

    from equitrain_jax.phonons.anharmonicity import mean_gruneisen
    from equitrain_jax.phonons.conductivity import phono3py_from_calculator

    reference = phono3py_from_calculator(EMT(), bulk("Cu", "fcc", a=3.6), np.diag([3, 3, 3]), distance=0.03)
    reference.save(tmp_path / "phono3py_params.yaml")
    out = tmp_path / "run"
    done = equitrain_jax("finetune", "--model", str(workspace / "base"), "--phono3py",
                         str(tmp_path / "phono3py_params.yaml"), "--phono3py-fc2", "--phono3py-forces", "--epochs", "1",
                         "--lr", "5e-3", "--batch-size", "16", "--third-order-directions", "1", "--hessian-directions",
                         "1", "--dtype", "float64", "-o", str(out), cwd=tmp_path, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "run.json").read_text())
    (source,) = record["phono3py"]
    assert source["n_atoms"] == 27 and source["n_displaced_supercells"] == len(reference.supercells_with_displacements)
    assert record["third_order"]["directions"] == 1 and record["third_order"]["mode"] == "random"
    assert record["n_train"] + record["n_valid"] == source["n_displaced_supercells"]  # force-only structures
    (report,) = record["anharmonicity"]
    loaded = phono3py.load(tmp_path / "phono3py_params.yaml", symmetrize_fc=True, is_compact_fc=False)
    np.testing.assert_allclose(report["mean_gruneisen_reference"], mean_gruneisen(loaded), rtol=1e-10)
    assert report["mean_gruneisen_before"] != report["mean_gruneisen_after"]
    assert f"mean Grüneisen γ̄(300 K) {report['mean_gruneisen_before']:.3f} → {report['mean_gruneisen_after']:.3f}" \
        in done.stdout
    history = json.loads((out / "history.json").read_text())
    assert "forces_mae_mev_per_a" in history[-1] and "phonon_mae_thz" not in history[-1]  # validated on structures
    assert np.isnan(history[-1]["energy_mae_mev_per_atom"])  # no validation structure has an energy
