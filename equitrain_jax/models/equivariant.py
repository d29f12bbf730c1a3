"""Equivariant building blocks of MACE as pure functions of arrays and weights.

Features are dicts from an irrep name (``"0e"``, ``"1o"``, …) to arrays ``[n, channels, 2l+1]``:
the channel-major layout that mace-torch reshapes its features into.  Normalisations follow e3nn
(component normalisation, fan-in scaling inside the operation, not in the weights), so weights
converted from mace-torch are used as they are.
"""

from __future__ import annotations

import functools
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


def convolution_tensor_product(
    x: Features,
    sh: Mapping[int, jnp.ndarray],
    weights: jnp.ndarray,
    paths: Sequence[ConvolutionPath],
) -> Features:
    """Per-edge uvu tensor product of sender features with edge spherical harmonics.

    x: ``{ir: [E, C, 2l+1]}``; sh: ``{l: [E, 2l+1]}``; weights: ``[E, n_paths, C]``.
    Returns ``{ir_out: [E, k·C, 2l+1]}``, the k paths into ``ir_out`` stacked along channels in
    path order.
    """
    grouped: dict[str, list[jnp.ndarray]] = {}
    for p, path in enumerate(paths):
        l_in, l_out = irrep(path.ir_in).l, irrep(path.ir_out).l
        cg = jnp.asarray(_coupling(l_in, path.l_sh, l_out), dtype=weights.dtype)
        edge_coupling = jnp.einsum("ej,ijk->eik", sh[path.l_sh], cg)  # [E, 2l_in+1, 2l_out+1]
        y = jnp.einsum("eci,eik->eck", x[path.ir_in], edge_coupling)
        grouped.setdefault(path.ir_out, []).append(y * weights[:, p, :, None])
    return {name: jnp.concatenate(ys, axis=1) for name, ys in grouped.items()}


def symmetric_contraction(
    x: jnp.ndarray,
    species: jnp.ndarray,
    weights: Sequence[jnp.ndarray],
    u_matrices: Sequence[jnp.ndarray],
) -> jnp.ndarray:
    """MACE's symmetric contraction for one output irrep, up to body order len(weights)+1.

    out[n, c, M] = Σ_ν Σ_k W_ν[z_n, k, c] Σ_{i1..iν} U_ν[M, i1, …, iν, k] x[n, c, i1]…x[n, c, iν]

    x: ``[n, C, D]`` (all irreps of the node features, concatenated); species: ``[n]``;
    weights[ν−1]: ``[n_species, K_ν, C]``; u_matrices[ν−1]: ``[M, D, …(ν times), K_ν]``.
    Returns ``[n, C, M]``.
    """
    n, c, d = x.shape
    out = 0.0
    xx = None
    for nu, (w, u) in enumerate(zip(weights, u_matrices), start=1):
        m, k = u.shape[0], u.shape[-1]
        if nu == 1:
            poly = jnp.einsum("mik,nci->ncmk", u, x)
        else:
            if xx is None:
                xx = (x[:, :, :, None] * x[:, :, None, :]).reshape(n * c, d * d)
            rest = d ** (nu - 2)
            u_pair = jnp.moveaxis(u.reshape(m, d * d, rest * k), 1, 0).reshape(d * d, m * rest * k)
            t = (xx @ u_pair).reshape(n, c, m, rest, k)
            for _ in range(nu - 2):
                rest //= d
                t = jnp.einsum("ncmirk,nci->ncmrk", t.reshape(n, c, m, d, rest, k), x)
            poly = t.reshape(n, c, m, k)
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
