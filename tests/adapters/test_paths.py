"""Path patterns over the real parameter tree of a converted model."""

from __future__ import annotations

import pytest

from equitrain_jax.adapters import leaf_paths, matches, select
from equitrain_jax.adapters.paths import indexed_path


def test_indexed_form():
    assert indexed_path("interactions_0.linear_up.0e") == "interactions.0.linear_up.0e"
    assert indexed_path("products_1.symmetric_contraction_0e.weights_2") == "products.1.symmetric_contraction_0e.weights.2"


def test_patterns_select_the_named_weights(bundle):
    params = bundle.variables["params"]
    chosen = [p for p in leaf_paths(params) if matches(p, "interactions.*.linear*")]
    assert set(chosen) == {
        f"interactions_{i}.{layer}.{ir}"
        for i in range(2)
        for layer in ("linear", "linear_up")
        for ir in params[f"interactions_{i}"][layer]
    }
    assert leaf_paths(select(params, "interactions_1.radial_mlp.*")) == [
        f"interactions_1.radial_mlp.layer_{i}" for i in range(4)
    ]
    assert leaf_paths(select(params, "node_embedding")) == ["node_embedding"]


def test_unmatched_patterns_name_the_paths(bundle):
    with pytest.raises(ValueError, match="match no parameter.*interactions_0"):
        select(bundle.variables["params"], "interaction.*.lin*")
