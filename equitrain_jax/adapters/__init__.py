"""Fine-tuning adapters as pure functions over parameter pytrees (params → params).

Nothing in the model knows about adapters: a strategy's ``merge`` builds ordinary model
variables from a trainable and a frozen tree.
"""

from equitrain_jax.adapters import delta, lora
from equitrain_jax.adapters.delta import l2sp_penalty
from equitrain_jax.adapters.freeze import FROZEN, TRAINABLE, masked_optimizer, trainable_labels
from equitrain_jax.adapters.lora import LoRAWeight
from equitrain_jax.adapters.paths import dotted_path, indexed_path, leaf_paths, matches, select
from equitrain_jax.adapters.strategies import (
    Strategy,
    delta_finetune,
    freeze_finetune,
    from_scratch,
    full_finetune,
    l2sp_finetune,
    lora_finetune,
    partial_finetune,
    scratch_finetune,
)

__all__ = [
    "FROZEN",
    "LoRAWeight",
    "Strategy",
    "TRAINABLE",
    "delta",
    "delta_finetune",
    "dotted_path",
    "freeze_finetune",
    "from_scratch",
    "full_finetune",
    "indexed_path",
    "l2sp_finetune",
    "l2sp_penalty",
    "leaf_paths",
    "lora",
    "lora_finetune",
    "masked_optimizer",
    "matches",
    "partial_finetune",
    "scratch_finetune",
    "select",
    "trainable_labels",
]
