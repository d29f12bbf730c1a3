"""NequIP-style interaction maths (as SevenNet builds it) as pure functions of arrays and weights;
the edge convolution itself is `equivariant.convolution_messages`.

Features are dicts irrep → ``[n, channels, 2l+1]`` as in `equivariant`, but the multiplicity may
differ between irreps (SevenNet-0: 128x0e+64x1e+32x2e).  All irreps are even: SevenNet without
parity treats the spherical harmonics of the edge as even irreps, so l_out runs over
|l_in − l_sh| … l_in + l_sh without a parity rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

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


def gate(x: Features, gated: Sequence[str], activation_constant: float) -> Features:
    """e3nn ``Gate`` with normalised SiLU on scalars and on gates (`equivariant.gate_with`)."""

    def activation(v):
        return activation_constant * jax.nn.silu(v)

    return eq.gate_with(x, gated, activation, activation)


def add_features(x: Features, y: Features) -> Features:
    """x + y irrep by irrep; irreps missing from ``y`` count as zero."""
    return {ir: x[ir] + y[ir] if ir in y else x[ir] for ir in x}
