"""Graphs and parameters as JAX arrays in one floating dtype: the single cast of the package."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from equitrain_jax.data.graph import PaddedShape, bucket_shape, pad_graph

DTYPES = {"float64": np.float64, "float32": np.float32}
"""The floating dtypes a model runs in, by name."""


def enable_float64() -> None:
    """Let JAX create float64 arrays (off by default in JAX)."""
    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def device_arrays(tree: Any, dtype: Any = np.float64) -> Any:
    """The pytree ``tree`` as JAX arrays, floating leaves cast to ``dtype`` and the others kept
    (integers, booleans); float64 switches on JAX's x64 mode first."""
    if np.dtype(dtype) == np.float64:
        enable_float64()

    def convert(x):
        x = np.asarray(x)
        return jnp.asarray(x, dtype) if np.issubdtype(x.dtype, np.floating) else jnp.asarray(x)

    return jax.tree_util.tree_map(convert, tree)


def padded_device_graph(
    graph: jraph.GraphsTuple, dtype: Any = np.float64, shape: Optional[PaddedShape] = None
) -> jraph.GraphsTuple:
    """A numpy graph (one structure or a batch) padded to bucket sizes (`bucket_shape`) as JAX
    arrays in ``dtype``: what a model is evaluated on.  ``shape`` pads to at least these sizes
    (each the larger of it and the graph's own bucket), so that graphs of different sizes share
    one compiled program."""
    own = bucket_shape([graph])
    if shape is not None:
        own = PaddedShape(*(max(a, b) for a, b in zip(own, shape)))
    return device_arrays(pad_graph(graph, *own), dtype)
