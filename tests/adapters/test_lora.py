"""LoRA: identity at initialisation, per-element low-rank layout, E(3) equivariance of any update."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from common import evaluate_with_params, random_rotation

from equitrain_jax.adapters import LoRAWeight, leaf_paths, lora


def randomise(adapters, seed, scale=0.3):
    """Every factor B replaced by normal noise, so that every ΔW is non-zero."""
    leaves, treedef = jax.tree_util.tree_flatten(adapters, is_leaf=lambda x: isinstance(x, LoRAWeight))
    rng = np.random.default_rng(seed)
    leaves = [w.replace(b=scale * rng.normal(size=w.b.shape)) for w in leaves]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def test_merge_at_init_is_bit_identical(bundle, potential, alloy):
    params = bundle.variables["params"]
    adapters = lora.init(params, rank=4, alpha=8.0, key=jax.random.PRNGKey(1))
    merged = lora.merge(params, adapters)
    for path, base, new in zip(leaf_paths(params), jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(merged)):
        assert np.asarray(new).dtype == np.float64
        assert np.asarray(base).tobytes() == np.asarray(new).tobytes(), path
    base_out, merged_out = evaluate_with_params(potential, params, alloy), evaluate_with_params(potential, merged, alloy)
    assert base_out["energy"] == merged_out["energy"]
    np.testing.assert_array_equal(base_out["forces"], merged_out["forces"])


def test_default_targets_and_layouts(bundle):
    params = bundle.variables["params"]
    adapters = lora.init(params, rank=4)
    paths = leaf_paths(adapters)
    assert not any(p.startswith("node_embedding") for p in paths)
    for prefix in ("interactions_0.radial_mlp.layer_0", "interactions_1.skip_tp.0e", "products_0.linear.1o",
                   "products_1.symmetric_contraction_0e.weights_3", "readouts_1.linear_2.0e"):
        assert f"{prefix}.a" in paths and f"{prefix}.b" in paths, prefix
    z = len(bundle.config.atomic_numbers)
    skip = adapters["interactions_0"]["skip_tp"]["0e"]
    assert skip.a.shape == (z, 8, 4) and skip.b.shape == (z, 4, 8)
    contraction = adapters["products_0"]["symmetric_contraction_1o"]["weights_1"]  # [Z, K=1, C]
    assert contraction.a.shape == (z, 1, 1) and contraction.b.shape == (z, 1, 8)
    readout = adapters["readouts_0"]["linear"]["0e"]  # [C, 1]: rank capped at 1
    assert readout.a.shape == (8, 1) and readout.b.shape == (1, 1)


def test_element_dependent_update_is_per_element(bundle):
    """ΔW[:, z, :] of the skip connection is (α/r)·A[z]·B[z], independently of other elements."""
    params = bundle.variables["params"]
    adapters = randomise(lora.init(params, rank=3, alpha=6.0, targets="*.skip_tp.*"), seed=2)
    factors = adapters["interactions_1"]["skip_tp"]["0e"]
    merged = lora.merge(params, adapters)["interactions_1"]["skip_tp"]["0e"]
    base = params["interactions_1"]["skip_tp"]["0e"]
    for z in range(base.shape[1]):
        expected = base[:, z, :] + 2.0 * np.asarray(factors.a[z]) @ np.asarray(factors.b[z])
        np.testing.assert_allclose(merged[:, z, :], expected, rtol=1e-13, atol=1e-13)


def test_random_update_keeps_e3_equivariance(bundle, potential, alloy):
    """With non-zero A and B on every weight (embedding included) the model changes, but energies
    stay invariant and forces and stress rotate with the structure."""
    params = bundle.variables["params"]
    adapters = randomise(lora.init(params, rank=2, targets="*", key=jax.random.PRNGKey(3)), seed=4)
    merged = lora.merge(params, adapters)
    rotation = random_rotation(11)
    rotated = alloy.copy()
    rotated.positions = alloy.positions @ rotation.T
    rotated.cell = alloy.cell.array @ rotation.T
    out, out_rotated = evaluate_with_params(potential, merged, alloy), evaluate_with_params(potential, merged, rotated)
    base = evaluate_with_params(potential, params, alloy)
    assert abs(out["energy"] - base["energy"]) > 1e-2
    assert np.abs(out["forces"] - base["forces"]).max() > 1e-2
    assert out_rotated["energy"] == pytest.approx(out["energy"], rel=1e-12, abs=1e-10)
    np.testing.assert_allclose(out_rotated["forces"], out["forces"] @ rotation.T, atol=1e-10)
    np.testing.assert_allclose(out_rotated["stress"], rotation @ out["stress"] @ rotation.T, atol=1e-10)


def test_merge_then_save_and_load_round_trips(bundle, alloy, tmp_path):
    """A merged LoRA model (random non-zero factors) written by `save_model` and read back by
    `load_model` is the same tree and gives the same numbers: a plain converted-model directory."""
    from equitrain_jax.models.io import ModelBundle, load_model, save_model
    from equitrain_jax.potential import Potential

    params = bundle.variables["params"]
    merged = lora.merge(params, randomise(lora.init(params, rank=2, key=jax.random.PRNGKey(2)), seed=3))
    variables = {**bundle.variables, "params": jax.tree_util.tree_map(np.asarray, merged)}
    save_model(tmp_path / "merged", bundle.config, variables)
    loaded = load_model(tmp_path / "merged")
    assert loaded.config == bundle.config
    assert leaf_paths(loaded.variables) == leaf_paths(variables)
    for a, b in zip(jax.tree_util.tree_leaves(loaded.variables), jax.tree_util.tree_leaves(variables)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    (direct,) = Potential(ModelBundle(bundle.config, variables)).evaluate([alloy])
    (reloaded,) = Potential(tmp_path / "merged").evaluate([alloy])
    assert direct["energy"] == reloaded["energy"]
    assert not np.allclose(direct["forces"], Potential(bundle).evaluate([alloy])[0]["forces"])  # LoRA changed it


def test_vectors_and_scalars_stay_frozen():
    """Biases, LayerNorm parameters and the α, β of MACE-MH-1's non-linear blocks have no low-rank
    form: the default targets skip them; targets that match nothing else are refused."""
    rng = np.random.default_rng(0)
    params = {"interactions_0": {"alpha": np.float64(1.3), "radial_mlp": {
        "layer_0": {"kernel": rng.normal(size=(8, 16)), "bias": rng.normal(size=16)},
        "norm_0": {"scale": rng.normal(size=16), "bias": rng.normal(size=16)}}}}
    assert leaf_paths(lora.init(params, rank=2)) == [
        "interactions_0.radial_mlp.layer_0.kernel.a", "interactions_0.radial_mlp.layer_0.kernel.b"]
    with pytest.raises(ValueError, match=r"LoRA targets \['\*\.norm_0\.\*', '\*\.alpha'\] match only vectors"):
        lora.init(params, targets=("*.norm_0.*", "*.alpha"))
