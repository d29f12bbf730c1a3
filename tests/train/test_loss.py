"""Losses against formulas evaluated by hand, with garbage on padding entries that must not count."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from equitrain_jax.models.quantities import Outputs
from equitrain_jax.train import LossConfig, error_sums, labelled_batches, metrics, weighted_loss

from common import ALLOY_ELEMENTS as ELEMENTS, emt_cells


def reference(residual, kind, delta=0.01):
    a = np.abs(residual)
    if kind == "huber":
        return np.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta))
    return a**2 if kind == "mse" else a


@pytest.mark.parametrize("kind", ["huber", "mse", "mae"])
def test_weighted_loss_ignores_padding(kind):
    cells = emt_cells(3, seed=4)
    cells[2].calc.results.pop("stress")  # this structure has no stress label
    (batch,) = labelled_batches(cells, 5.0, ELEMENTS, batch_size=3)
    n_node, n_graph = batch.nodes["positions"].shape[0], batch.n_node.shape[0]
    n_real = sum(len(a) for a in cells)
    rng = np.random.default_rng(0)
    energy = rng.normal(size=n_graph) * 0.1 + np.asarray(batch.globals["energy"])
    forces = rng.normal(size=(n_node, 3)) * 0.05
    stress = rng.normal(size=(n_graph, 3, 3)) * 0.01
    energy[3:], forces[n_real:], stress[3:] = 1e6, 1e6, 1e6  # padding: must not count
    outputs = Outputs(energy, None, forces, stress, None)
    config = LossConfig(kind=kind)
    total, terms = weighted_loss(outputs, batch, config)

    atoms_per = np.array([len(a) for a in cells])
    e_ref = np.array([a.get_potential_energy() for a in cells])
    f_ref = np.concatenate([a.get_forces() for a in cells])
    s_ref = np.array([cells[i].get_stress(voigt=False) for i in range(2)])
    expected = {
        "energy": reference((energy[:3] - e_ref) / atoms_per, kind).mean(),
        "forces": reference(forces[:n_real] - f_ref, kind).mean(),
        "stress": reference(stress[:2] - s_ref, kind).mean(),
    }
    for name in expected:
        np.testing.assert_allclose(terms[name], expected[name], rtol=1e-10)
    np.testing.assert_allclose(
        total, 10 * expected["energy"] + 100 * expected["forces"] + 1000 * expected["stress"], rtol=1e-10
    )
    errors = metrics(jax.device_get(error_sums(outputs, batch)))
    np.testing.assert_allclose(errors["forces_mae_mev_per_a"], 1e3 * np.abs(forces[:n_real] - f_ref).mean(), rtol=1e-10)
    np.testing.assert_allclose(
        errors["forces_rmse_mev_per_a"], 1e3 * np.sqrt(np.square(forces[:n_real] - f_ref).mean()), rtol=1e-10
    )
    np.testing.assert_allclose(
        errors["energy_rmse_mev_per_atom"], 1e3 * np.sqrt(np.square((energy[:3] - e_ref) / atoms_per).mean()), rtol=1e-10
    )
    np.testing.assert_allclose(errors["stress_mae_mev_per_a3"], 1e3 * np.abs(stress[:2] - s_ref).mean(), rtol=1e-10)
    np.testing.assert_allclose(errors["stress_mae_gpa"], 160.21766208 * np.abs(stress[:2] - s_ref).mean(), rtol=1e-10)


def test_unknown_loss_kind():
    with pytest.raises(ValueError, match="'l3'"):
        LossConfig(kind="l3")
