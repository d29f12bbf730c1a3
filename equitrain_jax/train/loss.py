"""Weighted energy-per-atom, force and stress losses over padded batches, and error metrics.

Padding nodes and graphs are excluded through ``nodes["mask"]`` and ``globals["mask"]``; stress
enters only for graphs with ``globals["has_stress"]``.  Default weights (energy 10, forces 100,
stress 1000) and the Huber δ = 0.01 follow the MACE-MP fine-tuning recipe.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import jraph
import optax

from equitrain_jax.models.quantities import Outputs

KINDS = ("huber", "mse", "mae")


class LossConfig(NamedTuple):
    """Weights of each term (energy term per atom: eV/atom; forces eV/Å; stress eV/Å³)."""

    energy_weight: float = 10.0
    forces_weight: float = 100.0
    stress_weight: float = 1000.0
    kind: str = "huber"
    huber_delta: float = 0.01

    def check(self) -> "LossConfig":
        if self.kind not in KINDS:
            raise ValueError(f"loss kind must be one of {KINDS}, got {self.kind!r}")
        if self.huber_delta <= 0:
            raise ValueError(f"huber_delta must be positive, got {self.huber_delta}")
        return self


def pointwise(residual: jnp.ndarray, config: LossConfig) -> jnp.ndarray:
    """Elementwise loss of a residual (prediction − label)."""
    if config.kind == "huber":
        return optax.losses.huber_loss(residual, delta=config.huber_delta)
    if config.kind == "mse":
        return jnp.square(residual)
    return jnp.abs(residual)


def _masked_mean(values: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Mean of ``values`` over entries whose leading index is masked in; 0 if none."""
    mask = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (values.ndim - 1)), values.shape)
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def atoms_per_graph(batch: jraph.GraphsTuple) -> jnp.ndarray:
    return jnp.maximum(batch.n_node, 1).astype(batch.nodes["positions"].dtype)


def loss_terms(outputs: Outputs, batch: jraph.GraphsTuple, config: LossConfig) -> dict[str, jnp.ndarray]:
    """Per-term losses: energy per atom, forces (per component), stress (per component)."""
    graph_mask, node_mask = batch.globals["mask"], batch.nodes["mask"]
    energy_residual = (outputs.energy - batch.globals["energy"]) / atoms_per_graph(batch)
    return {
        "energy": _masked_mean(pointwise(energy_residual, config), graph_mask),
        "forces": _masked_mean(pointwise(outputs.forces - batch.nodes["forces"], config), node_mask),
        "stress": _masked_mean(
            pointwise(outputs.stress - batch.globals["stress"], config), graph_mask & batch.globals["has_stress"]
        ),
    }


def weighted_loss(outputs: Outputs, batch: jraph.GraphsTuple, config: LossConfig) -> tuple[jnp.ndarray, dict]:
    """The total loss and its terms."""
    terms = loss_terms(outputs, batch, config)
    total = (
        config.energy_weight * terms["energy"]
        + config.forces_weight * terms["forces"]
        + config.stress_weight * terms["stress"]
    )
    return total, terms


def error_sums(outputs: Outputs, batch: jraph.GraphsTuple) -> dict[str, jnp.ndarray]:
    """Sums and counts of absolute errors over real entries, to be pooled across batches:
    energy per atom (eV/atom), force components (eV/Å)."""
    graph_mask, node_mask = batch.globals["mask"], batch.nodes["mask"]
    energy_error = jnp.abs(outputs.energy - batch.globals["energy"]) / atoms_per_graph(batch)
    force_error = jnp.abs(outputs.forces - batch.nodes["forces"])
    return {
        "energy_abs": jnp.sum(jnp.where(graph_mask, energy_error, 0.0)),
        "n_graphs": jnp.sum(graph_mask),
        "forces_abs": jnp.sum(jnp.where(node_mask[:, None], force_error, 0.0)),
        "n_force_components": 3 * jnp.sum(node_mask),
    }
