"""Multi-head fine-tuning: add or rename a readout head as a pure transform of (config, variables).

The new head starts as an exact copy of an existing one, so before training it predicts what that
head predicts; how a family lays out its heads (readout weights, per-head constants) is the
family's own `equitrain_jax.models.family.ModelConfig.with_head`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from equitrain_jax.models.family import ModelConfig


def add_head(config: ModelConfig, variables: dict[str, Any], name: str, copy_from: int = 0) -> tuple[ModelConfig, dict]:
    """A model with one more head, ``name``, copied from head ``copy_from``; the existing heads are
    unchanged.  Returns the new config and variables (numpy arrays)."""
    if not isinstance(config, ModelConfig):
        raise ValueError(f"adding a head needs a model configuration; this is a {type(config).__name__}")
    if name in config.heads:
        raise ValueError(f"head {name!r} already exists (heads {list(config.heads)})")
    if not 0 <= copy_from < len(config.heads):
        raise ValueError(f"copy_from={copy_from} is not a head index of {list(config.heads)}")
    return config.with_head(variables, name, copy_from)


def rename_head(config: ModelConfig, old: str, new: str) -> ModelConfig:
    """``config`` with head ``old`` called ``new``."""
    if old not in config.heads:
        raise ValueError(f"no head {old!r} in {list(config.heads)}")
    if new in config.heads:
        raise ValueError(f"head {new!r} already exists (heads {list(config.heads)})")
    return dataclasses.replace(config, heads=tuple(new if h == old else h for h in config.heads))
