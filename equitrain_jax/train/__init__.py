"""Training: settings, labelled padded batches, losses, jitted train/eval steps, the epoch loop
with schedules, EMA, early stopping, checkpoints and data parallelism, and the fine-tuning job.

Names are imported on first use (PEP 562): `equitrain_jax.train.config` and
`equitrain_jax.train.outputs` load without JAX, for the command line's input checks.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "checkpoint": ("TrainState", "load_checkpoint", "read_checkpoint_record", "save_checkpoint"),
    "config": ("E0_CHOICES", "LOSS_KINDS", "SCHEDULES", "STRATEGIES", "FinetuneConfig", "LossConfig", "SettingError",
               "ThirdOrderLossConfig", "TrainConfig"),
    "data": ("LabelKeys", "labelled_batches", "labelled_graph", "sharded_batches"),
    "finetune": ("split_train_valid",),
    "loop": ("FitResult", "adamw", "data_mesh", "evaluate", "fit", "learning_rate_schedule"),
    "loss": ("combine_loss", "error_sums", "loss_sums", "loss_terms", "metrics", "weighted_loss"),
    "step": ("ema_update", "make_eval_step", "make_predict", "make_train_step"),
    "strategies": ("REGISTRY", "build_strategy"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'equitrain_jax.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"equitrain_jax.train.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
