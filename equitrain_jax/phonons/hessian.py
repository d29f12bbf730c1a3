"""Exact second derivatives of a model's energy with respect to atomic positions, for ASE structures.

The Hessian H[i, a, j, b] = ∂²E/∂r_ia ∂r_jb (eV/Å²) is built from Hessian-vector products of the
model's one energy function (`equitrain_jax.models.quantities.hessian_vector_product`, a `jax.jvp`
of its gradient): each row block is a batch of products with unit vectors, ``chunk_size`` rows per
compiled call, so memory grows with ``chunk_size`` and not with the number of rows.  The
neighbour list is built once at the given structure and kept fixed while positions vary: the
derivatives are exact for the model at that structure (the cutoff envelopes are smooth, so edges
at the cutoff contribute nothing to the first and second derivatives).
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import ase
import jax
import jax.numpy as jnp
import numpy as np

from equitrain_jax.models.quantities import hessian_vector_product
from equitrain_jax.potential import Potential


def compiled_hessian_vector_products(potential: Potential) -> Callable:
    """``(variables, graph, positions [n_node, 3], tangents [k, n_node, 3]) → [k, n_node, 3]`` eV/Å²:
    `equitrain_jax.models.quantities.hessian_vector_product` of this potential's model, vmapped over
    the k tangents (one shared primal) and jit-compiled once per potential."""
    return potential.compiled(
        "hessian_vector_products",
        lambda: jax.jit(
            jax.vmap(
                functools.partial(hessian_vector_product, potential.node_energy_fn),
                in_axes=(None, None, None, 0),
            )
        ),
    )


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
    graph = potential.device_graph(potential.graph(atoms))  # neighbour list at these positions
    positions = graph.nodes["positions"]
    padding = np.zeros((chunk, positions.shape[0] - n, 3))
    compiled = compiled_hessian_vector_products(potential)
    blocks = []
    for start in range(0, len(vectors), chunk):
        part = vectors[start : start + chunk]
        padded = np.concatenate([part, np.zeros((chunk - len(part), n, 3))]) if len(part) < chunk else part
        tangents = jnp.asarray(np.concatenate([padded, padding], axis=1), dtype=positions.dtype)
        out = compiled(potential.variables, graph, positions, tangents)
        blocks.append(np.asarray(out)[: len(part), :n])
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
