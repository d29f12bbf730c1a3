"""MACE's two heavy operations through cuEquivariance (NVIDIA's ``cuequivariance-jax``): the edge
convolution (channel-wise tensor product summed into the receivers) and the symmetric contraction.

Same inputs, weights and outputs as `equitrain_jax.models.equivariant.convolution_messages` and
`equitrain_jax.models.mace.maths.symmetric_contraction`, so the parameter tree is the same on both
backends.  Each operation is written as one segmented polynomial whose segments are the channel
vectors of one irrep component (uniform shape ``[C]``, what the ``uniform_1d`` CUDA kernel needs);
``segmented_polynomial`` carries JVP and transpose rules, so forces, stress, Hessian-vector products
and higher derivatives go through the kernels too.  On CPU the polynomials run as plain JAX
(``method="naive"``).
"""

from __future__ import annotations

import functools
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from equitrain_jax.models.equivariant import ConvolutionPath, Features, clebsch_gordan, irrep

METHODS = ("naive", "uniform_1d")
"""``segmented_polynomial`` methods: plain JAX (any platform) or the CUDA kernel (GPU only)."""
EXTRA = "cueq"
"""The optional dependency group that installs cuequivariance-jax."""


def require():
    """The ``cuequivariance`` and ``cuequivariance_jax`` modules; ImportError naming the extra if absent."""
    try:
        import cuequivariance as cue
        import cuequivariance_jax as cuex
    except ImportError as error:
        raise ImportError(
            f"the cuequivariance backend needs cuequivariance-jax (>= 0.13), which is not installed "
            f"({error}); install it with: pip install 'equitrain-jax[{EXTRA}]'"
        ) from None
    return cue, cuex


def default_method() -> str:
    """``"uniform_1d"`` when JAX runs on a CUDA GPU, ``"naive"`` elsewhere."""
    return "uniform_1d" if jax.default_backend() in ("gpu", "cuda") else "naive"


def _uniform_channels(widths: Sequence[int]) -> int:
    if len(set(widths)) != 1:
        raise ValueError(f"the cuequivariance backend needs one multiplicity for every irrep, got {sorted(set(widths))}")
    return widths[0]


@functools.lru_cache(maxsize=None)
def convolution_polynomial(paths: tuple[ConvolutionPath, ...], channels: int, max_ell: int):
    """Segmented polynomial (weights [P·C], x [D_in·C], Y [(max_ell+1)²]) → messages [Σ_p (2l_p+1)·C].

    x and the messages are component-major (``[component, channel]``); the messages hold, in path
    order, one block ``[2l+1, C]`` per path."""
    cue, _ = require()
    stp = cue.SegmentedTensorProduct.from_subscripts("u,u,,u")
    for _ in paths:
        stp.add_segment(0, (channels,))
    x_segment = {}
    for ir in dict.fromkeys(p.ir_in for p in paths):
        x_segment[ir] = [stp.add_segment(1, (channels,)) for _ in range(irrep(ir).dim)]
    sh_segment = {l: [stp.add_segment(2, ()) for _ in range(2 * l + 1)] for l in range(max_ell + 1)}
    for p, path in enumerate(paths):
        l_in, l_out = irrep(path.ir_in).l, irrep(path.ir_out).l
        out = [stp.add_segment(3, (channels,)) for _ in range(2 * l_out + 1)]
        cg = clebsch_gordan(l_in, path.l_sh, l_out)
        for i, j, o in zip(*np.nonzero(np.abs(cg) > 1e-14)):
            stp.add_path(p, x_segment[path.ir_in][i], sh_segment[path.l_sh][j], out[o], c=float(cg[i, j, o]))
    return cue.SegmentedPolynomial.eval_last_operand(stp)


