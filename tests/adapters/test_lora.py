"""LoRA: identity at initialisation, per-element low-rank layout, E(3) equivariance of any update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
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


def element_axis_of(path: str):
    """Where the element axis sits in a weight of the adapter tests' MACE models: 1 in the skip
    connections [C_in, Z, C_out], 0 in symmetric-contraction weights [Z, K, C] and in the node
    embedding [Z, C]; None elsewhere."""
    if ".skip_tp." in path:
        return 1
    return 0 if ".symmetric_contraction_" in path or path == "node_embedding" else None


def assert_absent_untouched(merged: dict, base: dict, absent: list) -> None:
    """The ``absent`` elements' maps of every element-dependent weight of ``merged`` are bit for
    bit those of ``base`` (both flat: dotted path → array)."""
    for path, weight in base.items():
        axis = element_axis_of(path)
        if axis is not None:
            assert np.take(merged[path], absent, axis=axis).tobytes() == np.take(weight, absent, axis=axis).tobytes(), path


def flat(params) -> dict:
    return {p: np.asarray(w) for p, w in zip(leaf_paths(params), jax.tree_util.tree_leaves(params))}


def test_factors_for_the_data_elements_merge_as_the_full_factors_with_zero_absent_rows(bundle):
    """LoRA on every weight of the Al/Ni/Cu model (embedding included) with factors for Ni and Cu
    only, B randomised: the Al maps are the base ones bit for bit, and the merged model is that of
    factors for all elements whose A draws are the same and whose Al rows of B are zero
    (element-dependent weights: B[Al] = 0; embedding: the rows of A, since its B is shared)."""
    params = bundle.variables["params"]
    key = jax.random.PRNGKey(7)
    subset = randomise(lora.init(params, rank=2, targets="*", key=key, elements=(2, 1, 2)), seed=8)
    full = lora.init(params, rank=2, targets="*", key=key)

    def with_zero_al_rows(small: LoRAWeight, large: LoRAWeight) -> LoRAWeight:
        if small.elements is None:  # no element axis
            return small
        assert small.elements == (1, 2) and np.asarray(small.a).tobytes() == np.asarray(large.a[1:]).tobytes()
        if large.a.ndim == 3:  # one factor pair per element
            return large.replace(b=jnp.zeros_like(large.b).at[1:].set(small.b))
        return large.replace(a=large.a.at[0].set(0.0), b=small.b)  # embedding: rows of A, shared B

    is_lora = lambda x: isinstance(x, LoRAWeight)  # noqa: E731
    leaves, treedef = jax.tree_util.tree_flatten(full, is_leaf=is_lora)
    small_leaves = jax.tree_util.tree_leaves(subset, is_leaf=is_lora)
    padded = [with_zero_al_rows(small, large) for small, large in zip(small_leaves, leaves)]
    reference = flat(lora.merge(params, jax.tree_util.tree_unflatten(treedef, padded)))
    merged, base = flat(lora.merge(params, subset)), flat(params)
    assert_absent_untouched(merged, base, absent=[0])
    for path in base:
        np.testing.assert_allclose(merged[path], reference[path], rtol=1e-14, atol=1e-15, err_msg=path)
        assert not np.array_equal(merged[path], base[path]), path  # premise: every weight moved


@pytest.mark.slow
def test_factors_for_the_data_elements_train_as_the_full_factors_and_keep_absent_elements(tiny):
    """A 3-element (Al, Ni, Cu) tiny MACE, LoRA on every weight (embedding included), three AdamW
    steps (weight decay 0.1) on Cu cells, float64, once with factors for all elements and once for
    Cu only (same key).  Cu-only: the absent Al and Ni maps of every element-dependent weight are
    bit for bit the pretrained ones; every Cu map and every other weight equals the full-Z run's to
    rounding.  (Full-Z, the shared B of the embedding moves the absent rows too.)"""
    import optax
    from cli.conftest import emt_copper

    from equitrain_jax.adapters import lora_finetune
    from equitrain_jax.data import element_indices
    from equitrain_jax.train import labelled_batches, make_train_step

    bundle = tiny
    cells = emt_copper(2, seed=3)
    elements = element_indices(np.concatenate([a.numbers for a in cells]), bundle.config.atomic_numbers)
    assert elements == (2,)
    (batch,) = labelled_batches(cells, bundle.config.r_max, bundle.config.atomic_numbers, batch_size=2)
    module = bundle.module(np.float64)
    base = flat(bundle.variables["params"])
    merged = {}
    for name, subset in (("all", None), ("Cu", elements)):
        strategy = lora_finetune(bundle.variables, rank=2, targets="*", key=jax.random.PRNGKey(4), elements=subset)
        tx = optax.adamw(1e-2, weight_decay=0.1)
        step = make_train_step(module, strategy.merge, tx)
        trainable, opt_state = strategy.trainable, tx.init(strategy.trainable)
        for _ in range(3):
            trainable, opt_state, _ = step(trainable, strategy.frozen, opt_state, batch)
        merged[name] = flat(strategy.merge(trainable, strategy.frozen)["params"])
        if subset:
            skip = strategy.trainable["interactions_0"]["skip_tp"]["0e"]
            assert skip.a.shape == (1, 4, 2) and skip.b.shape == (1, 2, 4)
            assert strategy.trainable["node_embedding"].a.shape == (1, 2)

    assert_absent_untouched(merged["Cu"], base, absent=[0, 1])
    for path, weight in base.items():
        axis = element_axis_of(path)
        cu = merged["Cu"][path] if axis is None else np.take(merged["Cu"][path], [2], axis=axis)
        reference = merged["all"][path] if axis is None else np.take(merged["all"][path], [2], axis=axis)
        np.testing.assert_allclose(cu, reference, rtol=1e-11, atol=1e-14, err_msg=path)
        assert np.abs(cu - (weight if axis is None else np.take(weight, [2], axis=axis))).max() > 1e-4, path
    assert np.abs(merged["all"]["node_embedding"][:2] - base["node_embedding"][:2]).max() > 1e-4


def test_trained_numbers_follow_the_data_elements(bundle):
    """Default targets of the Al/Ni/Cu model with Cu data only: Σ Z'·r·(m + n) over the
    element-dependent weights (Z' = 1) plus r·(m + n) over the 2-D ones, r = min(rank, m, n),
    counted by hand from the weights' shapes (with all elements it would be 3·r·(m + n) for the
    former); an element position beyond Z is refused."""
    params = bundle.variables["params"]
    rank, expected = 2, 0
    for path, weight in flat(params).items():
        if path == "node_embedding":  # not a default target
            continue
        shape, axis = list(weight.shape), element_axis_of(path)
        if axis is not None:
            del shape[axis]
        m, n = shape
        expected += min(rank, m, n) * (m + n)
    adapters = lora.init(params, rank=rank, elements=(2,))
    assert sum(np.size(x) for x in jax.tree_util.tree_leaves(adapters)) == expected
    with pytest.raises(ValueError, match=r"element position 3 is outside the 3 elements of interactions_0.skip_tp.0e"):
        lora.init(params, rank=rank, elements=(0, 3))
