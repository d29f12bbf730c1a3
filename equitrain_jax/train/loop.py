"""The epoch loop: AdamW with clipping and a learning-rate schedule, EMA of the weights,
reduce-on-plateau and early stopping on a validation metric (`TrainConfig.monitor`), checkpoints
(best and last) that resume without losing a step, and data-parallel training over a device mesh.

A run trains on batches of labelled structures, on phonon items (`PhononBatches`, whose Hessian
directions are drawn afresh every step), on phono3py items (`ThirdOrderBatches`, direction pairs
drawn afresh every step), or on several: then every step holds one batch of each, and the shorter
lists are cycled within the epoch.  Everything random is derived from
``TrainConfig.seed`` (batch order of epoch ``e`` from ``(seed, e)``, Hessian directions of a step
from ``(seed, e, step)``), so the same seed gives the same run, and a resumed run the same as an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import jraph
import numpy as np
import optax

from equitrain_jax.adapters.freeze import masked_optimizer
from equitrain_jax.adapters.strategies import Strategy
from equitrain_jax.train.checkpoint import TrainState, load_checkpoint, read_checkpoint_record, save_checkpoint
from equitrain_jax.models.quantities import node_energy_function
from equitrain_jax.train.config import (
    MONITORED_KEYS,
    SCHEDULES,
    HessianLossConfig,
    LossConfig,
    ThirdOrderLossConfig,
    TrainConfig,
)
from equitrain_jax.train.fingerprint import resume_changes, run_fingerprint, tree_digest
from equitrain_jax.train.hessian_loss import PhononValidation, model_hvp, validate_phonons
from equitrain_jax.train.loss import combine_loss, metrics
from equitrain_jax.train.phonon_data import PhononBatches
from equitrain_jax.train.step import Penalty, StepBatch, ema_update, make_eval_step, make_train_step
from equitrain_jax.train.third_order import ThirdOrderBatches

__all__ = ["SCHEDULES", "FitResult", "TrainConfig", "adamw", "data_mesh", "evaluate", "fit", "learning_rate_schedule"]


class FitResult(NamedTuple):
    trainable: Any  # the weights validation chose: the best epoch's (EMA if enabled)
    opt_state: Any
    history: list[dict[str, float]]  # one entry per epoch; entry 0 is the starting model
    last: Any = None  # the last epoch's weights (EMA if enabled)
    resumes: tuple = ()  # one record per resume: {"epoch", "step", "changed": {field: [before, after]}}


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """Learning rate per optimiser step: warm-up, then constant or cosine."""
    warmup = config.warmup_epochs * steps_per_epoch
    total = config.epochs * steps_per_epoch
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0 if warmup else config.learning_rate, config.learning_rate, max(warmup, 1) if warmup else 0,
            max(total, warmup + 1), end_value=config.min_learning_rate,
        )
    if warmup:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, config.learning_rate, warmup), optax.constant_schedule(config.learning_rate)],
            [warmup],
        )
    return optax.constant_schedule(config.learning_rate)


def adamw(
    learning_rate: float | optax.Schedule = 1e-3, weight_decay: float = 0.0, clip_norm: Optional[float] = 10.0
) -> optax.GradientTransformation:
    """AdamW after clipping the gradient's global norm to ``clip_norm`` (None: no clipping)."""
    clip = [] if clip_norm is None else [optax.clip_by_global_norm(clip_norm)]
    return optax.chain(*clip, optax.adamw(learning_rate, weight_decay=weight_decay))


def evaluate(eval_step: Callable, trainable: Any, frozen: Any, batches: Sequence[jraph.GraphsTuple],
             loss_config: LossConfig) -> dict[str, float]:
    """Validation metrics (see `loss.metrics`) and the validation loss over all ``batches``."""
    parts = [jax.device_get(eval_step(trainable, frozen, batch)) for batch in batches]
    total = {key: float(sum(np.sum(p[key]) for p in parts)) for key in parts[0]}
    loss, _ = combine_loss(total, loss_config)
    return {"valid_loss": float(loss), **metrics(total)}


