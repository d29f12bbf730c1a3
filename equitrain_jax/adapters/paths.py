"""Dotted paths and shell-style patterns over parameter pytrees.

A leaf's path is its keys joined by dots: ``interactions_0.linear_up.0e``,
``interactions_1.radial_mlp.layer_2``, ``interactions_0.skip_tp.0e``,
``products_1.symmetric_contraction_0e.weights_2``, ``products_0.linear.1o``,
``readouts_1.linear_1.0e``, ``node_embedding``; leaves of adapter trees add their factor name
(``interactions_0.linear_up.0e.a``).  A pattern (`fnmatch.fnmatchcase`; ``*`` also crosses dots)
matches a leaf when it matches that path or its *indexed* form, in which every ``_<n>`` key suffix
is its own segment (``interactions.0.linear_up.0e``, ``interactions.1.radial_mlp.layer.2``).  So
``"interactions.*.linear*"`` selects ``linear_up`` and ``linear`` of every interaction,
``"interactions.1.*"`` everything of the second one, ``"products.*"`` every product block.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union

import jax

Patterns = Union[str, Iterable[str]]

_INDEX_SUFFIX = re.compile(r"_(\d+)(?=\.|$)")


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def dotted_path(key_path: tuple) -> str:
    """``interactions_0.linear_up.0e`` from a `jax.tree_util` key path."""
    return ".".join(_key_name(k) for k in key_path)


def indexed_path(path: str) -> str:
    """``interactions.0.linear_up.0e`` from ``interactions_0.linear_up.0e``."""
    return _INDEX_SUFFIX.sub(r".\1", path)


def as_patterns(patterns: Patterns) -> tuple[str, ...]:
    return (patterns,) if isinstance(patterns, str) else tuple(patterns)


def matches(path: str, patterns: Patterns) -> bool:
    """Whether ``path`` (or its indexed form) matches any of ``patterns``."""
    forms = (path, indexed_path(path))
    return any(fnmatch.fnmatchcase(form, p) for p in as_patterns(patterns) for form in forms)


def leaf_paths(tree: Any) -> list[str]:
    """Dotted paths of every leaf, in `jax.tree_util` order."""
    return [dotted_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def select(params: Mapping[str, Any], patterns: Patterns) -> dict[str, Any]:
    """The nested dict of the leaves of ``params`` matching ``patterns`` (same nesting, others dropped).

    Raises:
        ValueError: if no leaf matches, naming the patterns and some of the paths that exist.
    """

    def prune(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        kept = {}
        for key, value in tree.items():
            path = f"{prefix}{key}"
            if isinstance(value, Mapping):
                sub = prune(value, path + ".")
                if sub:
                    kept[key] = sub
            elif matches(path, patterns):
                kept[key] = value
        return kept

    selected = prune(params, "")
    if not selected:
        known = leaf_paths(params)
        raise ValueError(
            f"patterns {list(as_patterns(patterns))} match no parameter; paths look like "
            f"{known[:4]} (indexed form: {[indexed_path(p) for p in known[:2]]})"
        )
    return selected


def add_updates(
    params: Mapping[str, Any], adapters: Mapping[str, Any], delta: Callable[[Any, Any], Any]
) -> dict[str, Any]:
    """``params`` with ``delta(adapter, weight)`` added to every weight that ``adapters`` mirrors.

    ``adapters`` is a nested dict with a subset of the keys of ``params``; its leaves (arrays or
    adapter records) sit where the weights sit.
    """
    merged = {}
    for key, value in params.items():
        if key not in adapters:
            merged[key] = value
        elif isinstance(value, Mapping):
            merged[key] = add_updates(value, adapters[key], delta)
        else:
            merged[key] = value + delta(adapters[key], value)
    unknown = set(adapters) - set(params)
    if unknown:
        raise ValueError(f"adapters for parameters {sorted(unknown)} that the model does not have")
    return merged
