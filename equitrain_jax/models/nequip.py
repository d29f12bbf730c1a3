"""NequIP-style interaction maths (as SevenNet builds it) as pure functions of arrays and weights.

Features are dicts irrep → ``[n, channels, 2l+1]`` as in `equivariant`, but the multiplicity may
differ between irreps (SevenNet-0: 128x0e+64x1e+32x2e).  All irreps are even: SevenNet without
parity treats the spherical harmonics of the edge as even irreps, so l_out runs over
|l_in − l_sh| … l_in + l_sh without a parity rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from equitrain_jax.models import equivariant as eq
from equitrain_jax.models.equivariant import ConvolutionPath, Features


def even_irrep(l: int) -> str:
    return f"{l}e"


def instruction_paths(
    irreps_in: Sequence[str], lmax_sh: int, irreps_target: Sequence[str]
) -> tuple[ConvolutionPath, ...]:
    """Edge tensor-product paths node irrep ⊗ Y_l → target irrep, in e3nn's instruction order
    (input irrep, harmonic, l_out ascending): the weight order of SevenNet checkpoints before
    sevenn 0.11."""
    paths = []
    for ir_in in irreps_in:
        l_in = eq.irrep(ir_in).l
        for l_sh in range(lmax_sh + 1):
            for l_out in range(abs(l_in - l_sh), l_in + l_sh + 1):
                if even_irrep(l_out) in irreps_target:
                    paths.append(ConvolutionPath(ir_in, l_sh, even_irrep(l_out)))
    return tuple(paths)


def convolution_paths(
    irreps_in: Sequence[str], lmax_sh: int, irreps_target: Sequence[str]
) -> tuple[ConvolutionPath, ...]:
    """The paths of `instruction_paths`, stably sorted by output irrep: the order of the per-edge
    weights and of the message channels in the model (and in sevenn ≥ 0.11)."""
    return tuple(sorted(instruction_paths(irreps_in, lmax_sh, irreps_target), key=lambda p: eq.torch_sort_key(p.ir_out)))


def convolution_messages(
    x: Features,
    senders: jnp.ndarray,
    sh: Mapping[int, jnp.ndarray],
    weights: jnp.ndarray,
    paths: Sequence[ConvolutionPath],
) -> Features:
    """Sum over incoming (neighbour-major) edges of the uvu tensor products of sender features
    with the edge harmonics, each path weighted per edge and channel.

    weights: ``[N·K, Σ_p C(ir_in of p)]``, one block of the path's input multiplicity per path, in
    path order.  Returns ``{ir_out: [N, Σ C, 2l+1]}``, the paths into ``ir_out`` stacked along
    channels in path order (the input of the following linear layer).
    """
    offsets = np.cumsum([0] + [x[p.ir_in].shape[1] for p in paths])
    grouped: dict[str, list[jnp.ndarray]] = {}
    # paths are sorted by output irrep from input-major order, so within one output irrep the
    # paths of one input irrep are contiguous and the input irreps come in their own order
    for ir_in in dict.fromkeys(p.ir_in for p in paths):
        index = [i for i, p in enumerate(paths) if p.ir_in == ir_in]
        c = x[ir_in].shape[1]
        w = jnp.stack([weights[:, offsets[i] : offsets[i] + c] for i in index], axis=1)
        out = eq.convolution_messages({ir_in: x[ir_in]}, senders, sh, w, [paths[i] for i in index])
        for ir_out, m in out.items():
            grouped.setdefault(ir_out, []).append(m)
    order = dict.fromkeys(p.ir_out for p in paths)
    return {ir: jnp.concatenate(grouped[ir], axis=1) for ir in order}


def gate(x: Features, gated: Sequence[str], activation_constant: float) -> Features:
    """e3nn ``Gate`` with normalised SiLU on scalars and on gates.

    ``x["0e"]`` holds the scalars followed by one gate per channel of each gated irrep, in the order
    of ``gated``; returns the activated scalars and the gated irreps multiplied by their gates.
    """
    def activation(v):
        return activation_constant * jax.nn.silu(v)

    n_gates = sum(x[ir].shape[1] for ir in gated)
    scalars = x["0e"]
    n_scalars = scalars.shape[1] - n_gates
    out = {"0e": activation(scalars[:, :n_scalars])}
    gates = activation(scalars[:, n_scalars:])
    offset = 0
    for ir in gated:
        mul = x[ir].shape[1]
        out[ir] = x[ir] * gates[:, offset : offset + mul]
        offset += mul
    return out


def add_features(x: Features, y: Features) -> Features:
    """x + y irrep by irrep; irreps missing from ``y`` count as zero."""
    return {ir: x[ir] + y[ir] if ir in y else x[ir] for ir in x}
