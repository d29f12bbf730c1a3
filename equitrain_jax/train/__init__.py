"""Training: labelled padded batches, losses, a jitted train step and a minimal epoch loop."""

from equitrain_jax.train.data import LabelKeys, labelled_batches, labelled_graph, to_device
from equitrain_jax.train.loop import FitResult, adamw, fit, validation_errors
from equitrain_jax.train.loss import LossConfig, error_sums, loss_terms, weighted_loss
from equitrain_jax.train.step import make_eval_step, make_predict, make_train_step

__all__ = [
    "FitResult",
    "LabelKeys",
    "LossConfig",
    "adamw",
    "error_sums",
    "fit",
    "labelled_batches",
    "labelled_graph",
    "loss_terms",
    "make_eval_step",
    "make_predict",
    "make_train_step",
    "to_device",
    "validation_errors",
    "weighted_loss",
]
