"""Equivariant building blocks of MACE as pure functions of arrays and weights.

Features are dicts from an irrep name (``"0e"``, ``"1o"``, …) to arrays ``[n, channels, 2l+1]``:
the channel-major layout that mace-torch reshapes its features into.  Normalisations follow e3nn
(component normalisation, fan-in scaling inside the operation, not in the weights), so weights
converted from mace-torch are used as they are.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Mapping, NamedTuple, Sequence

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

Features = dict[str, jnp.ndarray]


def irrep(name: str) -> e3nn.Irrep:
    return e3nn.Irrep(name)


def torch_sort_key(name: str) -> tuple[int, int]:
    """Irreps order of e3nn (torch): by l, odd before even parity."""
    ir = irrep(name)
    return (ir.l, ir.p)


class ConvolutionPath(NamedTuple):
    """One uvu path of the edge tensor product: node irrep ⊗ Y_l → output irrep."""

    ir_in: str
    l_sh: int
    ir_out: str


def convolution_paths(
    irreps_in: Sequence[str], max_ell: int, irreps_target: Sequence[str]
) -> tuple[ConvolutionPath, ...]:
    """All paths node irrep ⊗ spherical harmonic → target irrep, in mace-torch's weight order.

    mace-torch enumerates (input irrep, harmonic, output l ascending) and then stably sorts the
    outputs by irrep; the per-edge weights and the following linear layer use that sorted order.
    """
    paths = []
    for ir_in in irreps_in:
        a = irrep(ir_in)
        for l_sh in range(max_ell + 1):
            for l_out in range(abs(a.l - l_sh), a.l + l_sh + 1):
                out = e3nn.Irrep(l_out, a.p * (-1) ** l_sh)
                if str(out) in irreps_target:
                    paths.append(ConvolutionPath(ir_in, l_sh, str(out)))
    return tuple(sorted(paths, key=lambda path: torch_sort_key(path.ir_out)))


@functools.lru_cache(maxsize=None)
def _coupling(l1: int, l2: int, l3: int) -> np.ndarray:
    """Clebsch–Gordan coefficients with e3nn's component normalisation factor √(2l3+1)."""
    return np.asarray(e3nn.clebsch_gordan(l1, l2, l3)) * math.sqrt(2 * l3 + 1)


def channel_linear(x: Features, weights: Mapping[str, jnp.ndarray]) -> Features:
    """e3nn ``Linear``: per output irrep, channels mixed by ``W [C_in, C_out] / √C_in``.

    Only irreps present in ``weights`` are produced.
    """
    return {
        name: jnp.einsum("nci,cd->ndi", x[name], w) / math.sqrt(w.shape[0])
        for name, w in weights.items()
    }


def species_linear(
    x: Features, species: jnp.ndarray, weights: Mapping[str, jnp.ndarray]
) -> Features:
    """Tensor product of features with the one-hot species: a species-dependent linear map.

    ``weights[ir]`` is ``[C_in, n_species, C_out]``; normalised by √(C_in·n_species) as e3nn's
    ``FullyConnectedTensorProduct`` with a one-hot second input.
    """
    out = {}
    for name, w in weights.items():
        c_in, n_species, _ = w.shape
        w_node = jnp.take(w, species, axis=1)  # [C_in, n, C_out]
        out[name] = jnp.einsum("nci,cnd->ndi", x[name], w_node) / math.sqrt(c_in * n_species)
    return out


def convolution_messages(
    x: Features,
    senders: jnp.ndarray,
    sh: Mapping[int, jnp.ndarray],
    weights: jnp.ndarray,
    paths: Sequence[ConvolutionPath],
) -> Features:
    """Sum over incoming edges of the uvu tensor product of sender features with the edge
    spherical harmonics, per path weighted per channel.

    Edges are neighbour-major (edge n·K + k is the k-th edge into node n), so the sum over edges
    is a contraction, not a scatter, and no per-edge output features are ever stored.
    x: ``{ir: [N, C, 2l+1]}``; senders: ``[N·K]``; sh: ``{l: [N·K, 2l+1]}``;
    weights: ``[N·K, n_paths, C]``.  Returns ``{ir_out: [N, k·C, 2l+1]}``, the k paths into
    ``ir_out`` stacked along channels in path order.
    """
    n = next(iter(x.values())).shape[0]
    k = senders.shape[0] // n
    c = weights.shape[-1]
    gathered = {
        ir: x[ir][senders].reshape(n, k, c, -1) for ir in dict.fromkeys(p.ir_in for p in paths)
    }
    grouped: dict[str, list[jnp.ndarray]] = {}
    for p, path in enumerate(paths):
        l_in, l_out = irrep(path.ir_in).l, irrep(path.ir_out).l
        cg = jnp.asarray(_coupling(l_in, path.l_sh, l_out), dtype=weights.dtype)
        edge_coupling = jnp.einsum("ej,ijo->eio", sh[path.l_sh], cg).reshape(n, k, 2 * l_in + 1, 2 * l_out + 1)
        weighted = gathered[path.ir_in] * weights[:, p, :].reshape(n, k, c, 1)
        grouped.setdefault(path.ir_out, []).append(jnp.einsum("nkci,nkio->nco", weighted, edge_coupling))
    return {name: jnp.concatenate(ms, axis=1) for name, ms in grouped.items()}


