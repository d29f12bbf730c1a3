"""ASE ``Atoms`` to (padded) ``jraph.GraphsTuple`` conversion.

Field layout of every graph built here (numpy arrays; N nodes, E edges, G graphs)::

    nodes   = {"positions": float64 [N, 3] (Å; see `near_origin`), "species": int32 [N]}
    edges   = {"unit_shifts": float64 [E, 3] (integer-valued)}
    globals = {"cell": float64 [G, 3, 3] (Å, vectors as rows), "head": int32 [G]}
    senders, receivers: int32 [E];  n_node, n_edge: int32 [G]

The edge vector of edge ``e`` in graph ``g`` is
``positions[receivers[e]] - positions[senders[e]] + unit_shifts[e] @ cell[g]``.

Masks: :func:`atoms_to_graph` and :func:`batch_graphs` return graphs without
masks. :func:`pad_graph` (and :func:`pad_to_bucket`) add boolean masks
``nodes["mask"]`` [N], ``edges["mask"]`` [E] and ``globals["mask"]`` [G], True
for real entries, and lay the edges out neighbour-major (``nodes["neighbour_mask"]``
[N, K], E = N·K), the layout the model requires.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import ase
import jraph
import numpy as np
from ase.data import chemical_symbols
from ase.geometry import complete_cell

from equitrain_jax.data.neighbours import neighbour_list, periodic_heights

MIN_DISTANCE = 0.1
"""Smallest allowed interatomic distance in Å (periodic images included)."""

PADDING_CELL_LENGTH = 100.0
"""Cell vector length in Å of padding graphs (a non-degenerate cell for their zero nodes)."""

_DIRECTIONS = ("a", "b", "c")


def _check_cutoff(cutoff: float) -> None:
    """Raise if ``cutoff`` (Å) is not a finite positive number."""
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be a finite positive number of Å, got {cutoff!r}")


def _species(numbers: np.ndarray, atomic_numbers: Sequence[int]) -> np.ndarray:
    """Index of each atomic number [N] in ``atomic_numbers``, as int32 [N]."""
    model_numbers = [int(z) for z in atomic_numbers]
    if len(set(model_numbers)) != len(model_numbers):
        raise ValueError(f"atomic_numbers contains duplicates: {model_numbers}")
    lookup = {z: index for index, z in enumerate(model_numbers)}
    unknown = sorted(set(numbers.tolist()) - lookup.keys())
    if unknown:
        model_symbols = [chemical_symbols[z] for z in model_numbers]
        raise ValueError(
            f"structure contains element(s) {[chemical_symbols[z] for z in unknown]} "
            f"not supported by the model, whose elements are {model_symbols}"
        )
    return np.array([lookup[z] for z in numbers.tolist()], dtype=np.int32)


def element_indices(numbers: Sequence[int], atomic_numbers: Sequence[int]) -> tuple[int, ...]:
    """Positions in ``atomic_numbers`` (a model's element axis Z) of the elements among the atomic
    numbers ``numbers``, sorted and without repeats; raises `ValueError` for an element the model
    does not know."""
    return tuple(sorted(set(_species(np.asarray(numbers, dtype=int).ravel(), atomic_numbers).tolist())))


def _check_positions(positions: np.ndarray) -> None:
    """Raise if any position [N, 3] (Å) is NaN or infinite."""
    bad = np.flatnonzero(~np.all(np.isfinite(positions), axis=1))
    if bad.size:
        raise ValueError(f"NaN or inf positions for atom indices {bad.tolist()}")


def _check_cell(cell: np.ndarray, pbc: np.ndarray) -> None:
    """Raise if the cell [3, 3] (Å) is non-finite, or zero/degenerate along a periodic direction.

    A periodic direction is degenerate when its cell vector lies closer than
    ``MIN_DISTANCE`` to the span of the other periodic vectors (for a single
    periodic direction: when the vector is shorter than ``MIN_DISTANCE``).
    """
    if not np.all(np.isfinite(cell)):
        raise ValueError(f"cell contains NaN or inf: {cell.tolist()}")
    axes = np.flatnonzero(pbc)
    heights = periodic_heights(cell, pbc)
    bad = heights < MIN_DISTANCE
    if np.any(bad):
        names = [f"{axis} ({_DIRECTIONS[axis]})" for axis in axes[bad]]
        raise ValueError(
            f"pbc is True along direction(s) {', '.join(names)} but the cell is zero or "
            f"degenerate there: height(s) {', '.join(f'{h:.3g}' for h in heights[bad])} Å below "
            f"{MIN_DISTANCE} Å; cell={cell.tolist()}"
        )


def _check_distances(
    positions: np.ndarray,
    cell: np.ndarray,
    senders: np.ndarray,
    receivers: np.ndarray,
    unit_shifts: np.ndarray,
) -> np.ndarray:
    """Edge lengths [E] in Å; raise if any is below ``MIN_DISTANCE``."""
    vectors = positions[receivers] - positions[senders] + unit_shifts @ cell
    lengths = np.linalg.norm(vectors, axis=1)
    too_close = np.flatnonzero(lengths < MIN_DISTANCE)
    if too_close.size:
        e = too_close[np.argmin(lengths[too_close])]
        raise ValueError(
            f"{too_close.size // 2} atom pair(s) closer than {MIN_DISTANCE} Å; "
            f"closest: atoms {senders[e]} and {receivers[e]} (periodic image shift "
            f"{unit_shifts[e].astype(int).tolist()}) at {lengths[e]:.4g} Å"
        )
    return lengths


def atoms_to_graph(
    atoms: ase.Atoms,
    cutoff: float,
    atomic_numbers: Sequence[int],
    head: int = 0,
) -> jraph.GraphsTuple:
    """Build the unpadded single-structure graph of ``atoms`` (see module docstring).

    Args:
        atoms: structure; positions and cell in Å.
        cutoff: neighbour cutoff radius in Å; edges have length < cutoff.
        atomic_numbers: the model's elements; ``species`` indexes into it.
        head: index of the model head used for this structure.

    Raises:
        ValueError: for a non-positive cutoff, an empty structure, elements not in
            ``atomic_numbers``, NaN/inf positions, a zero or degenerate periodic cell
            vector, or two atoms (or periodic images) closer than 0.1 Å.
    """
    _check_cutoff(cutoff)
    if len(atoms) == 0:
        raise ValueError("empty structure: Atoms has 0 atoms")
    species = _species(atoms.numbers, atomic_numbers)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    _check_positions(positions)
    _check_cell(cell, pbc)
    positions = near_origin(positions, cell, pbc)

    senders, receivers, unit_shifts = neighbour_list(
        positions, cell, pbc, max(cutoff, MIN_DISTANCE)
    )
    unit_shifts = unit_shifts.astype(np.float64)
    keep = _check_distances(positions, cell, senders, receivers, unit_shifts) < cutoff
    return jraph.GraphsTuple(
        nodes={"positions": positions, "species": species},
        edges={"unit_shifts": unit_shifts[keep]},
        senders=senders[keep],
        receivers=receivers[keep],
        globals={
            "cell": cell[None],
            "head": np.array([head], dtype=np.int32),
        },
        n_node=np.array([len(atoms)], dtype=np.int32),
        n_edge=np.array([int(keep.sum())], dtype=np.int32),
    )


def near_origin(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, far: float = 10.0) -> np.ndarray:
    """The same structure with coordinates a float32 holds precisely: each atom moved by whole
    cell vectors into the cell along the periodic directions, then the whole structure by whole
    Å towards the origin if its centre is more than ``far`` Å away.

    Energies and all their derivatives are the same (edge vectors are unchanged; in float64 only an
    atom that moved can differ, by rounding).  In float32, coordinates of hundreds of Å (unwrapped
    molecular dynamics, a molecule placed far out) would cost the edge vectors their precision
    (a cell 5000 Å out: forces off by 2e-3 relative; tests/test_calculator.py).
    Atoms inside the cell of a structure near the origin keep their coordinates bit for bit."""
    if np.any(pbc):
        fractional = np.linalg.solve(complete_cell(cell).T, positions.T).T
        images = np.where(pbc, np.floor(fractional), 0.0)
        if np.any(images):
            positions = positions - images @ cell
    centre = np.round(positions.mean(axis=0))
    if np.abs(centre).max() > far:
        positions = positions - centre
    return positions


def _concatenate(fields: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate dicts of arrays key by key along axis 0."""
    return {key: np.concatenate([f[key] for f in fields]) for key in fields[0]}


def batch_graphs(graphs: Sequence[jraph.GraphsTuple]) -> jraph.GraphsTuple:
    """Concatenate graphs into one batch (numpy ``jraph.batch``).

    Node, edge and global fields are concatenated along axis 0; senders and
    receivers are offset by the number of nodes of the preceding graphs.
    """
    if len(graphs) == 0:
        raise ValueError("batch_graphs needs at least one graph, got an empty sequence")
    offsets = np.cumsum([0] + [int(np.sum(g.n_node)) for g in graphs[:-1]])
    senders = [g.senders + offset for g, offset in zip(graphs, offsets)]
    receivers = [g.receivers + offset for g, offset in zip(graphs, offsets)]
    return jraph.GraphsTuple(
        nodes=_concatenate([g.nodes for g in graphs]),
        edges=_concatenate([g.edges for g in graphs]),
        senders=np.concatenate(senders).astype(np.int32),
        receivers=np.concatenate(receivers).astype(np.int32),
        globals=_concatenate([g.globals for g in graphs]),
        n_node=np.concatenate([g.n_node for g in graphs]).astype(np.int32),
        n_edge=np.concatenate([g.n_edge for g in graphs]).astype(np.int32),
    )


def _with_mask(fields: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Copy of ``fields`` with an all-True ``"mask"`` [size] unless one exists."""
    return {"mask": np.ones(size, dtype=bool), **fields}


def add_masks(graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
    """Add all-True node/edge/graph masks to a graph lacking them (existing masks kept)."""
    return graph._replace(
        nodes=_with_mask(graph.nodes, int(np.sum(graph.n_node))),
        edges=_with_mask(graph.edges, len(graph.senders)),
        globals=_with_mask(graph.globals, len(graph.n_node)),
    )


def _pad_fields(
    fields: Mapping[str, np.ndarray], count: int, overrides: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Append ``count`` rows to each field: zeros (False for masks) unless overridden."""
    padded = {}
    for key, value in fields.items():
        filler = np.zeros((count, *value.shape[1:]), dtype=value.dtype)
        if key in overrides:
            filler[...] = overrides[key]
        padded[key] = np.concatenate([value, filler])
    return padded


def in_degree(graph: jraph.GraphsTuple) -> int:
    """Largest number of edges into one node (0 for a graph without edges)."""
    n = int(np.sum(graph.n_node))
    return int(np.bincount(graph.receivers, minlength=n).max()) if len(graph.receivers) else 0


def pad_graph(
    graph: jraph.GraphsTuple, n_node: int, max_neighbours: int, n_graph: int
) -> jraph.GraphsTuple:
    """Pad a (batched) graph to ``n_node`` nodes and ``n_graph`` graphs, with the edges laid out
    neighbour-major: edge ``n * max_neighbours + k`` is the k-th edge into node ``n``.

    The model sums messages with a reshape instead of a scatter, which is several times faster.
    Empty slots are masked self-edges with zero shift (zero length: the model masks them before
    taking norms).  Padding graphs are appended (jraph convention): the first holds all padding
    nodes, any further ones are empty; they have species 0, cell ``100 Å * identity`` and head 0.
    Masks (``nodes/edges/globals["mask"]``) are True for real entries; ``nodes["neighbour_mask"]``
    [n_node, max_neighbours] is the edge mask by receiver and marks the layout.

    Raises:
        ValueError: unless ``n_node`` is at least and ``n_graph`` above the real counts, and
            ``max_neighbours`` is at least the largest in-degree.
    """
    graph = add_masks(graph)
    real_node, real_graph = int(np.sum(graph.n_node)), len(graph.n_node)
    degree = in_degree(graph)
    if n_node < real_node or max_neighbours < max(degree, 1) or n_graph < real_graph + 1:
        raise ValueError(
            f"cannot pad a graph with {real_node} nodes, {real_graph} graphs and in-degree "
            f"{degree} to n_node={n_node}, max_neighbours={max_neighbours}, n_graph={n_graph}: "
            "need n_node >= nodes, max_neighbours >= in-degree and n_graph > graphs"
        )
    pad_node, pad_graph_count = n_node - real_node, n_graph - real_graph
    order = np.argsort(graph.receivers, kind="stable")
    receivers = graph.receivers[order]
    first_edge = np.searchsorted(receivers, np.arange(real_node))
    slots = receivers.astype(np.int64) * max_neighbours + (np.arange(len(receivers)) - first_edge[receivers])

    n_slots = n_node * max_neighbours
    slot_node = np.repeat(np.arange(n_node, dtype=np.int32), max_neighbours)
    senders = slot_node.copy()
    senders[slots] = graph.senders[order]
    edges = {}
    for key, value in graph.edges.items():
        laid_out = np.zeros((n_slots, *value.shape[1:]), dtype=value.dtype)
        laid_out[slots] = value[order]
        edges[key] = laid_out
    extra_graphs = np.zeros(pad_graph_count - 1, dtype=np.int32)
    n_node_per_graph = np.concatenate([graph.n_node, [pad_node], extra_graphs]).astype(np.int32)
    nodes = _pad_fields(graph.nodes, pad_node, {})
    nodes["neighbour_mask"] = edges["mask"].reshape(n_node, max_neighbours)
    return jraph.GraphsTuple(
        nodes=nodes,
        edges=edges,
        senders=senders,
        receivers=slot_node,
        globals=_pad_fields(
            graph.globals,
            pad_graph_count,
            {"cell": PADDING_CELL_LENGTH * np.eye(3)},
        ),
        n_node=n_node_per_graph,
        n_edge=(n_node_per_graph * max_neighbours).astype(np.int32),
    )


def bucket_size(n: int, minimum: int = 8) -> int:
    """Smallest bucket >= ``n``: a multiple of ``2**(floor(log2(n)) - 2)``, at least ``minimum``.

    This gives 4 sizes per octave, so the waste ``(size - n) / n`` is below 25%
    for ``n >= minimum``.
    """
    if n < 0:
        raise ValueError(f"bucket_size needs a non-negative count, got {n}")
    n = max(int(n), minimum)
    step = 2 ** max(n.bit_length() - 3, 0)
    return math.ceil(n / step) * step


class PaddedShape(NamedTuple):
    """Sizes of a padded graph (see `pad_graph`)."""

    n_node: int
    max_neighbours: int
    n_graph: int


def bucket_shape(graphs: Sequence[jraph.GraphsTuple]) -> PaddedShape:
    """Bucketed sizes (see :func:`bucket_size`) that fit every one of ``graphs``, with room for padding.

    Nodes are padded to ``bucket_size(nodes)``, the neighbour slots per node to
    ``bucket_size(in-degree, minimum=4)``, graphs to ``bucket_size(graphs + 1, minimum=2)``, each
    for the largest of ``graphs`` (one graph, or the shards of a data-parallel batch).
    """
    return PaddedShape(
        n_node=bucket_size(max(int(np.sum(g.n_node)) for g in graphs)),
        max_neighbours=bucket_size(max(in_degree(g) for g in graphs), minimum=4),
        n_graph=bucket_size(max(len(g.n_node) for g in graphs) + 1, minimum=2),
    )


def pad_to_bucket(graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
    """Pad ``graph`` to its bucketed sizes, `bucket_shape` ``([graph])``."""
    return pad_graph(graph, *bucket_shape([graph]))
