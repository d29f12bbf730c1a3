"""Jit-compiled training and evaluation steps, pure functions of their arguments.

``train_step(trainable, frozen, opt_state, batch) -> (trainable, opt_state, metrics)``: the
strategy's ``merge`` builds model variables, `energy_forces_stress` gives energies, forces and
stress, the loss is differentiated with respect to ``trainable`` only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Optional

import jax
import jraph
import optax

from equitrain_jax.models.mace import MACE
from equitrain_jax.models.quantities import Outputs, energy_forces_stress
from equitrain_jax.train.loss import LossConfig, error_sums, weighted_loss

Merge = Callable[[Any, Any], Any]  # (trainable, frozen) -> variables
Penalty = Callable[[Any], jax.Array]  # trainable -> scalar added to the loss


def make_predict(model: MACE, merge: Merge) -> Callable[[Any, Any, jraph.GraphsTuple], Outputs]:
    """``predict(trainable, frozen, batch) -> Outputs`` (not compiled; compose it)."""
    node_energies = functools.partial(model.apply, method=MACE.node_energies)

    def predict(trainable: Any, frozen: Any, batch: jraph.GraphsTuple) -> Outputs:
        return energy_forces_stress(node_energies, merge(trainable, frozen), batch)

    return predict


def make_train_step(
    model: MACE,
    merge: Merge,
    optimizer: optax.GradientTransformation,
    loss_config: LossConfig = LossConfig(),
    penalty: Optional[Penalty] = None,
) -> Callable:
    """A jitted ``train_step(trainable, frozen, opt_state, batch)``; metrics hold the loss, its
    terms and the penalty."""
    loss_config = loss_config.check()
    predict = make_predict(model, merge)

    def objective(trainable, frozen, batch):
        total, terms = weighted_loss(predict(trainable, frozen, batch), batch, loss_config)
        extra = 0.0 if penalty is None else penalty(trainable)
        return total + extra, {**terms, "penalty": extra}

    @jax.jit
    def train_step(trainable, frozen, opt_state, batch):
        (loss, terms), grads = jax.value_and_grad(objective, has_aux=True)(trainable, frozen, batch)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, {"loss": loss, **terms}

    return train_step


def make_eval_step(model: MACE, merge: Merge) -> Callable:
    """A jitted ``eval_step(trainable, frozen, batch) -> error sums`` (see `loss.error_sums`)."""
    predict = make_predict(model, merge)

    @jax.jit
    def eval_step(trainable, frozen, batch):
        return error_sums(predict(trainable, frozen, batch), batch)

    return eval_step
