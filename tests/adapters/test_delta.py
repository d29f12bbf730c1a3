"""L2-SP residuals: zero at init, quadratic penalty, gradient pulling towards the pretrained weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from equitrain_jax.adapters import delta, l2sp_penalty, leaf_paths


def test_penalty_zero_at_init_and_merge_is_identity(bundle):
    params = bundle.variables["params"]
    deltas = delta.init(params, targets=("products.*", "readouts.*"))
    assert leaf_paths(deltas) and all(p.startswith(("products_", "readouts_")) for p in leaf_paths(deltas))
    assert float(l2sp_penalty(deltas, 10.0)) == 0.0
    merged = delta.merge(params, deltas)
    for base, new in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(merged)):
        np.testing.assert_array_equal(base, new)


def test_penalty_grows_and_gradient_pulls_to_zero(bundle):
    params = bundle.variables["params"]
    rng = np.random.default_rng(0)
    deltas = jax.tree_util.tree_map(lambda d: jnp.asarray(rng.normal(size=d.shape)), delta.init(params))
    squares = sum(float(np.sum(np.asarray(d) ** 2)) for d in jax.tree_util.tree_leaves(deltas))
    np.testing.assert_allclose(float(l2sp_penalty(deltas, 0.5)), 0.5 * squares, rtol=1e-12)
    doubled = jax.tree_util.tree_map(lambda d: 2 * d, deltas)
    np.testing.assert_allclose(l2sp_penalty(doubled, 0.5), 4 * l2sp_penalty(deltas, 0.5), rtol=1e-12)
    grads = jax.jit(jax.grad(l2sp_penalty), static_argnums=1)(deltas, 0.5)
    for d, g in zip(jax.tree_util.tree_leaves(deltas), jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(g, np.asarray(d), rtol=1e-12)  # ∂(λΣδ²)/∂δ = 2λδ = δ for λ = 1/2
    stepped = jax.tree_util.tree_map(lambda d, g: d - 0.1 * g, deltas, grads)
    assert float(l2sp_penalty(stepped, 0.5)) < float(l2sp_penalty(deltas, 0.5))
