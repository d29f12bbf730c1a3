"""Forces and stress as derivatives of one energy function.

forces = −∂E/∂R (eV/Å); stress = (∂E/∂ε)/|det cell| (eV/Å³) for a symmetric strain ε applied to
positions and cell, R → R(1+ε), cell → cell(1+ε), as mace-torch defines it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import jraph

EnergyFn = Callable[[Any, jraph.GraphsTuple], jnp.ndarray]  # (variables, graph) -> [n_graph] eV


class Outputs(NamedTuple):
    energy: jnp.ndarray  # [n_graph] eV
    forces: jnp.ndarray  # [n_node, 3] eV/Å
    stress: jnp.ndarray  # [n_graph, 3, 3] eV/Å³ (zero where the cell has no volume)


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


def energy_forces_stress(energy_fn: EnergyFn, variables: Any, graph: jraph.GraphsTuple) -> Outputs:
    """Energies, forces and stress of every graph in one reverse pass."""
    positions = graph.nodes["positions"]
    strain = jnp.zeros(graph.globals["cell"].shape, positions.dtype)

    def total(positions, strain):
        energies = energy_fn(variables, strained(graph, positions, strain))
        if "mask" in graph.globals:
            return jnp.sum(jnp.where(graph.globals["mask"], energies, 0.0)), energies
        return jnp.sum(energies), energies

    (_, energies), (d_positions, d_strain) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(
        positions, strain
    )
    volume = jnp.abs(jnp.linalg.det(graph.globals["cell"]))
    safe_volume = jnp.where(volume > 0, volume, 1.0)
    stress = jnp.where(volume[:, None, None] > 0, d_strain / safe_volume[:, None, None], 0.0)
    return Outputs(energies, -d_positions, stress)