def convolution_messages(
    x: Features,
    senders: jnp.ndarray,
    sh: Mapping[int, jnp.ndarray],
    weights: jnp.ndarray,
    paths: Sequence[ConvolutionPath],
    method: str,
) -> Features:
    """`equitrain_jax.models.equivariant.convolution_messages` as one cuEquivariance polynomial
    (gather by sender and sum into the receiver inside the kernel); same arguments and result."""
    _, cuex = require()
    paths = tuple(paths)
    c = _uniform_channels([x[p.ir_in].shape[1] for p in paths])
    max_ell = max(sh)
    polynomial = convolution_polynomial(paths, c, max_ell)
    n = next(iter(x.values())).shape[0]
    receivers = jnp.repeat(jnp.arange(n, dtype=senders.dtype), senders.shape[0] // n, total_repeat_length=senders.shape[0])
    x_flat = jnp.concatenate([x[ir].transpose(0, 2, 1).reshape(n, -1) for ir in dict.fromkeys(p.ir_in for p in paths)], axis=1)
    sh_flat = jnp.concatenate([sh[l] for l in range(max_ell + 1)], axis=1).astype(weights.dtype)
    [out] = cuex.segmented_polynomial(
        polynomial,
        [weights, x_flat, sh_flat],
        [jax.ShapeDtypeStruct((n, polynomial.outputs[0].size), weights.dtype)],
        indices=[None, senders, None, receivers],
        method=method,
    )
    grouped: dict[str, list[jnp.ndarray]] = {}
    offset = 0
    for path in paths:
        dim = irrep(path.ir_out).dim
        block = out[:, offset : offset + dim * c].reshape(n, dim, c).transpose(0, 2, 1)
        grouped.setdefault(path.ir_out, []).append(block)
        offset += dim * c
    return {name: jnp.concatenate(blocks, axis=1) for name, blocks in grouped.items()}


@functools.lru_cache(maxsize=None)
def contraction_polynomial(monomials: tuple[tuple[tuple[int, ...], ...], ...], dim_in: int, dim_out: int, channels: int):
    """Segmented polynomial (coupled weights [S·C], x [D·C]) → [M·C] of a symmetric contraction.

    ``monomials[ν−1]`` are the index tuples (i1 ≤ … ≤ iν) of degree ν; the coupled weights hold one
    ``[C]`` segment per (degree, monomial, output component) in that order: the weights already
    contracted with the coupling coefficients (see `symmetric_contraction`)."""
    cue, _ = require()
    n_segments = sum(len(t) for t in monomials) * dim_out
    operations = []
    offset = 0
    for index in monomials:
        nu = len(index[0]) if index else 0
        if not nu:
            continue
        stp = cue.SegmentedTensorProduct.from_subscripts(",".join(["u"] * (nu + 2)))
        for _ in range(n_segments):
            stp.add_segment(0, (channels,))
        for _ in range(dim_in):
            stp.add_segment(1, (channels,))
        for _ in range(dim_out):
            stp.add_segment(nu + 1, (channels,))
        for operand in range(2, nu + 1):  # the repeated x operand: same segments
            for _ in range(dim_in):
                stp.add_segment(operand, (channels,))
        for t, factors in enumerate(index):
            for m in range(dim_out):
                stp.add_path(offset + t * dim_out + m, *factors, m, c=1.0)
        offset += len(index) * dim_out
        operations.append((cue.Operation((0,) + (1,) * nu + (2,)), stp))
    return cue.SegmentedPolynomial(
        [operations[0][1].operands[0], operations[0][1].operands[1]], [operations[0][1].operands[-1]], operations
    )


def symmetric_contraction(
    x: jnp.ndarray,
    species: jnp.ndarray,
    weights: Sequence[jnp.ndarray],
    monomials: Sequence[jnp.ndarray],
    couplings: Sequence[jnp.ndarray],
    pattern: Sequence[np.ndarray],
    method: str,
) -> jnp.ndarray:
    """`equitrain_jax.models.mace.maths.symmetric_contraction` as one cuEquivariance polynomial.

    The polynomial's sparsity must be known when tracing, so it is built from ``pattern`` (the
    monomials of the architecture's own U matrices, numpy); the stored ``monomials`` must equal it
    (they do whenever the stored U matrices span the same couplings) — a model whose stored
    monomials differ gives NaN rather than wrong numbers.  The weights are first contracted with
    the stored couplings, per species: ``W'[z, t, m, c] = Σ_k U[t, m, k] W[z, k, c]``.
    Shapes as in `maths.symmetric_contraction`; returns ``[n, C, M]``.
    """
    _, cuex = require()
    n, c, d = x.shape
    for stored, expected in zip(monomials, pattern):
        if stored.shape != expected.shape:
            raise ValueError(
                f"the stored symmetric-contraction coupling has {stored.shape[0]} monomials of degree "
                f"{stored.shape[1]}, the architecture {expected.shape[0]}: not supported by the cuequivariance backend"
            )
    m = couplings[0].shape[1]
    coupled = jnp.concatenate(
        [jnp.einsum("tmk,zkc->ztmc", u, w).reshape(w.shape[0], -1) for u, w in zip(couplings, weights)], axis=1
    )
    polynomial = contraction_polynomial(tuple(tuple(map(tuple, p.tolist())) for p in pattern), d, m, c)
    [out] = cuex.segmented_polynomial(
        polynomial,
        [coupled, x.transpose(0, 2, 1).reshape(n, d * c)],
        [jax.ShapeDtypeStruct((n, m * c), x.dtype)],
        indices=[species, None, None],
        method=method,
    )
    same = functools.reduce(jnp.logical_and, [jnp.all(s == jnp.asarray(p)) for s, p in zip(monomials, pattern)])
    return jnp.where(same, out.reshape(n, m, c).transpose(0, 2, 1), jnp.nan)


def resolve_method(method: Optional[str]) -> str:
    """The requested method, or `default_method` for None."""
    return default_method() if method is None else method
