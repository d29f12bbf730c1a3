"""Exact second derivatives of a model's energy with respect to atomic positions.

The Hessian H[i, a, j, b] = ∂²E/∂r_ia ∂r_jb (eV/Å²) is computed forward-over-reverse: each row
block is a batch of Hessian-vector products ``jax.jvp(jax.grad(E), (r,), (v,))`` with unit
vectors v, ``chunk_size`` rows per compiled call, so memory grows with ``chunk_size`` and not
with the number of rows.  The neighbour list is built once at the given structure and kept fixed
while positions vary: the derivatives are exact for the model at that structure (the MACE cutoff
envelope is smooth, so edges at the cutoff contribute nothing to the first and second derivatives).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Union

import ase
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from equitrain_jax.models.mace import MACE
from equitrain_jax.models.sevennet import SevenNet
from equitrain_jax.potential import Potential

EnergyFn = Callable[[jnp.ndarray], jnp.ndarray]  # positions [N, 3] Å -> energy eV (scalar)


def positions_energy(
    module: Union[MACE, SevenNet], variables: Any, graph: jraph.GraphsTuple, positions: jnp.ndarray
) -> jnp.ndarray:
    """Total energy (eV) of the first (real) structure of a padded ``graph`` at ``positions``.

    Args:
        module: the Flax model module, MACE or SevenNet (code only; no arrays).
        variables: the model's variables (``params`` and ``constants``).
        graph: a padded device graph of ONE structure (``Potential.to_device``); its neighbour
            list and periodic shifts are kept, its positions replaced.
        positions: [N, 3] Å, positions of the N real atoms (N ≤ padded node count).

    Returns:
        Scalar energy in eV.
    """
    padded = graph.nodes["positions"]
    positions = padded.at[: positions.shape[0]].set(positions.astype(padded.dtype))
    graph = graph._replace(nodes={**graph.nodes, "positions": positions})
    node_energy = module.apply(variables, graph, method=type(module).node_energies)
    return jnp.sum(node_energy)


def device_graph(potential: Potential, atoms: ase.Atoms) -> jraph.GraphsTuple:
    """The padded device graph of ``atoms`` (neighbour list at the current positions)."""
    return potential.to_device(potential.graph(atoms))


def energy_of_positions(potential: Potential, atoms: ase.Atoms) -> tuple[EnergyFn, jnp.ndarray]:
    """Energy (eV) as a function of the real atoms' positions [N, 3] (Å), neighbour list fixed.

    Returns ``(fn, positions0)``.  ``fn`` is a ``functools.partial`` of `positions_energy` whose
    bound arguments (``fn.args``: module, variables, graph) are arrays and code kept apart, so it
    can be passed to ``jax.jit``, ``jax.grad`` and ``jax.hessian``; the functions in this module
    jit `positions_energy` with the variables and graph as arguments instead of constants.
    ``positions0`` [N, 3] Å are the positions of ``atoms`` in the potential's dtype.
    """
    graph = device_graph(potential, atoms)
    fn = functools.partial(positions_energy, potential.module, potential.variables, graph)
    return fn, graph.nodes["positions"][: len(atoms)]


def _hvp(
    module: Union[MACE, SevenNet],
    variables: Any,
    graph: jraph.GraphsTuple,
    positions: jnp.ndarray,
    tangents: jnp.ndarray,
) -> jnp.ndarray:
    """Hessian-vector products H·v for tangents [k, N, 3] (Å): [k, N, 3] eV/Å², forward over reverse.

    The primal (energy and its reverse pass) is shared by the k tangents: ``jax.vmap`` batches
    only the tangent computation.
    """
    grad = jax.grad(functools.partial(positions_energy, module, variables, graph))
    return jax.vmap(lambda tangent: jax.jvp(grad, (positions,), (tangent,))[1])(tangents)


def _compiled_hvp(potential: Potential) -> Callable:
    """The jit-compiled `_hvp` of this potential's module, built once per potential."""
    return potential.compiled("hessian_vector_products", lambda: jax.jit(functools.partial(_hvp, potential.module)))


