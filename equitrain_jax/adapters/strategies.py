"""Fine-tuning strategies: which tree is trained, which stays fixed, and how they make variables.

A `Strategy` splits the model variables (``{"params": ..., "constants": ...}``) into a
``trainable`` tree (what the optimiser updates) and a ``frozen`` tree, with a pure
``merge(trainable, frozen) -> variables``.  ``labels`` (optax labels over ``trainable``, or None
when everything in it is trained) freezes leaves inside the trainable tree; ``penalty`` (or
None) is added to the loss.

One function per strategy, named after it (``<name>_finetune``, the names of
`equitrain_jax.train.config.STRATEGIES`); `equitrain_jax.train.strategies` builds them by name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import jraph

from equitrain_jax.adapters import delta, lora
from equitrain_jax.adapters.freeze import trainable_labels
from equitrain_jax.adapters.paths import Patterns
from equitrain_jax.models.io import MODULES, ModelConfig

Variables = Mapping[str, Any]


class Strategy(NamedTuple):
    trainable: Any
    frozen: Any
    merge: Callable[[Any, Any], dict[str, Any]]
    labels: Optional[Any] = None
    penalty: Optional[Callable[[Any], jax.Array]] = None  # trainable -> scalar added to the loss


def _params_are_trainable(trainable: Any, frozen: Variables) -> dict[str, Any]:
    return {**frozen, "params": trainable}


def _lora_variables(adapters: Any, frozen: Variables) -> dict[str, Any]:
    return {**frozen, "params": lora.merge(frozen["params"], adapters)}


def _delta_variables(deltas: Any, frozen: Variables) -> dict[str, Any]:
    return {**frozen, "params": delta.merge(frozen["params"], deltas)}


def _without_params(variables: Variables) -> dict[str, Any]:
    return {name: value for name, value in variables.items() if name != "params"}


def full_finetune(variables: Variables) -> Strategy:
    """Every weight trained, starting from ``variables``."""
    return Strategy(variables["params"], _without_params(variables), _params_are_trainable)


def freeze_finetune(variables: Variables, trainable_patterns: Patterns) -> Strategy:
    """Only weights matching ``trainable_patterns`` trained; the rest frozen by optax labels."""
    params = variables["params"]
    return Strategy(
        params, _without_params(variables), _params_are_trainable, trainable_labels(params, trainable_patterns)
    )


def scratch_finetune(config: ModelConfig, graph: jraph.GraphsTuple, key: jax.Array, dtype: Any = jnp.float64) -> Strategy:
    """A freshly initialised model of ``config``'s architecture (MACE: its own U matrices), every
    weight trained.

    ``graph``: any padded graph (see `equitrain_jax.data.pad_to_bucket`), used for shapes.
    """
    module = MODULES[type(config)](config, param_dtype=dtype)
    return full_finetune(jax.jit(module.init)(key, graph))


def lora_finetune(
    variables: Variables,
    rank: int = 4,
    alpha: Optional[float] = None,
    targets: Patterns = lora.DEFAULT_TARGETS,
    key: Optional[jax.Array] = None,
    elements: Optional[Sequence[int]] = None,
) -> Strategy:
    """LoRA factors trained (see `equitrain_jax.adapters.lora`); the pretrained weights frozen.

    ``elements``: positions along the element axis (in the model config's ``atomic_numbers``) of
    the elements the fine-tuning data contain; element-dependent weights get factors for these
    only (see `equitrain_jax.adapters.lora.init`).  None: every element.
    """
    return Strategy(lora.init(variables["params"], rank, alpha, targets, key, elements), dict(variables),
                    _lora_variables)


def delta_finetune(
    variables: Variables, targets: Patterns = delta.DEFAULT_TARGETS, l2sp_weight: Optional[float] = None
) -> Strategy:
    """L2-SP: residuals δ trained, with the penalty `delta.l2sp_penalty` of weight ``l2sp_weight``
    (None: no penalty); the pretrained weights frozen."""
    penalty = None if l2sp_weight is None else functools.partial(delta.l2sp_penalty, weight=l2sp_weight)
    return Strategy(delta.init(variables["params"], targets), dict(variables), _delta_variables, penalty=penalty)


# the names before the strategies were named after the command line's
l2sp_finetune = delta_finetune
partial_finetune = freeze_finetune
from_scratch = scratch_finetune
