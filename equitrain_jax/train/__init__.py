"""Training: labelled padded batches, losses, jitted train/eval steps, the epoch loop with
schedules, EMA, early stopping, checkpoints and data parallelism, and the fine-tuning job."""

from equitrain_jax.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from equitrain_jax.train.data import LabelKeys, labelled_batches, labelled_graph, sharded_batches
from equitrain_jax.train.loop import (
    SCHEDULES,
    FitResult,
    TrainConfig,
    adamw,
    data_mesh,
    evaluate,
    fit,
    learning_rate_schedule,
)
from equitrain_jax.train.loss import (
    LossConfig,
    combine_loss,
    error_sums,
    loss_sums,
    loss_terms,
    metrics,
    weighted_loss,
)
from equitrain_jax.train.step import ema_update, make_eval_step, make_predict, make_train_step

__all__ = [
    "FitResult",
    "LabelKeys",
    "LossConfig",
    "SCHEDULES",
    "TrainConfig",
    "TrainState",
    "adamw",
    "combine_loss",
    "data_mesh",
    "ema_update",
    "error_sums",
    "evaluate",
    "fit",
    "labelled_batches",
    "labelled_graph",
    "learning_rate_schedule",
    "load_checkpoint",
    "loss_sums",
    "loss_terms",
    "make_eval_step",
    "make_predict",
    "make_train_step",
    "metrics",
    "save_checkpoint",
    "sharded_batches",
    "weighted_loss",
]
