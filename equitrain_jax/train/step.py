"""Jit-compiled training and evaluation steps, pure functions of their arguments.

``train_step(trainable, frozen, opt_state, batch, lr_scale=1) -> (trainable, opt_state, metrics)``:
the strategy's ``merge`` builds model variables, `energy_forces_stress` gives energies, forces and
stress, and the loss is differentiated with respect to ``trainable`` only.

A batch is one padded graph, or a stack of equally padded graphs with a leading shard axis (see
`equitrain_jax.train.data.sharded_batches`).  Losses are pooled as sums and counts over every
shard before they are divided, so a stack gives the same loss and gradient as one graph holding
all of its structures; with the stack sharded over a device mesh, each device works on its shards.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Optional

import jax
import jax.numpy as jnp
import jraph
import optax

from equitrain_jax.models.mace import MACE
from equitrain_jax.models.quantities import Outputs, energy_forces_stress
from equitrain_jax.train.loss import LossConfig, combine_loss, error_sums, loss_sums

Merge = Callable[[Any, Any], Any]  # (trainable, frozen) -> variables
Penalty = Callable[[Any], jax.Array]  # trainable -> scalar added to the loss


def make_predict(model: MACE, merge: Merge) -> Callable[[Any, Any, jraph.GraphsTuple], Outputs]:
    """``predict(trainable, frozen, batch) -> Outputs`` (not compiled; compose it)."""
    node_energies = functools.partial(model.apply, method=type(model).node_energies)

    def predict(trainable: Any, frozen: Any, batch: jraph.GraphsTuple) -> Outputs:
        return energy_forces_stress(node_energies, merge(trainable, frozen), batch)

    return predict


def is_stacked(batch: jraph.GraphsTuple) -> bool:
    """Whether ``batch`` carries a leading shard axis."""
    return jnp.ndim(batch.n_node) == 2


def pooled(per_graph: Callable[[jraph.GraphsTuple], dict], batch: jraph.GraphsTuple) -> dict:
    """``per_graph(batch)`` (a dict of sums), summed over the shard axis of a stacked batch."""
    if not is_stacked(batch):
        return per_graph(batch)
    return jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), jax.vmap(per_graph)(batch))


def make_train_step(
    model: MACE,
    merge: Merge,
    optimizer: optax.GradientTransformation,
    loss_config: LossConfig = LossConfig(),
    penalty: Optional[Penalty] = None,
) -> Callable:
    """A jitted ``train_step(trainable, frozen, opt_state, batch, lr_scale=1.0)``.

    ``lr_scale`` multiplies the optimiser's update (for AdamW: the learning rate, weight decay
    included); reduce-on-plateau lowers it.  Metrics hold the loss, its terms and the penalty.
    """
    predict = make_predict(model, merge)

    def objective(trainable, frozen, batch):
        sums = pooled(lambda graph: loss_sums(predict(trainable, frozen, graph), graph, loss_config), batch)
        total, terms = combine_loss(sums, loss_config)
        extra = 0.0 if penalty is None else penalty(trainable)
        return total + extra, {**terms, "penalty": extra}

    @jax.jit
    def train_step(trainable, frozen, opt_state, batch, lr_scale=1.0):
        (loss, terms), grads = jax.value_and_grad(objective, has_aux=True)(trainable, frozen, batch)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        updates = jax.tree_util.tree_map(lambda u: (lr_scale * u).astype(u.dtype), updates)
        return optax.apply_updates(trainable, updates), opt_state, {"loss": loss, **terms}

    return train_step


def make_eval_step(model: MACE, merge: Merge, loss_config: LossConfig = LossConfig()) -> Callable:
    """A jitted ``eval_step(trainable, frozen, batch)`` → pooled error sums (see
    `loss.error_sums`) and loss sums (see `loss.loss_sums`)."""
    predict = make_predict(model, merge)

    def sums(trainable, frozen, graph):
        outputs = predict(trainable, frozen, graph)
        return {**error_sums(outputs, graph), **loss_sums(outputs, graph, loss_config)}

    @jax.jit
    def eval_step(trainable, frozen, batch):
        return pooled(functools.partial(sums, trainable, frozen), batch)

    return eval_step


@jax.jit
def ema_update(ema: Any, trainable: Any, decay: jax.Array) -> Any:
    """Exponential moving average ``ema + (1 - decay)(trainable - ema)``; a leaf that did not
    move (a frozen one) stays bit-identical."""
    return jax.tree_util.tree_map(lambda e, t: e + ((1 - decay) * (t - e)).astype(e.dtype), ema, trainable)
