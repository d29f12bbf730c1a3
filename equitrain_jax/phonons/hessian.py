"""Exact second derivatives of a model's energy with respect to atomic positions, for ASE structures.

The Hessian H[i, a, j, b] = ∂²E/∂r_ia ∂r_jb (eV/Å²) is built from Hessian-vector products of the
model's one energy function (the forward-over-reverse product of
`equitrain_jax.models.quantities.hessian_vector_product`, here as `jax.linearize` of the gradient so
the primal is computed once per structure): each row block is a batch of products with unit
vectors, ``chunk_size`` rows per compiled call, so memory grows with ``chunk_size`` and not with the
number of rows (the bound: `default_chunk_size`).  Partial Hessians of a subset of atoms (the free
atoms under ASE's ``FixAtoms``) cost only their own rows (`partial_hessian`).  The
neighbour list is built once at the given structure and kept fixed while positions vary: the
derivatives are exact for the model at that structure (the cutoff envelopes are smooth, so edges
at the cutoff contribute nothing to the first and second derivatives).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import ase
import jax
import jax.numpy as jnp
import jraph
import numpy as np
from ase.vibrations import VibrationsData

from equitrain_jax.data import batch_graphs
from equitrain_jax.data.graph import PaddedShape
from equitrain_jax.models.quantities import NodeEnergyFn, energy_gradient, hessian_vector_product
from equitrain_jax.potential import Potential


def linearized_gradient(
    node_energy_fn: NodeEnergyFn, variables: Any, graph: jraph.GraphsTuple, positions: jnp.ndarray
) -> jax.tree_util.Partial:
    """The linear map v ↦ H·v at ``positions`` [n_node, 3] Å: `jax.linearize` of
    `equitrain_jax.models.quantities.energy_gradient`, the same forward-over-reverse product as
    `equitrain_jax.models.quantities.hessian_vector_product`.

    The primal (energy and its reverse pass) is computed here, once; the returned
    `jax.tree_util.Partial` holds its residuals (about the working memory of one force
    evaluation) and maps a tangent [n_node, 3] (Å) to H·v [n_node, 3] (eV/Å²).  Being a pytree,
    it passes into a jit-compiled function (`compiled_tangent_products`).
    """
    gradient = functools.partial(energy_gradient, node_energy_fn, variables, graph)
    return jax.linearize(gradient, positions)[1]


def compiled_linearization(potential: Potential) -> Callable:
    """`linearized_gradient` of this potential's model, jit-compiled once per potential:
    ``(variables, graph, positions) → linear map``."""
    return potential.compiled(
        "linearized_gradient", lambda: jax.jit(functools.partial(linearized_gradient, potential.node_energy_fn))
    )


def tangent_products(linear: jax.tree_util.Partial, tangents: jnp.ndarray) -> jnp.ndarray:
    """H·v for a batch of tangents [k, n_node, 3] (Å) through a `linearized_gradient` map: [k, n_node, 3] eV/Å²."""
    return jax.vmap(linear)(tangents)


def compiled_tangent_products(potential: Potential) -> Callable:
    """`tangent_products`, jit-compiled once per potential (and per structure size and chunk)."""
    return potential.compiled("tangent_products", lambda: jax.jit(tangent_products))


def compiled_hessian_vector_products(potential: Potential) -> Callable:
    """`equitrain_jax.models.quantities.hessian_vector_product` of this potential's model for a batch
    of tangents, jit-compiled once per potential: ``(variables, graph, positions, tangents [k,
    n_node, 3] Å) → H·v [k, n_node, 3] eV/Å²``.  One program computes the primal and all k tangents
    (``jax.vmap`` keeps the primal unbatched), with no residuals stored between calls: cheaper
    than `compiled_linearization` then `compiled_tangent_products` when one call takes them all
    (SevenNet-0, 125-atom supercell, one tangent: 2.7 against 3.3 CPU-s)."""
    return potential.compiled(
        "hessian_vector_products",
        lambda: jax.jit(jax.vmap(functools.partial(hessian_vector_product, potential.node_energy_fn),
                                 in_axes=(None, None, None, 0))),
    )


def default_chunk_size(n_atoms: int) -> int:
    """Rows per compiled call: ⌊192/N⌋, between 1 and 12 (12 rows up to 16 atoms, 3 at 64, 1 from 97 on).

    Memory bound of a Hessian (`hessian_vector_products`), with N atoms and c = ``chunk_size``:

        peak ≈ R + W0 + c·w,   R ≈ w ≈ m·N,

    R the primal's residuals, kept for all calls (`linearized_gradient`), w the working memory of
    one tangent in a call (`tangent_products`), W0 small and fixed; m is the model's memory per
    atom of one force evaluation's intermediates, which grows with the neighbours per atom and the
    channels.  So the peak is about (c + 1)·m·N, set by the chunk and not by the 3N rows.  Measured
    with XLA's accounting (`benchmarks/hessian_memory.py`, MACE-MP-0 medium architecture at 128
    channels, float64, diamond Si): m ≈ 7 MB per atom (R = 121 MB and w = 110 MB at 16 atoms, 474
    and 443 MB at 64).  The default keeps c·N ≤ 192, so one call's working memory stays below
    about 1.4 GB for that model at any size; the time per row hardly depends on c (the primal is
    computed once; 16 atoms: 17.4 s with c = 24, 17.7 s with c = 3).
    """
    return int(min(12, max(1, 192 // max(int(n_atoms), 1))))


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
        chunk_size: products per compiled call, which set the peak memory (about
            (chunk_size + 1) force evaluations' intermediates: see `default_chunk_size`); the last
            chunk is padded (with zero vectors) so every call has the same shape and the function
            compiles once per structure size.  Default `default_chunk_size`.
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
    linear = compiled_linearization(potential)(potential.variables, graph, positions)  # the primal, once
    products = compiled_tangent_products(potential)
    blocks = []
    for start in range(0, len(vectors), chunk):
        part = vectors[start : start + chunk]
        padded = np.concatenate([part, np.zeros((chunk - len(part), n, 3))]) if len(part) < chunk else part
        tangents = jnp.asarray(np.concatenate([padded, padding], axis=1), dtype=positions.dtype)
        out = products(linear, tangents)
        blocks.append(np.asarray(out)[: len(part), :n])
    return np.concatenate(blocks).astype(np.float64) if blocks else np.zeros((0, n, 3))


def batched_hessian_vector_products(
    potential: Potential,
    structures: Sequence[ase.Atoms],
    tangents: np.ndarray,
    chunk_size: int,
    shape: Optional[PaddedShape] = None,
) -> np.ndarray:
    """Hessian-vector products of several structures in one compiled call per chunk: [K, ΣN, 3] eV/Å².

    The structures (each's neighbour list built at its positions) are batched into ONE padded
    device graph; the energy summed over them has a block-diagonal Hessian, so a tangent holding
    a displacement of every structure gives every structure's product at once.  ``tangents``
    [K, ΣN, 3] (Å, atoms in the order of ``structures``) are evaluated ``chunk_size`` per call,
    the last chunk padded with zeros, so the shapes, and the compilation, are those of one call.
    ``shape`` pads the graph to at least these sizes (`equitrain_jax.data.pad_graph`; default its
    own bucket), so that batches of different structures can share one compiled program.

    Each call is `compiled_hessian_vector_products`: primal and tangents in one program, less
    work than linearising first and no residuals kept between calls, so the memory is one call's
    (a batch of several large supercells is where memory runs out); a further chunk recomputes
    the primal.  Padding nodes get zero tangents.
    """
    graph = potential.device_graph(batch_graphs([potential.graph(atoms) for atoms in structures]), shape=shape)
    n_total = sum(len(atoms) for atoms in structures)
    positions = graph.nodes["positions"]
    n_padding = positions.shape[0] - n_total
    products = functools.partial(compiled_hessian_vector_products(potential), potential.variables, graph, positions)
    blocks = []
    for start in range(0, len(tangents), chunk_size):
        part = tangents[start : start + chunk_size]
        padded = np.concatenate([part, np.zeros((chunk_size - len(part), n_total, 3))])
        padded = np.concatenate([padded, np.zeros((chunk_size, n_padding, 3))], axis=1)
        out = products(jnp.asarray(padded, dtype=positions.dtype))
        blocks.append(np.asarray(out, dtype=np.float64)[: len(part), :n_total])
    return np.concatenate(blocks)


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
    ``chunk_size`` rows per compiled call bound the memory (see `default_chunk_size`).
    """
    return hessian_rows(potential, atoms, np.arange(len(atoms)), chunk_size=chunk_size)


def free_atom_indices(atoms: ase.Atoms) -> np.ndarray:
    """Indices of the atoms that may move: all but those fixed by ASE's ``FixAtoms`` (or fixed in
    all three directions by ``FixCartesian``); other constraints are ignored, as ASE's
    `ase.vibrations.VibrationsData.indices_from_constraints` does.  [M] int."""
    return np.asarray(VibrationsData.indices_from_constraints(atoms), dtype=np.int64).reshape(-1)


def partial_hessian(
    potential: Potential,
    atoms: ase.Atoms,
    indices: Optional[Sequence[int]] = None,
    chunk_size: Optional[int] = None,
) -> np.ndarray:
    """Hessian block of a subset of atoms, ∂²E/∂r_ia ∂r_jb for i, j in ``indices``: [M, 3, M, 3] eV/Å².

    For the vibrations of an adsorbate on a fixed slab or of a defect in a fixed host: the other
    atoms stay where they are, so this block is the whole Hessian of the free coordinates.  It
    costs 3M Hessian-vector products instead of the full Hessian's 3N; it equals the full
    Hessian's (``indices``, ``indices``) block.

    Args:
        potential: the model.
        atoms: structure (Å); the neighbour list is built once here.
        indices: the M atoms; default the free atoms under the structure's constraints
            (`free_atom_indices`: those not fixed by ``FixAtoms``), as `ase.vibrations` does.
        chunk_size: Hessian rows per compiled call (see `hessian_vector_products`).

    Raises:
        ValueError: no atom to take (all fixed, or ``indices`` empty), an index out of range or
            repeated.
    """
    chosen = free_atom_indices(atoms) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if chosen.size == 0:
        where = "every atom is fixed by the constraints" if indices is None else "indices is empty"
        raise ValueError(f"no atom for a partial Hessian: {where}")
    if len(np.unique(chosen)) != len(chosen):
        raise ValueError(f"indices {chosen.tolist()} repeat an atom")
    rows = hessian_rows(potential, atoms, chosen, chunk_size=chunk_size)  # range checked there
    return rows[:, :, chosen, :]


def vibrations_data(
    potential: Potential,
    atoms: ase.Atoms,
    indices: Optional[Sequence[int]] = None,
    chunk_size: Optional[int] = None,
) -> VibrationsData:
    """ASE's `ase.vibrations.VibrationsData` (frequencies, modes, zero-point energy) of the atoms
    ``indices`` (default: the atoms not fixed by ``FixAtoms``), from their exact `partial_hessian`.

    ``atoms`` should be at a minimum of the model's energy for the frequencies to mean anything.
    """
    chosen = free_atom_indices(atoms) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    block = partial_hessian(potential, atoms, chosen, chunk_size=chunk_size)
    return VibrationsData(atoms, block, indices=chosen.tolist())