def sum_over_neighbours(edge_values: jnp.ndarray, n_nodes: int) -> jnp.ndarray:
    """Sum of neighbour-major edge values into their receivers: [N·K, …] → [N, …]."""
    return edge_values.reshape(n_nodes, -1, *edge_values.shape[1:]).sum(axis=1)


def compress_coupling(u: np.ndarray, tol: float = 1e-14) -> tuple[np.ndarray, np.ndarray]:
    """Sparse symmetric form of a U matrix ``[M, D, …(ν times), K]``.

    The contraction only sees the symmetric product x_i1…x_iν, so U is summed over permutations
    of its feature axes and kept only at the sorted index tuples where it is non-zero (about 1 %
    of its entries for MACE's U matrices).  Returns ``monomials [T, ν]`` (int32, i1 ≤ … ≤ iν)
    and ``coupling [T, M, K]``.
    """
    u = np.asarray(u)
    nu = u.ndim - 2
    symmetric = np.zeros_like(u)
    for perm in itertools.permutations(range(1, nu + 1)):
        symmetric += np.transpose(u, (0, *perm, nu + 1))
    tuples = np.array(list(itertools.combinations_with_replacement(range(u.shape[1]), nu)), dtype=np.int32)
    tuples = tuples.reshape(-1, nu)
    # Σ over the distinct permutations of a tuple = (its number of orderings / ν!) · Σ over all ν!.
    orderings = np.array([len(set(itertools.permutations(t))) for t in tuples.tolist()])
    coupling = np.moveaxis(symmetric[(slice(None), *tuples.T)], 1, 0)  # [T, M, K]
    coupling = coupling * (orderings / math.factorial(nu))[:, None, None]
    keep = np.abs(coupling).reshape(len(tuples), -1).max(axis=1) > tol
    return tuples[keep], coupling[keep]


def symmetric_contraction(
    x: jnp.ndarray,
    species: jnp.ndarray,
    weights: Sequence[jnp.ndarray],
    monomials: Sequence[jnp.ndarray],
    couplings: Sequence[jnp.ndarray],
) -> jnp.ndarray:
    """MACE's symmetric contraction for one output irrep, up to body order len(weights)+1.

    out[n, c, M] = Σ_ν Σ_k W_ν[z_n, k, c] Σ_{i1..iν} U_ν[M, i1, …, iν, k] x[n, c, i1]…x[n, c, iν]

    evaluated in the sparse symmetric form of `compress_coupling`.  x: ``[n, C, D]`` (all irreps
    of the node features, concatenated); species: ``[n]``; weights[ν−1]: ``[n_species, K_ν, C]``;
    monomials[ν−1]: ``[T_ν, ν]``; couplings[ν−1]: ``[T_ν, M, K_ν]``.  Returns ``[n, C, M]``.
    """
    out = 0.0
    d = x.shape[-1]
    for w, index, coupling in zip(weights, monomials, couplings):
        # factors selected by one-hot matmuls: their gradient is a matmul too, not a slow scatter
        factors = [x @ jax.nn.one_hot(index[:, j], d, dtype=x.dtype).T for j in range(index.shape[1])]
        monomial = functools.reduce(jnp.multiply, factors)  # [n, C, T]
        poly = jnp.einsum("nct,tmk->ncmk", monomial, coupling)
        out = out + jnp.einsum("ncmk,nkc->ncm", poly, jnp.take(w, species, axis=0))
    return out


def radial_mlp(
    x: jnp.ndarray, layers: Sequence[jnp.ndarray], activation_constant: float
) -> jnp.ndarray:
    """e3nn ``FullyConnectedNet``: bias-free layers W/√fan_in, normalised SiLU between them."""
    for i, w in enumerate(layers):
        x = x @ w / math.sqrt(w.shape[0])
        if i < len(layers) - 1:
            x = activation_constant * jax.nn.silu(x)
    return x
