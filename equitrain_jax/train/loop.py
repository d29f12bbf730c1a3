"""A minimal epoch loop: AdamW with gradient clipping, validation MAEs after every epoch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Optional

import jax
import jraph
import numpy as np
import optax

from equitrain_jax.adapters.freeze import masked_optimizer
from equitrain_jax.adapters.strategies import Strategy
from equitrain_jax.models.mace import MACE
from equitrain_jax.train.loss import LossConfig
from equitrain_jax.train.step import Penalty, make_eval_step, make_train_step


class FitResult(NamedTuple):
    trainable: Any
    opt_state: Any
    history: list[dict[str, float]]  # one entry per epoch


def adamw(
    learning_rate: float = 1e-3, weight_decay: float = 0.0, clip_norm: Optional[float] = 10.0
) -> optax.GradientTransformation:
    """AdamW after clipping the gradient's global norm to ``clip_norm`` (None: no clipping)."""
    clip = [] if clip_norm is None else [optax.clip_by_global_norm(clip_norm)]
    return optax.chain(*clip, optax.adamw(learning_rate, weight_decay=weight_decay))


def validation_errors(
    eval_step: Callable, trainable: Any, frozen: Any, batches: Sequence[jraph.GraphsTuple]
) -> dict[str, float]:
    """Energy MAE (meV/atom) and force MAE (meV/Å, per component) over all ``batches``."""
    sums = [jax.device_get(eval_step(trainable, frozen, batch)) for batch in batches]
    total = {key: float(sum(s[key] for s in sums)) for key in sums[0]}
    return {
        "energy_mae_mev_per_atom": 1e3 * total["energy_abs"] / max(total["n_graphs"], 1),
        "forces_mae_mev_per_a": 1e3 * total["forces_abs"] / max(total["n_force_components"], 1),
    }


def fit(
    model: MACE,
    strategy: Strategy,
    train_batches: Sequence[jraph.GraphsTuple],
    valid_batches: Sequence[jraph.GraphsTuple],
    epochs: int,
    optimizer: Optional[optax.GradientTransformation] = None,
    loss_config: LossConfig = LossConfig(),
    penalty: Optional[Penalty] = None,
    seed: int = 0,
    log: Optional[Callable[[dict[str, float]], None]] = None,
) -> FitResult:
    """Train ``strategy.trainable`` for ``epochs`` passes over ``train_batches`` (order shuffled
    each epoch); ``optimizer`` defaults to `adamw()`, masked by ``strategy.labels`` if any.

    History entries hold the epoch, the mean training loss and the validation errors; entry 0 is
    the starting model.
    """
    if not train_batches or not valid_batches:
        raise ValueError("fit needs at least one training and one validation batch")
    optimizer = adamw() if optimizer is None else optimizer
    if strategy.labels is not None:
        optimizer = masked_optimizer(optimizer, strategy.labels)
    train_step = make_train_step(model, strategy.merge, optimizer, loss_config, penalty)
    eval_step = make_eval_step(model, strategy.merge)
    trainable, frozen = strategy.trainable, strategy.frozen
    opt_state = optimizer.init(trainable)
    history = [{"epoch": 0, **validation_errors(eval_step, trainable, frozen, valid_batches)}]
    rng = np.random.default_rng(seed)
    for epoch in range(1, epochs + 1):
        losses = []
        for i in rng.permutation(len(train_batches)):
            trainable, opt_state, metrics = train_step(trainable, frozen, opt_state, train_batches[i])
            losses.append(metrics["loss"])
        entry = {
            "epoch": epoch,
            "train_loss": float(np.mean(jax.device_get(losses))),
            **validation_errors(eval_step, trainable, frozen, valid_batches),
        }
        history.append(entry)
        if log is not None:
            log(entry)
    return FitResult(trainable, opt_state, history)
