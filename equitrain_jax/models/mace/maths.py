"""MACE's own equivariant maths as pure functions of arrays and weights: its edge tensor-product
paths (parity rule and weight order of mace-torch), the species-dependent skip connection and the
symmetric contraction (body-order expansion) in a sparse symmetric form.  Feature layout as in
`equitrain_jax.models.equivariant`.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Mapping, Sequence

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from equitrain_jax.models.equivariant import ConvolutionPath, Features, irrep, torch_sort_key


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


def convolution_layout(
    edge_irreps: Sequence[tuple[int, str]], max_ell: int, irreps_target: Sequence[str]
) -> tuple[tuple[ConvolutionPath, ...], dict[str, int]]:
    """The paths of the edge convolution on ``edge_irreps`` ((multiplicity, irrep) pairs) and, per
    target irrep, the number of channels its paths produce (Σ of their input multiplicities):
    the input width of the linear layer after the convolution.  The radial MLP gives one weight
    per path and channel, Σ over all targets."""
    multiplicity = {ir: mul for mul, ir in edge_irreps}
    paths = convolution_paths(tuple(multiplicity), max_ell, irreps_target)
    into = {ir: sum(multiplicity[p.ir_in] for p in paths if p.ir_out == ir) for ir in irreps_target}
    return paths, into


def edge_embedding_features(
    edge_feats: jnp.ndarray, source: jnp.ndarray, target: jnp.ndarray, species: jnp.ndarray, senders: jnp.ndarray
) -> jnp.ndarray:
    """[radial basis, source embedding of the sender, target embedding of the receiver] per edge.

    ``source``, ``target``: ``[Z, C]`` weights of e3nn ``Linear``s on the one-hot species (the
    embedding of species z is W[z]/√Z).  Edges are neighbour-major (receiver of edge n·K + k is n).
    Returns ``[n_edge, n_basis + 2C]``.
    """
    z = source.shape[0]
    k = senders.shape[0] // species.shape[0]
    receivers = jnp.repeat(species, k, total_repeat_length=senders.shape[0])
    return jnp.concatenate(
        [edge_feats, source[species[senders]] / math.sqrt(z), target[receivers] / math.sqrt(z)], axis=-1
    )


def density_normalised_update(
    messages: Features, residual: Features, density: jnp.ndarray, alpha: jnp.ndarray, beta: jnp.ndarray
) -> Features:
    """messages/(β·density + α) + residual per irrep (residual missing for an irrep: zero).

    density: ``[n]``, Σ over the incoming edges of the edge densities."""
    denominator = (beta * density + alpha)[:, None, None]
    return {ir: m / denominator + residual[ir] if ir in residual else m / denominator for ir, m in messages.items()}



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
