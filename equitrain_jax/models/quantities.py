"""One energy function; forces, stress and Hessian-vector products are transforms of it.

`energy` is the total energy (eV) of a padded graph as a pure function of
``(variables, graph, positions, strain)``, the model bound as its first argument (a
`NodeEnergyFn`, see `node_energy_function`).  Everything else differentiates it, as jax-md's
``quantity`` module does:

- forces = −∂E/∂R (eV/Å); virial = −∂E/∂ε (eV) and stress = −virial/|det cell| (eV/Å³) for a
  symmetric strain ε applied to positions and cell, R → R(1+ε), cell → cell(1+ε), as mace-torch
  defines them (`energy_forces_stress`, one reverse pass);
- Hessian-vector products H·v = ∂/∂t ∇_R E(R + t v) (eV/Å² per Å of v), forward over reverse
  (`hessian_vector_product`);
- third derivatives Σ_jk ∂³E/∂R_i∂R_j∂R_k v_j w_k (eV/Å³ per Å² of v, w), forward over the
  Hessian-vector product (`third_order_product`).

All of them are pure functions of arrays, so they can be jit-compiled, vmapped over tangents and
differentiated with respect to ``variables`` (a loss on H·v in a train step).  A graph may hold
several structures (a batch, padded as `equitrain_jax.data.pad_graph` lays it out): E is the sum
over its structures, so its Hessian is block-diagonal by structure and one tangent array
``[n_node, 3]`` carries one displacement pattern per structure.  The neighbour list is that of the
graph: positions move, edges stay (exact derivatives of the model at that structure, since the
cutoff envelopes are smooth).

The volume is that of the cell as given, also along non-periodic directions of slabs (mace-torch
instead enlarges the cell there); structures with a zero-volume cell get zero stress, their virial
stays meaningful.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
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


def node_energy_function(module: nn.Module) -> NodeEnergyFn:
    """The per-atom energies of a model module (MACE, SevenNet) as ``(variables, graph) → [n_node]`` eV."""
    return functools.partial(module.apply, method=type(module).node_energies)


def node_graph_index(graph: jraph.GraphsTuple) -> jnp.ndarray:
    """Graph index of every node, [n_node]."""
    n_nodes = graph.nodes["positions"].shape[0]
    return jnp.repeat(jnp.arange(graph.n_node.shape[0]), graph.n_node, total_repeat_length=n_nodes)


def zero_strain(graph: jraph.GraphsTuple) -> jnp.ndarray:
    """No deformation of any structure of ``graph``: zeros [n_graph, 3, 3] in the positions' dtype."""
    return jnp.zeros(graph.globals["cell"].shape, graph.nodes["positions"].dtype)


def strained(graph: jraph.GraphsTuple, positions: jnp.ndarray, strain: jnp.ndarray) -> jraph.GraphsTuple:
    """The graph with ``positions`` [n_node, 3] (Å) and every structure deformed by the symmetric
    part of its ``strain`` [n_graph, 3, 3] (dimensionless)."""
    sym = 0.5 * (strain + jnp.swapaxes(strain, -1, -2))
    node_graph = node_graph_index(graph)
    positions = positions + jnp.einsum("ni,nij->nj", positions, sym[node_graph])
    cell = graph.globals["cell"]
    cell = cell + cell @ sym
    return graph._replace(
        nodes={**graph.nodes, "positions": positions},
        globals={**graph.globals, "cell": cell},
    )


def node_energies(
    node_energy_fn: NodeEnergyFn, variables: Any, graph: jraph.GraphsTuple, positions: jnp.ndarray, strain: jnp.ndarray
) -> jnp.ndarray:
    """Energy of each atom (eV), [n_node], of ``graph`` at ``positions`` [n_node, 3] (Å) under
    ``strain`` [n_graph, 3, 3]; zero on padding nodes."""
    return node_energy_fn(variables, strained(graph, positions, strain))


