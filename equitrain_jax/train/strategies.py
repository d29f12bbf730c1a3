"""The fine-tuning strategies by name (`equitrain_jax.train.config.STRATEGIES`): each name's
recipe builds the `Strategy` to train from a model and a `FinetuneConfig`.  `finetune` and the
command line know strategies by these names only; the adapters they use are the pure functions
of `equitrain_jax.adapters.strategies`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import jax
import jraph

from equitrain_jax.adapters.heads import add_head, rename_head
from equitrain_jax.adapters.strategies import (
    Strategy,
    delta_finetune,
    freeze_finetune,
    full_finetune,
    lora_finetune,
    scratch_finetune,
)
from equitrain_jax.models.io import ModelBundle, ModelConfig
from equitrain_jax.train.config import DEFAULT_FREEZE_TRAINABLE, PRETRAINED_HEAD, FinetuneConfig


class StrategyInputs(NamedTuple):
    """What a strategy is built from: the model's ``variables`` (in the training dtype), its
    ``model_config``, a padded ``example_graph`` (shapes for a fresh initialisation), a random
    ``key``, the training ``dtype``, and ``elements``: the positions in ``model_config``'s
    ``atomic_numbers`` of the elements of everything the run trains on (see
    `equitrain_jax.data.element_indices`; LoRA adapts element-dependent weights for these only),
    None for all."""

    variables: Any
    model_config: ModelConfig
    example_graph: jraph.GraphsTuple
    key: jax.Array
    dtype: Any
    elements: Optional[tuple[int, ...]] = None


class Recipe(NamedTuple):
    """How a named strategy is built; ``adds_head``: it trains a new head on the training set
    while replay structures keep training the pretrained one (see `with_new_head`)."""

    build: Callable[[StrategyInputs, FinetuneConfig], Strategy]
    adds_head: bool = False


def _targets(config: FinetuneConfig) -> dict[str, tuple[str, ...]]:
    return {"targets": config.targets} if config.targets else {}


def _lora(inputs: StrategyInputs, config: FinetuneConfig) -> Strategy:
    return lora_finetune(inputs.variables, config.rank, config.alpha, **_targets(config), key=inputs.key,
                         elements=inputs.elements)


def _delta(inputs: StrategyInputs, config: FinetuneConfig) -> Strategy:
    return delta_finetune(inputs.variables, **_targets(config), l2sp_weight=config.l2sp_weight)


def _freeze(inputs: StrategyInputs, config: FinetuneConfig) -> Strategy:
    return freeze_finetune(inputs.variables, config.targets or DEFAULT_FREEZE_TRAINABLE)


def _full(inputs: StrategyInputs, config: FinetuneConfig) -> Strategy:
    return full_finetune(inputs.variables)


def _scratch(inputs: StrategyInputs, config: FinetuneConfig) -> Strategy:
    return scratch_finetune(inputs.model_config, inputs.example_graph, inputs.key, inputs.dtype)


REGISTRY: dict[str, Recipe] = {
    "lora": Recipe(_lora),
    "delta": Recipe(_delta),
    "freeze": Recipe(_freeze),
    "full": Recipe(_full),
    "multihead": Recipe(_full, adds_head=True),
    "scratch": Recipe(_scratch),
}
"""One recipe per name of `equitrain_jax.train.config.STRATEGIES` (which says what each trains)."""


def build_strategy(inputs: StrategyInputs, config: FinetuneConfig) -> Strategy:
    """The `Strategy` that ``config.strategy`` names."""
    return REGISTRY[config.strategy].build(inputs, config)


def with_new_head(bundle: ModelBundle, name: str, copy_from: int) -> ModelBundle:
    """``bundle`` with a head ``name`` copied from head ``copy_from``; an existing head of that name
    (the pretrained ``Default``) is renamed `PRETRAINED_HEAD`, so the new head is the default one."""
    config = bundle.config
    if name in config.heads:
        config = rename_head(config, name, PRETRAINED_HEAD)
    return ModelBundle(*add_head(config, bundle.variables, name, copy_from))
