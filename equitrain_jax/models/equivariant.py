"""Equivariant building blocks shared by the model families, as pure functions of arrays and weights.

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


def irreps_list(text: str) -> list[tuple[int, str]]:
    """``"128x0e+64x1e"`` → ``[(128, "0e"), (64, "1e")]``."""
    out = []
    for term in text.replace(" ", "").split("+"):
        mul, ir = term.split("x")
        out.append((int(mul), ir))
    return out


def torch_sort_key(name: str) -> tuple[int, int]:
    """Irreps order of e3nn (torch): by l, odd before even parity."""
    ir = irrep(name)
    return (ir.l, ir.p)


class ConvolutionPath(NamedTuple):
    """One uvu path of the edge tensor product: node irrep ⊗ Y_l → output irrep."""

    ir_in: str
    l_sh: int
    ir_out: str


@functools.lru_cache(maxsize=None)
def clebsch_gordan(l1: int, l2: int, l3: int) -> np.ndarray:
    """Clebsch–Gordan coefficients [2l1+1, 2l2+1, 2l3+1] with e3nn's component normalisation
    factor √(2l3+1)."""
    return np.asarray(e3nn.clebsch_gordan(l1, l2, l3)) * math.sqrt(2 * l3 + 1)


def channel_linear(x: Features, weights: Mapping[str, jnp.ndarray]) -> Features:
    """e3nn ``Linear``: per output irrep, channels mixed by ``W [C_in, C_out] / √C_in``.

    Only irreps present in ``weights`` are produced.
    """
    return {
        name: jnp.einsum("nci,cd->ndi", x[name], w) / math.sqrt(w.shape[0])
        for name, w in weights.items()
    }


def convolution_messages(
    x: Features,
    senders: jnp.ndarray,
    sh: Mapping[int, jnp.ndarray],
    weights: jnp.ndarray,
    paths: Sequence[ConvolutionPath],
) -> Features:
    """Sum over incoming edges of the uvu tensor products of sender features with the edge
    spherical harmonics, each path weighted per edge and channel.

    Edges are neighbour-major (edge n·K + k is the k-th edge into node n), so the sum over edges
    is a contraction, not a scatter, and no per-edge output features are ever stored.  The
    multiplicity may differ between irreps (SevenNet-0: 128x0e+64x1e+32x2e).
    x: ``{ir: [N, C_ir, 2l+1]}``; senders: ``[N·K]``; sh: ``{l: [N·K, 2l+1]}``;
    weights: ``[N·K, Σ_p C_p]``, one block of the path's input multiplicity C_p per path, in path
    order.  Returns ``{ir_out: [N, Σ C_p, 2l+1]}``, the paths into ``ir_out`` stacked along channels
    in path order (the input of the following linear layer).
    """
    n = next(iter(x.values())).shape[0]
    k = senders.shape[0] // n
    gathered = {  # channel-major [N, C, K, 2l+1]: each path's product below contracts (K, 2l+1)
        ir: jnp.swapaxes(x[ir][senders].reshape(n, k, x[ir].shape[1], -1), 1, 2)
        for ir in dict.fromkeys(p.ir_in for p in paths)
    }
    offsets = np.cumsum([x[p.ir_in].shape[1] for p in paths])[:-1]
    # one split, not a slice per path: a slice's transpose pads its gradient to the whole
    # [N·K, Σ C_p] block, so the reverse pass summed one full-size block per path (a third of
    # SevenNet-0's force evaluation on CPU); the split's transpose is one concatenation
    path_weights = jnp.split(weights, offsets, axis=1)
    grouped: dict[str, list[jnp.ndarray]] = {}
    for p, path in enumerate(paths):
        l_in, l_out = irrep(path.ir_in).l, irrep(path.ir_out).l
        c = x[path.ir_in].shape[1]
        cg = jnp.asarray(clebsch_gordan(l_in, path.l_sh, l_out), dtype=weights.dtype)
        edge_coupling = jnp.einsum("ej,ijo->eio", sh[path.l_sh], cg).reshape(n, k, 2 * l_in + 1, 2 * l_out + 1)
        weighted = gathered[path.ir_in] * jnp.swapaxes(path_weights[p].reshape(n, k, c), 1, 2)[..., None]
        grouped.setdefault(path.ir_out, []).append(jnp.einsum("ncki,nkio->nco", weighted, edge_coupling))
    return {name: jnp.concatenate(ms, axis=1) for name, ms in grouped.items()}


def sum_over_neighbours(edge_values: jnp.ndarray, n_nodes: int) -> jnp.ndarray:
    """Sum of neighbour-major edge values into their receivers: [N·K, …] → [N, …]."""
    return edge_values.reshape(n_nodes, -1, *edge_values.shape[1:]).sum(axis=1)


def radial_mlp(
    x: jnp.ndarray, layers: Sequence[jnp.ndarray], activation_constant: float
) -> jnp.ndarray:
    """e3nn ``FullyConnectedNet``: bias-free layers W/√fan_in, normalised SiLU between them."""
    for i, w in enumerate(layers):
        x = x @ w / math.sqrt(w.shape[0])
        if i < len(layers) - 1:
            x = activation_constant * jax.nn.silu(x)
    return x


def layer_norm(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, eps: float = 1e-5) -> jnp.ndarray:
    """torch ``LayerNorm`` over the last axis: (x − mean)/√(biased variance + eps)·scale + bias."""
    mean = x.mean(axis=-1, keepdims=True)
    variance = jnp.square(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(variance + eps) * scale + bias


def normalised_mlp(x: jnp.ndarray, layers: Sequence[Mapping[str, jnp.ndarray]]) -> jnp.ndarray:
    """MLP of affine layers with LayerNorm and plain SiLU between them (mace-torch's ``RadialMLP``).

    ``layers[i]`` holds ``kernel [n_in, n_out]`` and ``bias [n_out]``, and for every layer but the
    last the LayerNorm's ``norm_scale`` and ``norm_bias`` [n_out]; no fan-in normalisation.
    """
    for i, layer in enumerate(layers):
        x = x @ layer["kernel"] + layer["bias"]
        if i < len(layers) - 1:
            x = jax.nn.silu(layer_norm(x, layer["norm_scale"], layer["norm_bias"]))
    return x


def gate_with(x: Features, gated: Sequence[str], scalar_activation, gate_activation) -> Features:
    """e3nn's ``Gate`` with the given activations (functions of arrays).

    ``x["0e"]`` holds the C scalars, then one gate per channel of each irrep of ``gated`` in that
    order; every component of a gated channel is multiplied by its gate.  Returns the activated
    scalars and the gated irreps.
    """
    n_gates = sum(x[ir].shape[1] for ir in gated)
    n_scalars = x["0e"].shape[1] - n_gates
    out = {"0e": scalar_activation(x["0e"][:, :n_scalars])}
    gates = gate_activation(x["0e"][:, n_scalars:])
    offset = 0
    for ir in gated:
        mul = x[ir].shape[1]
        out[ir] = x[ir] * gates[:, offset : offset + mul]
        offset += mul
    return out


def gate(x: Features, gated: Sequence[str], scalar_constant: float, gate_constant: float) -> Features:
    """`gate_with` SiLU on the scalars and sigmoid on the gates, each times its normalisation
    constant."""
    return gate_with(x, gated, lambda v: scalar_constant * jax.nn.silu(v),
                     lambda v: gate_constant * jax.nn.sigmoid(v))
