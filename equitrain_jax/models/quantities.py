"""Forces and stress as derivatives of one energy function.

forces = −∂E/∂R (eV/Å); virial = −∂E/∂ε (eV) and stress = −virial/|det cell| (eV/Å³) for a
symmetric strain ε applied to positions and cell, R → R(1+ε), cell → cell(1+ε), as mace-torch
defines them.  The volume is that of the cell as given, also along non-periodic directions of
slabs (mace-torch instead enlarges the cell there); structures with a zero-volume cell get zero
stress, their virial stays meaningful.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import jraph

NodeEnergyFn = Callable[[Any, jraph.GraphsTuple], jnp.ndarray]  # (variables, graph) -> [n_node] eV


class Outputs(NamedTuple):
    energy: jnp.ndarray  # [n_graph] eV
    node_energy: jnp.ndarray  # [n_node] eV
    forces: jnp.ndarray  # [n_node, 3] eV/Å
    stress: jnp.ndarray  # [n_graph, 3, 3] eV/Å³ (zero where the cell has no volume)
    virial: jnp.ndarray  # [n_graph, 3, 3] eV, −∂E/∂ε (defined for molecules too)


def node_graph_index(graph: jraph.GraphsTuple) -> jnp.ndarray:
    """Graph index of every node, [n_node]."""
    n_nodes = graph.nodes["positions"].shape[0]
    return jnp.repeat(jnp.arange(graph.n_node.shape[0]), graph.n_node, total_repeat_length=n_nodes)


def strained(graph: jraph.GraphsTuple, positions: jnp.ndarray, strain: jnp.ndarray) -> jraph.GraphsTuple:
    """The graph with ``positions`` and every cell deformed by the symmetric part of ``strain`` [G, 3, 3]."""
    sym = 0.5 * (strain + jnp.swapaxes(strain, -1, -2))
    node_graph = node_graph_index(graph)
    positions = positions + jnp.einsum("ni,nij->nj", positions, sym[node_graph])
    cell = graph.globals["cell"]
    cell = cell + cell @ sym
    return graph._replace(
        nodes={**graph.nodes, "positions": positions},
        globals={**graph.globals, "cell": cell},
    )


def energy_forces_stress(
    node_energy_fn: NodeEnergyFn, variables: Any, graph: jraph.GraphsTuple
) -> Outputs:
    """Energies, per-atom energies, forces and stress of every graph in one reverse pass.

    ``node_energy_fn`` must give zero energy on padding nodes (as `MACE.node_energies` does), so
    padding graphs contribute nothing.
    """
    positions = graph.nodes["positions"]
    strain = jnp.zeros(graph.globals["cell"].shape, positions.dtype)
    node_graph = node_graph_index(graph)

    def total(positions, strain):
        node_energy = node_energy_fn(variables, strained(graph, positions, strain))
        return jnp.sum(node_energy), node_energy

    (_, node_energy), (d_positions, d_strain) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(
        positions, strain
    )
    energies = jax.ops.segment_sum(node_energy, node_graph, num_segments=graph.n_node.shape[0])
    volume = jnp.abs(jnp.linalg.det(graph.globals["cell"]))
    safe_volume = jnp.where(volume > 0, volume, 1.0)
    stress = jnp.where(volume[:, None, None] > 0, d_strain / safe_volume[:, None, None], 0.0)
    return Outputs(energies, node_energy, -d_positions, stress, -d_strain)
