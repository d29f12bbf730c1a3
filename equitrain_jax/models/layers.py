"""What every model family shares: thin Flax shells over `equivariant`, the edge geometry of a padded
graph, and the `EnergyModel` base whose ``__call__`` sums the per-atom energies of each graph.

A family module (`equitrain_jax.models.mace.MACE`, `equitrain_jax.models.sevennet.SevenNet`)
subclasses `EnergyModel` and implements ``node_energies(graph)`` from `edge_geometry` and
`masked_node_energies`.
"""

from __future__ import annotations

from typing import NamedTuple

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from equitrain_jax.models import equivariant as eq
from equitrain_jax.models.quantities import node_graph_index


def normal(stddev: float = 1.0):
    """Flax initializer: normal with standard deviation ``stddev`` (e3nn normalises in the operation)."""
    return nn.initializers.normal(stddev=stddev)


class Linear(nn.Module):
    """Per-irrep channel mixing; ``shapes`` maps irrep → (C_in, C_out)."""

    shapes: tuple[tuple[str, tuple[int, int]], ...]
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: eq.Features) -> eq.Features:
        weights = {ir: self.param(ir, normal(), shape, self.param_dtype) for ir, shape in self.shapes}
        return eq.channel_linear(x, weights)


class RadialMLP(nn.Module):
    """Bias-free MLP on the radial basis; sizes = (input, hidden…, output)."""

    sizes: tuple[int, ...]
    activation_constant: float
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        layers = [
            self.param(f"layer_{i}", normal(), (h_in, h_out), self.param_dtype)
            for i, (h_in, h_out) in enumerate(zip(self.sizes, self.sizes[1:]))
        ]
        return eq.radial_mlp(x, layers, self.activation_constant)


def edge_vectors(graph: jraph.GraphsTuple, node_graph: jnp.ndarray) -> jnp.ndarray:
    """r_receiver − r_sender + S·cell for every edge (Å), [n_edge, 3]; node_graph: [n_node]."""
    positions = graph.nodes["positions"]
    cell = graph.globals["cell"][node_graph[graph.senders]]
    shifts = jnp.einsum("ei,eij->ej", graph.edges["unit_shifts"].astype(positions.dtype), cell)
    return positions[graph.receivers] - positions[graph.senders] + shifts


class EdgeGeometry(NamedTuple):
    """Per-edge geometry of a padded graph."""

    node_graph: jnp.ndarray  # [n_node] graph index of each node
    mask: jnp.ndarray  # [n_edge] bool, real edges
    vectors: jnp.ndarray  # [n_edge, 3] Å (2·r_max along each axis on padding edges, so norms stay smooth)
    lengths: jnp.ndarray  # [n_edge] Å
    harmonics: dict[int, jnp.ndarray]  # l → [n_edge, 2l+1], e3nn component-normalised Y_l of the vectors


def edge_geometry(graph: jraph.GraphsTuple, lmax: int, r_max: float, towards_sender: bool = False) -> EdgeGeometry:
    """Edge vectors, lengths and spherical harmonics l = 0…``lmax`` of a padded graph.

    Vectors point from sender to receiver (mace-torch), or with ``towards_sender`` from the
    receiving atom to its neighbour (sevenn).  Raises ValueError unless the graph has the
    neighbour-major layout of `equitrain_jax.data.pad_graph`.
    """
    if "neighbour_mask" not in graph.nodes:
        raise ValueError(
            "the graph is not padded into the neighbour-major layout the model needs; "
            "build it with equitrain_jax.data.pad_to_bucket (or pad_graph)"
        )
    node_graph = node_graph_index(graph)
    mask = graph.edges["mask"]
    vectors = edge_vectors(graph, node_graph)
    vectors = jnp.where(mask[:, None], -vectors if towards_sender else vectors, 2.0 * r_max)
    irreps = "+".join(str(e3nn.Irrep(l, (-1) ** l)) for l in range(lmax + 1))
    sh = e3nn.spherical_harmonics(irreps, vectors, normalize=True, normalization="component").array
    harmonics = {l: sh[:, l * l : (l + 1) ** 2] for l in range(lmax + 1)}
    return EdgeGeometry(node_graph, mask, vectors, jnp.linalg.norm(vectors, axis=-1), harmonics)


def masked_node_energies(graph: jraph.GraphsTuple, energies: jnp.ndarray) -> jnp.ndarray:
    """Per-atom energies [n_node] with padding nodes set to zero (where the graph has a node mask)."""
    if "mask" in graph.nodes:
        return jnp.where(graph.nodes["mask"], energies, 0.0)
    return energies


class EnergyModel(nn.Module):
    """Base of the model families: ``__call__`` gives the total energy of each graph (eV),
    [n_graph], as the sum of ``node_energies(graph)`` (eV, [n_node], zero on padding nodes)."""

    def __call__(self, graph: jraph.GraphsTuple) -> jnp.ndarray:
        """Total energy of each graph (eV), [n_graph]."""
        return jax.ops.segment_sum(
            self.node_energies(graph), node_graph_index(graph), num_segments=graph.n_node.shape[0]
        )

    def node_energies(self, graph: jraph.GraphsTuple) -> jnp.ndarray:
        raise NotImplementedError
