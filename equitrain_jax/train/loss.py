"""Weighted energy-per-atom, force and stress losses over padded batches, and error metrics.

Padding nodes and graphs are excluded through ``nodes["mask"]`` and ``globals["mask"]``; energy
and stress enter only for graphs with ``globals["has_energy"]`` and ``globals["has_stress"]``.  The weights and the pointwise loss are a
`LossConfig` (energy 10, forces 100, stress 1000 and Huber δ = 0.01 by default, the MACE-MP
fine-tuning recipe).
"""

from __future__ import annotations

import jax.numpy as jnp
import jraph
import numpy as np
import optax

from equitrain_jax.models.quantities import Outputs
from equitrain_jax.train.config import LossConfig

TERMS = ("energy", "forces", "stress")


def pointwise(residual: jnp.ndarray, config: LossConfig) -> jnp.ndarray:
    """Elementwise loss of a residual (prediction − label)."""
    if config.kind == "huber":
        return optax.losses.huber_loss(residual, delta=config.huber_delta)
    if config.kind == "mse":
        return jnp.square(residual)
    return jnp.abs(residual)


def atoms_per_graph(batch: jraph.GraphsTuple) -> jnp.ndarray:
    return jnp.maximum(batch.n_node, 1).astype(batch.nodes["positions"].dtype)


def _residuals(outputs: Outputs, batch: jraph.GraphsTuple) -> dict[str, tuple[jnp.ndarray, jnp.ndarray]]:
    """(residual, mask broadcast to its shape) per term: energy per atom [G] (eV/atom), force
    components [N, 3] (eV/Å), stress components [G, 3, 3] (eV/Å³, graphs with a stress label)."""
    graph_mask, node_mask = batch.globals["mask"], batch.nodes["mask"]
    stress_mask = graph_mask & batch.globals["has_stress"]
    energy_mask = graph_mask & batch.globals["has_energy"]
    energy = (outputs.energy - batch.globals["energy"]) / atoms_per_graph(batch)
    forces = outputs.forces - batch.nodes["forces"]
    stress = outputs.stress - batch.globals["stress"]
    return {
        "energy": (energy, energy_mask),
        "forces": (forces, jnp.broadcast_to(node_mask[:, None], forces.shape)),
        "stress": (stress, jnp.broadcast_to(stress_mask[:, None, None], stress.shape)),
    }


def loss_sums(outputs: Outputs, batch: jraph.GraphsTuple, config: LossConfig) -> dict[str, jnp.ndarray]:
    """Sums of the pointwise loss per term and the number of entries behind each, over real
    entries only.  Sums pool across batches or devices; `combine_loss` turns them into the loss."""
    sums = {}
    for term, (residual, mask) in _residuals(outputs, batch).items():
        sums[f"{term}_loss"] = jnp.sum(jnp.where(mask, pointwise(residual, config), 0.0))
        sums[f"{term}_count"] = jnp.sum(mask).astype(residual.dtype)
    return sums


def combine_loss(sums: dict[str, jnp.ndarray], config: LossConfig) -> tuple[jnp.ndarray, dict]:
    """Weighted loss from pooled `loss_sums`: each term is a mean over its entries (0 if none)."""
    terms = {term: sums[f"{term}_loss"] / jnp.maximum(sums[f"{term}_count"], 1) for term in TERMS}
    total = sum(getattr(config, f"{term}_weight") * terms[term] for term in TERMS)
    return total, terms


def loss_terms(outputs: Outputs, batch: jraph.GraphsTuple, config: LossConfig) -> dict[str, jnp.ndarray]:
    """Per-term losses: energy per atom, forces (per component), stress (per component)."""
    return combine_loss(loss_sums(outputs, batch, config), config)[1]


def weighted_loss(outputs: Outputs, batch: jraph.GraphsTuple, config: LossConfig) -> tuple[jnp.ndarray, dict]:
    """The total loss and its terms."""
    return combine_loss(loss_sums(outputs, batch, config), config)


def error_sums(outputs: Outputs, batch: jraph.GraphsTuple) -> dict[str, jnp.ndarray]:
    """Sums of absolute and squared errors and their counts over real entries, to be pooled
    across batches (see `metrics`): energy per atom (eV/atom), force components (eV/Å), stress
    components (eV/Å³)."""
    sums = {}
    for term, (residual, mask) in _residuals(outputs, batch).items():
        sums[f"{term}_abs"] = jnp.sum(jnp.where(mask, jnp.abs(residual), 0.0))
        sums[f"{term}_sq"] = jnp.sum(jnp.where(mask, jnp.square(residual), 0.0))
        sums[f"{term}_count"] = jnp.sum(mask).astype(residual.dtype)
    return sums


EV_PER_A3_TO_GPA = 160.21766208


def metrics(sums: dict[str, float]) -> dict[str, float]:
    """Pooled error sums → energy MAE/RMSE (meV/atom), force MAE/RMSE (meV/Å, per component),
    stress MAE/RMSE (meV/Å³, per component) and stress MAE in GPa; NaN where nothing was labelled."""

    def mean(key, term):
        count = sums[f"{term}_count"]
        return float(sums[f"{term}_{key}"] / count) if count > 0 else float("nan")

    out = {}
    for term, unit in (("energy", "mev_per_atom"), ("forces", "mev_per_a"), ("stress", "mev_per_a3")):
        out[f"{term}_mae_{unit}"] = 1e3 * mean("abs", term)
        out[f"{term}_rmse_{unit}"] = 1e3 * float(np.sqrt(mean("sq", term)))
    out["stress_mae_gpa"] = out["stress_mae_mev_per_a3"] * 1e-3 * EV_PER_A3_TO_GPA
    return out