def default_chunk_size(n_atoms: int) -> int:
    """Rows per compiled call: 3·⌊256/N⌋, between 3 and 24 (24 rows up to 32 atoms, 12 at 64, 3 above 128).

    One call holds the forward-over-reverse intermediates of ``chunk_size`` tangents, so its memory
    is about ``chunk_size × N`` atom-rows of a force evaluation; this keeps that product ≤ 768 for
    large cells (measured: 64-atom Si, MACE-MP medium architecture at 16 channels, float64:
    +2.1 GB with 24 rows per call, +0.85 GB with 3).  Pass ``chunk_size`` to trade memory for speed.
    """
    return int(min(24, max(3, 3 * (256 // max(int(n_atoms), 1)))))


def hessian_vector_products(
    potential: Potential,
    atoms: ase.Atoms,
    vectors: np.ndarray,
    chunk_size: Optional[int] = None,
) -> np.ndarray:
    """Hessian-vector products Σ_jb ∂²E/∂r_ia ∂r_jb · v_jb for vectors [K, N, 3]: [K, N, 3] eV/Å² (per Å of v).

    Args:
        potential: the model.
        atoms: structure (Å); the neighbour list is built once here.
        vectors: K displacement patterns of the N atoms (any length; the product is linear in v).
        chunk_size: products per compiled call; the last chunk is padded (with zero vectors) so
            every call has the same shape and the function compiles once per structure size.
            Default `default_chunk_size`.
    """
    n = len(atoms)
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 3 or vectors.shape[1:] != (n, 3):
        raise ValueError(f"vectors must have shape [K, {n}, 3] for {n} atoms, got {list(vectors.shape)}")
    chunk = int(chunk_size or default_chunk_size(n))
    if chunk < 1:
        raise ValueError(f"chunk_size must be a positive number of products, got {chunk_size}")
    chunk = min(chunk, max(len(vectors), 1))
    fn, positions = energy_of_positions(potential, atoms)
    _, variables, graph = fn.args
    compiled = _compiled_hvp(potential)
    blocks = []
    for start in range(0, len(vectors), chunk):
        part = vectors[start : start + chunk]
        padded = np.concatenate([part, np.zeros((chunk - len(part), n, 3))]) if len(part) < chunk else part
        out = compiled(variables, graph, positions, jnp.asarray(padded, dtype=positions.dtype))
        blocks.append(np.asarray(out)[: len(part)])
    return np.concatenate(blocks).astype(np.float64) if blocks else np.zeros((0, n, 3))


def hessian_rows(
    potential: Potential,
    atoms: ase.Atoms,
    atom_indices: Sequence[int],
    chunk_size: Optional[int] = None,
) -> np.ndarray:
    """Hessian rows of the given atoms, ∂²E/∂r_ia ∂r_jb for i in ``atom_indices``: [M, 3, N, 3] eV/Å².

    Args:
        potential: the model.
        atoms: structure (Å); the neighbour list is built once here.
        atom_indices: M atom indices whose rows are wanted.
        chunk_size: Hessian rows (of 3M) per compiled call (see `hessian_vector_products`).
    """
    atom_indices = np.asarray(atom_indices, dtype=np.int64).reshape(-1)
    n = len(atoms)
    if atom_indices.size and (atom_indices.min() < 0 or atom_indices.max() >= n):
        raise ValueError(f"atom indices {atom_indices.tolist()} out of range for {n} atoms")
    rows = (3 * atom_indices[:, None] + np.arange(3)[None, :]).reshape(-1)
    unit = np.zeros((len(rows), 3 * n))
    unit[np.arange(len(rows)), rows] = 1.0
    products = hessian_vector_products(potential, atoms, unit.reshape(len(rows), n, 3), chunk_size=chunk_size)
    return products.reshape(len(atom_indices), 3, n, 3)


def hessian(potential: Potential, atoms: ase.Atoms, chunk_size: Optional[int] = None) -> np.ndarray:
    """Full Hessian ∂²E/∂r_ia ∂r_jb of ``atoms``: [N, 3, N, 3] eV/Å² (float64 numpy).

    Not symmetrised: its asymmetry and its violation of the acoustic sum rule measure rounding.
    ``chunk_size`` rows per compiled call bound the memory (see `hessian_rows`).
    """
    return hessian_rows(potential, atoms, np.arange(len(atoms)), chunk_size=chunk_size)
