"""Baselines: full fine-tuning trains the converted weights; from scratch builds the same tree fresh."""

from __future__ import annotations

import jax
import numpy as np

from equitrain_jax.adapters import from_scratch, full_finetune, leaf_paths
from equitrain_jax.data import atoms_to_graph, padded_device_graph


def test_full_finetune_merges_to_the_given_variables(bundle):
    strategy = full_finetune(bundle.variables)
    assert strategy.labels is None
    assert strategy.merge(strategy.trainable, strategy.frozen) == dict(bundle.variables)


def test_from_scratch_has_the_converted_models_weights_shapes(bundle, alloy):
    """A fresh `MACE(config).init` gives a parameter tree with the paths and shapes of the weights
    converted from mace-torch, but new values."""
    graph = padded_device_graph(atoms_to_graph(alloy, bundle.config.r_max, bundle.config.atomic_numbers))
    strategy = from_scratch(bundle.config, graph, jax.random.PRNGKey(0))
    converted = bundle.variables["params"]
    assert leaf_paths(strategy.trainable) == leaf_paths(converted)
    fresh, reference = jax.tree_util.tree_leaves(strategy.trainable), jax.tree_util.tree_leaves(converted)
    assert [w.shape for w in fresh] == [w.shape for w in reference]
    assert all(w.dtype == np.float64 for w in fresh)
    assert not np.array_equal(fresh[0], reference[0])
    assert set(strategy.frozen) == {"constants"}


def test_masked_optimizer_without_labels_is_the_base_optimizer():
    """A strategy trained whole (labels None, e.g. LoRA's) gets its optimiser's own update: one
    SGD step is −lr · gradient, computed by hand."""
    import optax

    from equitrain_jax.adapters import masked_optimizer

    params = {"a": np.array([1.0, -2.0]), "b": {"c": np.array(3.0)}}
    grads = {"a": np.array([0.5, 0.25]), "b": {"c": np.array(-1.0)}}
    tx = masked_optimizer(optax.sgd(0.1), None)
    updates, _ = tx.update(grads, tx.init(params), params)
    for got, grad in zip(jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(got, -0.1 * grad, rtol=0, atol=1e-15)
