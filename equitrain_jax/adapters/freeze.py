"""Freezing by optax labels: frozen leaves get a zero update and no optimiser state."""

from __future__ import annotations

from typing import Any

import jax
import optax

from equitrain_jax.adapters.paths import Patterns, as_patterns, dotted_path, leaf_paths, matches

TRAINABLE = "trainable"
FROZEN = "frozen"


def trainable_labels(tree: Any, trainable_patterns: Patterns) -> Any:
    """A tree like ``tree`` with ``"trainable"`` on leaves matching ``trainable_patterns`` and
    ``"frozen"`` elsewhere (paths as in `equitrain_jax.adapters.paths`).

    Raises:
        ValueError: if no leaf matches.
    """
    labels = jax.tree_util.tree_map_with_path(
        lambda path, _: TRAINABLE if matches(dotted_path(path), trainable_patterns) else FROZEN, tree
    )
    if TRAINABLE not in jax.tree_util.tree_leaves(labels):
        raise ValueError(
            f"trainable patterns {list(as_patterns(trainable_patterns))} match no leaf; "
            f"paths look like {leaf_paths(tree)[:4]}"
        )
    return labels


def masked_optimizer(base_tx: optax.GradientTransformation, labels: Any) -> optax.GradientTransformation:
    """``base_tx`` on the trainable leaves, `optax.set_to_zero` on the frozen ones.

    `optax.multi_transform` keeps ``base_tx``'s state only for trainable leaves (frozen leaves
    hold `optax.MaskedNode`), so freezing costs no optimiser memory.  ``labels`` None (a
    `Strategy` whose trainable tree is trained whole, e.g. LoRA's): ``base_tx`` itself.
    """
    if labels is None:
        return base_tx
    return optax.multi_transform({TRAINABLE: base_tx, FROZEN: optax.set_to_zero()}, labels)