def _place(mesh: Optional[jax.sharding.Mesh], tree: Any, shard_leading: bool) -> Any:
    """Put ``tree`` on ``mesh``: the leading axis split over the mesh's ``data`` axis, or replicated;
    without a mesh on the default device (as the step's outputs are, so its first call compiles
    the program every later call uses)."""
    if mesh is None:
        return jax.device_put(tree)
    spec = jax.sharding.PartitionSpec("data") if shard_leading else jax.sharding.PartitionSpec()
    return jax.device_put(tree, jax.sharding.NamedSharding(mesh, spec))


def data_mesh(n_devices: Optional[int] = None) -> jax.sharding.Mesh:
    """A one-axis mesh named ``data`` over the first ``n_devices`` devices (default: all).

    On several hosts, call ``jax.distributed.initialize()`` first; the mesh then spans every
    host's devices and each host feeds the batches as on one machine.
    """
    devices = jax.devices()
    n_devices = len(devices) if n_devices is None else n_devices
    if not 1 <= n_devices <= len(devices):
        raise ValueError(f"asked for {n_devices} devices, {len(devices)} available: {devices}")
    return jax.sharding.Mesh(np.array(devices[:n_devices]), ("data",))


def fit(
    model: Any,
    strategy: Strategy,
    train_batches: Sequence[jraph.GraphsTuple],
    valid_batches: Sequence[jraph.GraphsTuple],
    config: TrainConfig = TrainConfig(),
    loss_config: LossConfig = LossConfig(),
    penalty: Optional[Penalty] = None,
    optimizer: Optional[optax.GradientTransformation] = None,
    checkpoint_dir: Optional[str | Path] = None,
    resume: bool = False,
    mesh: Optional[jax.sharding.Mesh] = None,
    log: Optional[Callable[[dict[str, float]], None]] = None,
    on_step: Optional[Callable[[int, dict], None]] = None,
    fingerprint: Optional[dict] = None,
    phonons: Optional[PhononBatches] = None,
    valid_phonons: Sequence[PhononValidation] = (),
    hessian_config: HessianLossConfig = HessianLossConfig(),
    third_order: Optional[ThirdOrderBatches] = None,
    third_order_config: ThirdOrderLossConfig = ThirdOrderLossConfig(),
) -> FitResult:
    """Train ``strategy.trainable`` for ``config.epochs`` passes over ``train_batches``, ``phonons``
    and ``third_order`` (any may be empty).

    ``optimizer`` defaults to `adamw` with ``config``'s schedule, masked by ``strategy.labels``
    if any; ``penalty`` (added to the loss) to ``strategy.penalty``.  ``checkpoint_dir``: write
    ``best`` and ``last`` at the start, ``last`` after every epoch (and on Ctrl-C, mid-epoch) and
    ``best`` when the monitored validation metric (``config.monitor``) improves.  ``resume``
    continues from ``last`` there, after checking that it belongs to this run (see
    `equitrain_jax.train.fingerprint`): ``config``, ``loss_config`` and ``fingerprint`` (JSON-able
    facts that define the run; default: content hashes of the starting weights and of the
    batches) must match the checkpoint's, except settings that only extend the run, which the
    result's ``resumes`` records.
    ``mesh``: a `data_mesh`; batches must then be stacked over shards (see
    `equitrain_jax.train.data.sharded_batches`) and are split over its devices.
    ``log(entry)`` after every epoch, ``on_step(step, metrics)`` after every step.

    ``phonons``: phonon items with the Hessian term of ``hessian_config`` (stacked over the mesh's
    devices when there is a mesh).  ``valid_phonons``: references whose frequency MAE
    (``phonon_mae_thz``), Hessian errors and Hessian term join each epoch's validation (the term
    adds to ``valid_loss``).  Validation needs ``valid_batches`` or ``valid_phonons``.
    ``third_order``: phono3py items with the third-order term of ``third_order_config`` (pairs drawn
    afresh every step, like the Hessian directions).

    Raises:
        ValueError: no data to train or validate on, a monitored metric nothing measures, or a
            checkpoint of another run (naming each differing field).
        FileNotFoundError: ``resume`` without a checkpoint.
    """
    if not train_batches and not phonons and not third_order:
        raise ValueError("fit needs training batches of structures, phonon items or phono3py items")
    if not valid_batches and not valid_phonons:
        raise ValueError("fit needs validation batches of structures or validation phonon references")
    if config.monitor == "phonon_mae" and not valid_phonons:
        raise ValueError("monitor 'phonon_mae' needs validation phonon references")
    if config.monitor in ("forces_mae", "energy_mae") and not valid_batches:
        raise ValueError(f"monitor {config.monitor!r} needs validation structures")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    if fingerprint is None:
        fingerprint = {
            "initial_weights": tree_digest(strategy.trainable), "frozen_weights": tree_digest(strategy.frozen),
            "train_batches": tree_digest(list(train_batches)), "valid_batches": tree_digest(list(valid_batches)),
        }
        if phonons or valid_phonons:
            fingerprint["phonon_data"] = tree_digest([phonons.digest_arrays(), phonons.groups] if phonons else [])
            fingerprint["valid_phonon_data"] = tree_digest([[v.item.supercell.positions, v.item.force_constants]
                                                            for v in valid_phonons])
    if (phonons or valid_phonons) and "hessian" not in fingerprint:
        fingerprint = {**fingerprint, "hessian": dataclasses.asdict(hessian_config)}
    if third_order and "third_order" not in fingerprint:
        fingerprint = {**fingerprint, "third_order": dataclasses.asdict(third_order_config),
                       "third_order_data": tree_digest([third_order.digest_arrays(), third_order.groups])}
    fingerprint = run_fingerprint(config, loss_config, fingerprint)
    checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
    resumes: list = []
    if resume:
        record = read_checkpoint_record(checkpoint_dir / "last")
        stored = record["metadata"]
        changed = resume_changes(stored.get("fingerprint"), fingerprint, record["epoch"], str(checkpoint_dir / "last"))
        resumes = [*stored.get("resumes", []), {"epoch": record["epoch"], "step": record["step"], "changed": changed}]
    run_facts = {"fingerprint": fingerprint, "resumes": resumes}

    steps_per_epoch = max(len(train_batches), len(phonons or ()), len(third_order or ()))
    if optimizer is None:
        optimizer = adamw(learning_rate_schedule(config, steps_per_epoch), config.weight_decay, config.clip_norm)
    if strategy.labels is not None:
        optimizer = masked_optimizer(optimizer, strategy.labels)
    penalty = strategy.penalty if penalty is None else penalty
    train_step = make_train_step(model, strategy.merge, optimizer, loss_config, penalty, hessian_config,
                                 third_order_config)
    eval_step = make_eval_step(model, strategy.merge, loss_config)
    hvp = jax.jit(model_hvp(node_energy_function(model), sequential=False))  # validation: no reverse pass to keep small
    frozen = _place(mesh, strategy.frozen, False)
    train_batches = [_place(mesh, b, True) for b in train_batches]
    valid_batches = [_place(mesh, b, True) for b in valid_batches]
    monitored = MONITORED_KEYS[config.monitor]

    def validate(trainable: Any) -> dict[str, float]:
        entry = {"valid_loss": 0.0}
        if valid_batches:
            entry = evaluate(eval_step, trainable, frozen, valid_batches, loss_config)
        if valid_phonons:
            variables = strategy.merge(jax.device_get(trainable), jax.device_get(frozen))
            found = validate_phonons(valid_phonons, hvp, variables, hessian_config)
            entry = {**entry, **found, "valid_loss": entry["valid_loss"] + found["valid_hessian_loss"]}
        return entry

    def step_batch(epoch: int, position: int, step: int) -> StepBatch:
        """The batch of step ``position`` of ``epoch`` (1-based), the run's ``step``-th."""
        structures = phonon_batch = third_order_batch = None
        if train_batches:
            order = np.random.default_rng([config.seed, epoch]).permutation(len(train_batches))
            structures = train_batches[order[position % len(train_batches)]]
        if phonons:
            order = np.random.default_rng([config.seed, epoch, 1]).permutation(len(phonons))
            phonon_batch = _place(mesh, phonons.batch(order[position % len(phonons)], epoch, step), True)
        if third_order:
            order = np.random.default_rng([config.seed, epoch, 3]).permutation(len(third_order))
            third_order_batch = _place(mesh, third_order.batch(order[position % len(third_order)], epoch, step), True)
        return StepBatch(structures, phonon_batch, third_order_batch)

    trainable = _place(mesh, strategy.trainable, False)
    state = TrainState(trainable, optimizer.init(trainable), trainable if config.ema_decay else None)
    if resume:
        state, _ = load_checkpoint(checkpoint_dir / "last", state)
        state = state._replace(**{k: _place(mesh, getattr(state, k), False) for k in ("trainable", "opt_state", "ema")})

    def evaluated(s: TrainState) -> Any:
        return s.trainable if s.ema is None else s.ema

    def save(name: str, s: TrainState) -> None:
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir / name, s, run_facts)

    if not state.history:
        start = {"epoch": 0, "learning_rate": config.learning_rate, **validate(evaluated(state))}
        state = state._replace(history=(start,), best_loss=start[monitored])
    best = state if not resume else None  # the state of the best epoch so far, once known here
    saved_best = None
    try:
        if not resume:
            save("best", state)
            saved_best = state
            save("last", state)
        while state.epoch < config.epochs and not _stopped_early(state, config):
            for position in range(state.position, steps_per_epoch):
                batch = step_batch(state.epoch + 1, position, state.step)
                trainable, opt_state, step_metrics = train_step(
                    state.trainable, frozen, state.opt_state, batch, np.float32(state.lr_scale)
                )
                ema = state.ema
                if ema is not None:
                    n = state.step + 1
                    ema = ema_update(ema, trainable, np.float32(min(config.ema_decay, (1 + n) / (10 + n))))
                state = state._replace(
                    trainable=trainable, opt_state=opt_state, ema=ema, step=state.step + 1,
                    position=state.position + 1, epoch_losses=state.epoch_losses + (float(step_metrics["loss"]),),
                )
                if on_step is not None:
                    on_step(state.step, step_metrics)
            entry = {
                "epoch": state.epoch + 1,
                "train_loss": float(np.mean(state.epoch_losses)),
                "learning_rate": float(_current_rate(config, steps_per_epoch, state)),
                **validate(evaluated(state)),
            }
            improved = entry[monitored] < state.best_loss
            state = state._replace(
                epoch=state.epoch + 1, position=0, epoch_losses=(), history=state.history + (entry,),
                best_loss=min(state.best_loss, entry[monitored]),
                bad_epochs=0 if improved else state.bad_epochs + 1,
                plateau_epochs=0 if improved else state.plateau_epochs + 1,
            )
            if config.schedule == "plateau" and state.plateau_epochs >= config.plateau_patience:
                floor = config.min_learning_rate / config.learning_rate
                state = state._replace(lr_scale=max(state.lr_scale * config.plateau_factor, floor), plateau_epochs=0)
            if improved:
                best = state
                save("best", state)  # before last: a last checkpoint never claims a best epoch that best lacks
                saved_best = state
            save("last", state)
            if log is not None:
                log(entry)
    except KeyboardInterrupt:
        if best is not None and best is not saved_best:  # interrupted while saving it
            save("best", best)
        save("last", state)
        raise
    if best is None:  # resumed and no better epoch since: the best weights are in the best checkpoint
        best = load_checkpoint(checkpoint_dir / "best", state)[0]
    return FitResult(evaluated(best), state.opt_state, list(state.history), evaluated(state), tuple(resumes))


def _stopped_early(state: TrainState, config: TrainConfig) -> bool:
    return config.early_stopping_patience is not None and state.bad_epochs >= config.early_stopping_patience


def _current_rate(config: TrainConfig, steps_per_epoch: int, state: TrainState) -> float:
    """The learning rate of the last step taken (schedule × plateau factor)."""
    return float(learning_rate_schedule(config, steps_per_epoch)(max(state.step - 1, 0))) * state.lr_scale
