"""Exact third derivatives of a model's energy with respect to atomic positions.

The third derivative contracted with two directions, ∂³E[u, v, ·]_kγ = Σ_iα,jβ ∂³E/∂r_iα ∂r_jβ ∂r_kγ
u_iα v_jβ (eV/Å³ per Å of u and of v), is one forward-mode derivative of a Hessian-vector product:
the change of H·u along v, ``jax.jvp`` of ``jax.jvp(jax.grad(E))``.  The same nested call also gives
the gradient, H·u and H·v, so the forces of a displaced structure to second order in the displacement,
F(r + u) = −∇E − H·u − ½ ∂³E[u, u] (eV/Å), cost one call.

The pure functions (`third_order_product`, `second_order_forces`) take any energy function of the
positions and compose with ``jax.jit``, ``jax.vmap`` and ``jax.grad`` (e.g. with respect to model
parameters the energy function closes over).  The potential-level functions batch K directions per
compiled call (``chunk_size``, memory bound), as `equitrain_jax.phonons.hessian` does for the Hessian,
with the neighbour list built once at the given structure and kept fixed.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Sequence

import ase
import jax
import jax.numpy as jnp
import numpy as np

from equitrain_jax.models import quantities
from equitrain_jax.potential import Potential

EnergyFn = Callable[[jnp.ndarray], jnp.ndarray]  # positions [N, 3] Å -> energy eV (scalar)


@dataclasses.dataclass(frozen=True)
class _ModelEnergy:
    """``energy(variables, graph, positions)``: eV of the real atoms at ``positions`` [N, 3] (Å) of a
    padded device graph, neighbour list fixed.  Holds only code (the Flax module), compared by value,
    so one compilation serves every `Potential` of the same architecture and dtype."""

    module: Any

    def __call__(self, variables: Any, graph: Any, positions: jnp.ndarray) -> jnp.ndarray:
        padded = graph.nodes["positions"]
        padded = padded.at[: positions.shape[0]].set(positions.astype(padded.dtype))
        return quantities.energy(quantities.node_energy_function(self.module), variables, graph, padded,
                                 quantities.zero_strain(graph))


def _energy_fn(potential: Potential, atoms: ase.Atoms) -> tuple[Callable, tuple, jnp.ndarray]:
    """The model's energy at ``atoms`` as a pure function: ``(energy, args, positions0)``.

    ``energy(*args, positions)`` is the total energy (eV) of the N real atoms at ``positions`` [N, 3]
    (Å), with the neighbour list and periodic shifts of ``atoms`` kept fixed; ``args`` are arrays (a
    pytree: the model's variables and the padded device graph) so that ``jax.jit`` takes them as
    arguments, not constants; ``energy`` holds only code and is hashable by value (a static argument
    of ``jax.jit``).  ``positions0`` [N, 3] Å are the positions of ``atoms`` as the graph holds them
    (`equitrain_jax.data.graph.near_origin`: possibly moved by cell vectors, the same structure) in
    the potential's dtype; displace those, not ``atoms.positions``.

    Both are built on the package's one energy function (`equitrain_jax.models.quantities.energy`),
    at zero strain, with the real atoms' positions written into the padded graph.
    """
    graph = potential.device_graph(potential.graph(atoms))
    return _ModelEnergy(potential.module), (potential.variables, graph), graph.nodes["positions"][: len(atoms)]


# ---------------------------------------------------------------------------- pure functions


def _nested_jvp(energy: EnergyFn, positions: jnp.ndarray, u: jnp.ndarray, v: jnp.ndarray):
    """(∇E, H·u, H·v, ∂³E[u, v, ·]) at ``positions``, each [N, 3]: the jvp along v of (∇E, H·u)."""
    grad = jax.grad(energy)

    def gradient_and_hvp(r):
        return jax.jvp(grad, (r,), (u,))

    (gradient, hu), (hv, tuv) = jax.jvp(gradient_and_hvp, (positions,), (v,))
    return gradient, hu, hv, tuv


def third_order_product(energy: EnergyFn, positions: jnp.ndarray, u: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    """∂³E[u, v, ·] = Σ ∂³E/∂r_iα ∂r_jβ ∂r_kγ u_iα v_jβ, [N, 3] eV/Å³ times the units of u·v (Å²).

    Args:
        energy: pure energy function of the positions [N, 3] Å, scalar eV.
        positions: [N, 3] Å, where the derivative is taken.
        u, v: [N, 3] directions (Å); the result is bilinear and symmetric in them.
    """
    return _nested_jvp(energy, positions, u, v)[3]


def second_order_forces(energy: EnergyFn, positions: jnp.ndarray, displacement: jnp.ndarray) -> jnp.ndarray:
    """Forces (eV/Å) at ``positions + displacement`` to second order: −∇E − H·u − ½ ∂³E[u, u], [N, 3].

    Exact for an energy that is a cubic polynomial of the positions; for a model, the error is the
    quartic term, O(|u|³).  ``displacement`` u is [N, 3] Å.
    """
    gradient, hu, _, tuu = _nested_jvp(energy, positions, displacement, displacement)
    return -(gradient + hu + 0.5 * tuu)


# ---------------------------------------------------------------------------- batched over a structure


@functools.partial(jax.jit, static_argnums=0)
def _batched(energy: Callable, args: tuple, positions: jnp.ndarray, u: jnp.ndarray, v: jnp.ndarray):
    """`_nested_jvp` for K directions v [K, N, 3] and K directions u [K, N, 3] or one, [N, 3], shared:
    (∇E [N, 3], H·u [K, N, 3], ∂³E[u, v] [K, N, 3]).

    ``jax.vmap`` batches only what depends on the batched directions: the primal pass is shared, and
    with one shared u so is its Hessian-vector product (only the jvp along each v is batched).
    Compiled once per energy function (static, compared by value), structure size, K and u's rank.
    """
    bound = functools.partial(energy, *args)
    nested = jax.vmap(lambda a, b: _nested_jvp(bound, positions, a, b), in_axes=(0 if u.ndim == 3 else None, 0))
    gradient, hu, _, tuv = nested(u, v)
    return gradient[0], hu, tuv


def default_chunk_size(n_atoms: int) -> int:
    """Direction pairs per compiled call: ⌊96/N⌋ between 1 and 12 (12 up to 8 atoms, 3 at 32, 1 from 49).

    One call holds the forward-over-forward-over-reverse intermediates of ``chunk_size`` pairs,
    about four Hessian-vector products' worth each (the primal recomputed in every call).
    """
    return int(min(12, max(1, 96 // max(int(n_atoms), 1))))


def _run_chunks(
    potential: Potential,
    atoms: ase.Atoms,
    u: np.ndarray,
    v: np.ndarray,
    chunk_size: Optional[int],
    progress: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_batched` over K directions v [K, N, 3] (and u [K, N, 3], or one u [N, 3] for all) in padded
    chunks of equal shape (one compilation per size).

    ``progress``: a tqdm-like object whose ``update(n)`` is called after each chunk, or None.
    Returns float64 numpy (∇E [N, 3], H·u [K, N, 3], ∂³E[u, v] [K, N, 3]).
    """
    n = len(atoms)
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 3 or v.shape[1:] != (n, 3):
        raise ValueError(f"v must have shape [K, {n}, 3] for {n} atoms, got {list(v.shape)}")
    if u.shape not in (v.shape, (n, 3)):
        raise ValueError(f"u must have the shape of v, {list(v.shape)}, or [{n}, 3]; got {list(u.shape)}")
    chunk = int(chunk_size or default_chunk_size(n))
    if chunk < 1:
        raise ValueError(f"chunk_size must be a positive number of direction pairs, got {chunk_size}")
    energy, args, positions = _energy_fn(potential, atoms)

    def padded(x: np.ndarray, start: int) -> jnp.ndarray:
        part = x[start : start + chunk]
        if len(part) < chunk:
            part = np.concatenate([part, np.zeros((chunk - len(part), n, 3))])
        return jnp.asarray(part, dtype=positions.dtype)

    shared_u = jnp.asarray(u, dtype=positions.dtype) if u.ndim == 2 else None
    gradient = np.zeros((n, 3))
    hu_blocks, tuv_blocks = [], []
    for start in range(0, len(v), chunk):
        size = min(chunk, len(v) - start)
        u_part = shared_u if shared_u is not None else padded(u, start)
        g, hu, tuv = _batched(energy, args, positions, u_part, padded(v, start))
        gradient = np.asarray(g, dtype=np.float64)
        hu_blocks.append(np.asarray(hu, dtype=np.float64)[:size])
        tuv_blocks.append(np.asarray(tuv, dtype=np.float64)[:size])
        if progress is not None:
            progress.update(size)
    if not hu_blocks:
        return gradient, np.zeros((0, n, 3)), np.zeros((0, n, 3))
    return gradient, np.concatenate(hu_blocks), np.concatenate(tuv_blocks)


def third_order_products(
    potential: Potential,
    atoms: ase.Atoms,
    u: np.ndarray,
    v: np.ndarray,
    chunk_size: Optional[int] = None,
) -> np.ndarray:
    """∂³E[u_k, v_k, ·] for K pairs of directions u, v [K, N, 3] (Å): [K, N, 3] eV/Å³·Å².

    Args:
        potential: the model.
        atoms: structure (Å); the neighbour list is built once here and kept fixed.
        u, v: K pairs of displacement patterns of the N atoms.
        chunk_size: pairs per compiled call (memory bound), default `default_chunk_size`; every call
            has this many (the last chunk, or a shorter K, padded with zero directions), so the
            function compiles once per structure size and chunk size, whatever K.
    """
    return _run_chunks(potential, atoms, u, v, chunk_size)[2]


def displaced_forces(
    potential: Potential,
    atoms: ase.Atoms,
    displacements: np.ndarray,
    chunk_size: Optional[int] = None,
    progress: Any = None,
) -> np.ndarray:
    """Forces (eV/Å) of ``atoms`` displaced by each of K patterns [K, N, 3] (Å), to second order:

    F(u) = −∇E − H·u − ½ ∂³E[u, u] at ``atoms``, [K, N, 3] (`second_order_forces`, batched; one
    nested jvp per pattern).  ``progress``: a tqdm-like object updated after each chunk.
    """
    gradient, hu, tuu = _run_chunks(potential, atoms, displacements, displacements, chunk_size, progress)
    return -(gradient[None] + hu + 0.5 * tuu)


def displacement_rows(
    potential: Potential,
    atoms: ase.Atoms,
    displacement: np.ndarray,
    atom_indices: Optional[Sequence[int]] = None,
    chunk_size: Optional[int] = None,
    progress: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """What a displacement u does, to second order: the forces F(u) [N, 3] (eV/Å, `second_order_forces`)
    and the change of the force constants ∂³E[u, ·, ·] in the rows of the given atoms (`third_order_rows`),
    [M, N, 3, 3] eV/Å² per Å of u.  One compiled program: 3M + 1 jvps of the one H·u they share.
    ``displacement`` u is [N, 3] Å; ``atom_indices`` default all N atoms."""
    n = len(atoms)
    displacement = np.asarray(displacement, dtype=np.float64)
    if displacement.shape != (n, 3):
        raise ValueError(f"displacement must have shape [{n}, 3] for {n} atoms, got {list(displacement.shape)}")
    atom_indices = np.arange(n) if atom_indices is None else np.asarray(atom_indices, dtype=np.int64).reshape(-1)
    if atom_indices.size and (atom_indices.min() < 0 or atom_indices.max() >= n):
        raise ValueError(f"atom indices {atom_indices.tolist()} out of range for {n} atoms")
    unit = np.zeros((len(atom_indices), 3, n, 3))
    unit[np.arange(len(atom_indices)), :, atom_indices, :] = np.eye(3)
    outer = np.concatenate([displacement[None], unit.reshape(-1, n, 3)])
    gradient, hu, tuv = _run_chunks(potential, atoms, displacement, outer, chunk_size, progress)
    forces = -(gradient + hu[0] + 0.5 * tuv[0])
    rows = tuv[1:].reshape(len(atom_indices), 3, n, 3).transpose(0, 2, 1, 3)
    return forces, np.ascontiguousarray(rows)


def third_order_rows(
    potential: Potential,
    atoms: ase.Atoms,
    direction: np.ndarray,
    atom_indices: Optional[Sequence[int]] = None,
    chunk_size: Optional[int] = None,
) -> np.ndarray:
    """The change of the force constants along a displacement, ∂³E[u, ·, ·], rows of the given atoms:
    [M, N, 3, 3] eV/Å² per Å of u.

    Entry [j, k, β, γ] = Σ_iα ∂³E/∂r_iα ∂r_jβ ∂r_kγ u_iα for j in ``atom_indices`` (default all N),
    phonopy's fc2 layout: the exact ``fc2(r + u) − fc2(r)`` of a cubic energy (phono3py's ``delta_fc2``
    of a first displacement u).  3M jvps, one per (j, β), of the one Hessian-vector product H·u, which
    they share.  ``direction`` u is [N, 3] Å.
    """
    return displacement_rows(potential, atoms, direction, atom_indices, chunk_size)[1]