def energy(
    node_energy_fn: NodeEnergyFn, variables: Any, graph: jraph.GraphsTuple, positions: jnp.ndarray, strain: jnp.ndarray
) -> jnp.ndarray:
    """THE energy: total energy (eV, a scalar) of all structures of ``graph`` at ``positions``
    [n_node, 3] (Å, padding nodes included) under ``strain`` [n_graph, 3, 3]."""
    return jnp.sum(node_energies(node_energy_fn, variables, graph, positions, strain))


def energy_forces_stress(node_energy_fn: NodeEnergyFn, variables: Any, graph: jraph.GraphsTuple) -> Outputs:
    """Energies, per-atom energies, forces and stress of every graph: one reverse pass of `energy`.

    ``node_energy_fn`` must give zero energy on padding nodes (as the models' ``node_energies``
    do), so padding graphs contribute nothing.
    """
    positions = graph.nodes["positions"]

    def total(positions, strain):
        per_atom = node_energies(node_energy_fn, variables, graph, positions, strain)
        return jnp.sum(per_atom), per_atom

    (_, node_energy), (d_positions, d_strain) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(
        positions, zero_strain(graph)
    )
    energies = jax.ops.segment_sum(node_energy, node_graph_index(graph), num_segments=graph.n_node.shape[0])
    volume = jnp.abs(jnp.linalg.det(graph.globals["cell"]))
    safe_volume = jnp.where(volume > 0, volume, 1.0)
    stress = jnp.where(volume[:, None, None] > 0, d_strain / safe_volume[:, None, None], 0.0)
    return Outputs(energies, node_energy, -d_positions, stress, -d_strain)


def energy_gradient(
    node_energy_fn: NodeEnergyFn, variables: Any, graph: jraph.GraphsTuple, positions: jnp.ndarray
) -> jnp.ndarray:
    """∂E/∂R (eV/Å) at ``positions`` [n_node, 3], no strain: minus the forces, [n_node, 3]."""
    total = functools.partial(energy, node_energy_fn, variables, graph)
    return jax.grad(total)(positions, zero_strain(graph))


def hessian_vector_product(
    node_energy_fn: NodeEnergyFn,
    variables: Any,
    graph: jraph.GraphsTuple,
    positions: jnp.ndarray,
    tangent: jnp.ndarray,
) -> jnp.ndarray:
    """H·v = Σ_jb ∂²E/∂R_ia ∂R_jb v_jb, [n_node, 3] eV/Å² (per Å of v): `jax.jvp` of `energy_gradient`.

    Args:
        node_energy_fn: the model (`node_energy_function`), bound with ``functools.partial``.
        variables: the model's variables; H·v is differentiable with respect to them.
        graph: padded graph of one or several structures; its neighbour list is kept.
        positions: [n_node, 3] Å, where the Hessian is taken (usually ``graph.nodes["positions"]``).
        tangent: [n_node, 3], the displacement pattern v (zero on padding nodes).  With several
            structures in ``graph``, each one's block of the result is its own H·v.

    ``jax.vmap`` over tangents [k, n_node, 3] computes the primal (energy and its reverse pass)
    once and only the tangent part k times.
    """
    gradient = functools.partial(energy_gradient, node_energy_fn, variables, graph)
    return jax.jvp(gradient, (positions,), (tangent,))[1]


def third_order_product(
    node_energy_fn: NodeEnergyFn,
    variables: Any,
    graph: jraph.GraphsTuple,
    positions: jnp.ndarray,
    tangent: jnp.ndarray,
    direction: jnp.ndarray,
) -> jnp.ndarray:
    """Σ_jb,kc ∂³E/∂R_ia ∂R_jb ∂R_kc v_jb w_kc, [n_node, 3] eV/Å³ (per Å² of v and w): `jax.jvp` of
    `hessian_vector_product` (tangent v) along ``direction`` w, both [n_node, 3].

    The derivative of H·v as the atoms move along w; with unit vectors v and w it is one column of
    the third-order force constants Φ3[i, j, k].  Arguments as in `hessian_vector_product`.
    """
    product = functools.partial(hessian_vector_product, node_energy_fn, variables, graph)
    return jax.jvp(lambda r: product(r, tangent), (positions,), (direction,))[1]
