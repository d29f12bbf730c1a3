"""Jit-compiled training and evaluation steps, pure functions of their arguments.

``train_step(trainable, frozen, opt_state, batch, lr_scale=1) -> (trainable, opt_state, metrics)``:
the strategy's ``merge`` builds model variables, `energy_forces_stress` gives energies, forces and
stress of the structures, `hessian_vector_product` (the same energy function, forward over
reverse) gives H·v of the phonon items, `third_order_product` (one more forward pass) gives
Φ3[u, v] of the phono3py items, and the one loss is differentiated with respect to ``trainable``
only.

A batch is a `StepBatch` of structures, phonon items and phono3py items (any may be None; a plain
graph is a batch of structures).  Each part is one padded graph, or a stack of equally padded graphs with a
leading shard axis (see `equitrain_jax.train.data.sharded_batches` and
`equitrain_jax.train.phonon_data.PhononBatches`).  Losses are pooled as sums and counts over
every shard before they are divided, so a stack gives the same loss and gradient as one graph
holding all of its structures; with the stack sharded over a device mesh, each device works on
its shards.  The step compiles once per combination of padded shapes present.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import jraph
import optax

from equitrain_jax.models.mace import MACE
from equitrain_jax.models.quantities import Outputs, energy_forces_stress, node_energy_function
from equitrain_jax.train.config import HessianLossConfig, ThirdOrderLossConfig
from equitrain_jax.train.hessian_loss import combine_hessian_loss, hessian_loss_sums, hessian_products, model_hvp
from equitrain_jax.train.loss import TERMS, LossConfig, combine_loss, error_sums, loss_sums
from equitrain_jax.train.third_order import (
    combine_third_order_loss,
    model_third_order,
    third_order_loss_sums,
    third_order_products,
)

Merge = Callable[[Any, Any], Any]  # (trainable, frozen) -> variables
Penalty = Callable[[Any], jax.Array]  # trainable -> scalar added to the loss


def make_predict(model: MACE, merge: Merge) -> Callable[[Any, Any, jraph.GraphsTuple], Outputs]:
    """``predict(trainable, frozen, batch) -> Outputs`` (not compiled; compose it)."""
    node_energies = functools.partial(model.apply, method=type(model).node_energies)

    def predict(trainable: Any, frozen: Any, batch: jraph.GraphsTuple) -> Outputs:
        return energy_forces_stress(node_energies, merge(trainable, frozen), batch)

    return predict


class StepBatch(NamedTuple):
    """What one optimiser step trains on: a padded graph of labelled structures (see
    `equitrain_jax.train.data`) and one of phonon items with their step's directions (see
    `equitrain_jax.train.phonon_data`) and one of phono3py items with their step's direction
    pairs (see `equitrain_jax.train.third_order`); any may be None."""

    structures: Optional[jraph.GraphsTuple] = None
    phonons: Optional[jraph.GraphsTuple] = None
    third_order: Optional[jraph.GraphsTuple] = None


def as_step_batch(batch: Union[StepBatch, jraph.GraphsTuple]) -> StepBatch:
    """A `StepBatch`; a plain graph is a batch of structures."""
    return batch if isinstance(batch, StepBatch) else StepBatch(batch)


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
    hessian_config: HessianLossConfig = HessianLossConfig(),
    third_order_config: ThirdOrderLossConfig = ThirdOrderLossConfig(),
) -> Callable:
    """A jitted ``train_step(trainable, frozen, opt_state, batch, lr_scale=1.0)``.

    ``batch``: a `StepBatch` (or a graph of structures).  The loss is the weighted mean of each
    term over its entries in the batch (`combine_loss`), plus the Hessian term of the phonon items
    (`combine_hessian_loss`, ``hessian_config``), the third-order term of the phono3py items
    (`combine_third_order_loss`, ``third_order_config``) and the penalty; a part the batch lacks
    adds 0.
    ``lr_scale`` multiplies the optimiser's update (for AdamW: the learning rate, weight decay
    included); reduce-on-plateau lowers it.  Metrics hold the loss, its terms (means, unweighted:
    energy, forces, stress, hessian, third_order) and the penalty.
    """
    node_energy_fn = node_energy_function(model)
    hvp = model_hvp(node_energy_fn, hessian_config.sequential)
    third_order = model_third_order(node_energy_fn, third_order_config.sequential)

    def objective(trainable, frozen, batch: StepBatch):
        variables = merge(trainable, frozen)
        total, terms = 0.0, {term: 0.0 for term in (*TERMS, "hessian", "third_order")}
        if batch.structures is not None:
            sums = pooled(lambda graph: loss_sums(energy_forces_stress(node_energy_fn, variables, graph), graph,
                                                  loss_config), batch.structures)
            total, structure_terms = combine_loss(sums, loss_config)
            terms.update(structure_terms)
        if batch.phonons is not None:
            sums = pooled(lambda graph: hessian_loss_sums(hessian_products(hvp, variables, graph), graph,
                                                          hessian_config), batch.phonons)
            weighted, terms["hessian"] = combine_hessian_loss(sums, hessian_config)
            total = total + weighted
        if batch.third_order is not None:
            sums = pooled(lambda graph: third_order_loss_sums(third_order_products(third_order, variables, graph), graph,
                                                              third_order_config), batch.third_order)
            weighted, terms["third_order"] = combine_third_order_loss(sums, third_order_config)
            total = total + weighted
        extra = 0.0 if penalty is None else penalty(trainable)
        return total + extra, {**terms, "penalty": extra}

    @jax.jit
    def compiled_step(trainable, frozen, opt_state, batch, lr_scale):
        (loss, terms), grads = jax.value_and_grad(objective, has_aux=True)(trainable, frozen, batch)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        updates = jax.tree_util.tree_map(lambda u: (lr_scale * u).astype(u.dtype), updates)
        return optax.apply_updates(trainable, updates), opt_state, {"loss": loss, **terms}

    def train_step(trainable, frozen, opt_state, batch, lr_scale=1.0):
        return compiled_step(trainable, frozen, opt_state, as_step_batch(batch), lr_scale)

    train_step.compiled = compiled_step  # the jitted function (its compilations can be counted)
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
