"""Conversion of ASE structures to padded ``jraph.GraphsTuple`` batches on the device: one path,
``atoms_to_graph`` → ``batch_graphs`` → ``pad_to_bucket`` (`bucket_shape`) → ``device_arrays``."""

from equitrain_jax.data.device import DTYPES, device_arrays, enable_float64, padded_device_graph
from equitrain_jax.data.graph import (
    MIN_DISTANCE,
    PADDING_CELL_LENGTH,
    PaddedShape,
    add_masks,
    atoms_to_graph,
    batch_graphs,
    bucket_shape,
    bucket_size,
    element_indices,
    in_degree,
    pad_graph,
    pad_to_bucket,
)
from equitrain_jax.data.neighbours import neighbour_list

__all__ = [
    "DTYPES",
    "MIN_DISTANCE",
    "PADDING_CELL_LENGTH",
    "PaddedShape",
    "add_masks",
    "atoms_to_graph",
    "batch_graphs",
    "bucket_shape",
    "bucket_size",
    "device_arrays",
    "element_indices",
    "enable_float64",
    "in_degree",
    "neighbour_list",
    "pad_graph",
    "pad_to_bucket",
    "padded_device_graph",
]
