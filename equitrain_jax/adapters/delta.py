"""L2-SP fine-tuning: a zero-initialised residual δ per chosen weight, W = W_pretrained + δ,
with the penalty λ·Σ δ² keeping the model near its starting point (Li et al., 2018)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from equitrain_jax.adapters.paths import Patterns, add_updates, select

DEFAULT_TARGETS: tuple[str, ...] = ("*",)


def init(params: Mapping[str, Any], targets: Patterns = DEFAULT_TARGETS) -> dict[str, Any]:
    """Zero residuals shaped like the weights of ``params`` matching ``targets``."""
    return jax.tree_util.tree_map(jnp.zeros_like, select(params, targets))


def merge(params: Mapping[str, Any], deltas: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with each residual added: W + δ."""
    return add_updates(params, deltas, lambda d, weight: d.astype(weight.dtype))


def l2sp_penalty(deltas: Any, weight: float) -> jnp.ndarray:
    """λ·Σ δ² over every residual, in the units of the loss it is added to (λ carries them)."""
    return weight * sum(jnp.sum(jnp.square(d)) for d in jax.tree_util.tree_leaves(deltas))
