"""Conversion of ASE structures to padded ``jraph.GraphsTuple`` batches."""

from equitrain_jax.data.graph import (
    MIN_DISTANCE,
    PADDING_CELL_LENGTH,
    add_masks,
    atoms_to_graph,
    batch_graphs,
    bucket_size,
    in_degree,
    pad_graph,
    pad_to_bucket,
)
from equitrain_jax.data.neighbours import neighbour_list

__all__ = [
    "MIN_DISTANCE",
    "PADDING_CELL_LENGTH",
    "add_masks",
    "atoms_to_graph",
    "batch_graphs",
    "bucket_size",
    "in_degree",
    "neighbour_list",
    "pad_graph",
    "pad_to_bucket",
]
