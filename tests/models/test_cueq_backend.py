"""The cuequivariance backend (``backend="cuequivariance"``, method "naive" on CPU) against the e3nn
path it replaces, in float64: MACE's edge convolution and symmetric contraction with their first and
second derivatives (default run), then whole converted models — energies, forces, stress, Hessian-
vector and third-order products, and a LoRA training step on the same parameter tree (slow).
The e3nn path is itself parity-tested against mace-torch (tests/models/test_parity.py)."""

from __future__ import annotations

import builtins
import dataclasses
import functools

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import ALLOY_ELEMENTS, ELEMENTS, alloy_bundle, assert_close, converted_bundle, emt_cells, structures
from equitrain_jax.models import equivariant as eq
from equitrain_jax.models.mace import MACEConfig, maths
from equitrain_jax.models.mace.model import u_matrix
from equitrain_jax.potential import enable_float64

RTOL = 1e-10


def test_missing_cuequivariance_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def without_cuequivariance(name, *args, **kwargs):
        if name.startswith("cuequivariance"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_cuequivariance)
    config = MACEConfig(atomic_numbers=(1, 8), r_max=5.0)
    with pytest.raises(ImportError, match=r"pip install 'equitrain-jax\[cueq\]'"):
        config.with_backend("cuequivariance")


def test_backend_settings_are_validated():
    config = MACEConfig(atomic_numbers=(1, 8), r_max=5.0)
    with pytest.raises(ValueError, match="backend 'torch' not in"):
        config.with_backend("torch")
    with pytest.raises(ValueError, match="cueq_method 'uniform_1d' needs backend 'cuequivariance'"):
        dataclasses.replace(config, cueq_method="uniform_1d")
    from equitrain_jax.models.sevennet import SevenNetConfig

    sevennet = SevenNetConfig(atomic_numbers=(1, 8), node_irreps=("4x0e", "4x0e"), conv_denominators=(1.0,),
                              scale=(1.0, 1.0), shift=(0.0, 0.0))
    assert sevennet.with_backend("e3nn") is sevennet
    with pytest.raises(ValueError, match="only the 'e3nn' backend"):
        sevennet.with_backend("cuequivariance")


def test_command_line_backend_is_checked_before_loading(tmp_path, monkeypatch):
    """``--backend cuequivariance`` is refused (exit status 2 through ValueError) for a SevenNet
    model directory and, for a MACE one, when cuequivariance-jax is not installed."""
    import importlib.util
    import json

    from equitrain_jax.cli import checks

    for name, fmt in (("mace", "equitrain-jax/mace"), ("sevennet", "equitrain-jax/sevennet")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"format": fmt}))
    checks.backend(None, tmp_path / "sevennet")
    checks.backend("e3nn", tmp_path / "sevennet")
    with pytest.raises(ValueError, match="holds a equitrain-jax/sevennet model; only MACE models"):
        checks.backend("cuequivariance", tmp_path / "sevennet")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("cuequivariance") else real_find_spec(name, *a))
    with pytest.raises(ValueError, match=r"needs cuequivariance-jax, which is not installed: pip install 'equitrain-jax\[cueq\]'"):
        checks.backend("cuequivariance", tmp_path / "mace")


def _relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-300))


def _value_gradient_second(score, args, tangents):
    """score(*args), its gradient and the derivative of the gradient along ``tangents``: one jit."""
    gradient = jax.grad(score, argnums=tuple(range(len(args))))

    @jax.jit
    def all_three(*args):
        return score(*args), gradient(*args), jax.jvp(gradient, args, tangents)[1]

    return jax.tree_util.tree_leaves(all_three(*args))


def _assert_same_derivatives(kernel, reference, args, rng):
    tangents = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(size=a.shape)), args)
    actual = _value_gradient_second(kernel, args, tangents)
    expected = _value_gradient_second(reference, args, tangents)
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        assert _relative_error(a, b) < RTOL


def test_convolution_and_its_derivatives_match_e3nn():
    """Messages of 5 nodes x 3 neighbours (4x0e+4x1o ⊗ Y_0,1 → 0e, 1o, 1e) projected on a random
    probe, its gradient with respect to features, edge vectors and weights, and the derivative of
    that gradient along random tangents (a Hessian-vector product)."""
    pytest.importorskip("cuequivariance_jax")
    from equitrain_jax.models.mace import cueq

    enable_float64()
    rng = np.random.default_rng(0)
    n, k, c, max_ell = 5, 3, 4, 1
    paths, into = maths.convolution_layout(((c, "0e"), (c, "1o")), max_ell, ("0e", "1o", "1e"))
    x = {ir: jnp.asarray(rng.normal(size=(n, c, eq.irrep(ir).dim))) for ir in ("0e", "1o")}
    senders = jnp.asarray(rng.integers(0, n, size=n * k), jnp.int32)
    vectors = jnp.asarray(rng.normal(size=(n * k, 3)))
    weights = jnp.asarray(rng.normal(size=(n * k, sum(into.values()))))
    probe = {ir: jnp.asarray(rng.normal(size=(n, into[ir], eq.irrep(ir).dim))) for ir in into}

    def score(convolve, x, vectors, weights):
        sh = {l: e3nn.spherical_harmonics(str(e3nn.Irrep(l, (-1) ** l)), vectors, True, "component").array
              for l in range(max_ell + 1)}
        out = convolve(x, senders, sh, weights, paths)
        assert set(out) == set(probe) and all(out[ir].shape == probe[ir].shape for ir in probe)
        return sum(jnp.sum(out[ir] * probe[ir]) for ir in probe)

    kernel = functools.partial(score, functools.partial(cueq.convolution_messages, method="naive"))
    _assert_same_derivatives(kernel, functools.partial(score, eq.convolution_messages), (x, vectors, weights), rng)


def test_symmetric_contraction_and_its_derivatives_match_e3nn():
    """Body order 4 (ν ≤ 3) of 0e+1o into 1o for 6 nodes of 2 species, 4 channels, projected on a
    random probe: value, gradient (features and weights) and its derivative along random tangents."""
    pytest.importorskip("cuequivariance_jax")
    from equitrain_jax.models.mace import cueq
    from equitrain_jax.models.mace.model import architecture_monomials

    enable_float64()
    rng = np.random.default_rng(1)
    irreps_in, ir_out, n, c, z = ("0e", "1o"), "1o", 6, 4, 2
    monomials, couplings, weights = [], [], []
    for nu in (1, 2, 3):
        index, coupling = maths.compress_coupling(u_matrix(irreps_in, ir_out, nu))
        monomials.append(jnp.asarray(index))
        couplings.append(jnp.asarray(coupling))
        weights.append(jnp.asarray(rng.normal(size=(z, coupling.shape[-1], c))))
    pattern = [architecture_monomials(irreps_in, ir_out, nu) for nu in (1, 2, 3)]
    x = jnp.asarray(rng.normal(size=(n, c, 4)))
    species = jnp.asarray(rng.integers(0, z, size=n), jnp.int32)
    probe = jnp.asarray(rng.normal(size=(n, c, 3)))

    def score(contract, x, weights):
        return jnp.sum(contract(x, species, weights, monomials, couplings) * probe)

    kernel = functools.partial(score, lambda *a: cueq.symmetric_contraction(*a, pattern, "naive"))
    _assert_same_derivatives(kernel, functools.partial(score, maths.symmetric_contraction), (x, weights), rng)


# ----------------------------------------------------------------------------- whole models (slow)

ARCHITECTURES = {
    "mp0a-small": dict(architecture="mp0a-small"),
    "mp0b3": dict(architecture="mp0b3"),
    "mh1": dict(architecture="mh1", channels=4),  # full symmetric-contraction basis, as released
}


def _potentials(bundle, head=None):
    from equitrain_jax.potential import Potential

    return Potential(bundle, head=head), Potential(bundle, head=head, backend="cuequivariance")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_model_outputs_match_e3nn(name):
    """Energy, forces and stress of the four test structures (molecule, isolated atom, slab,
    triclinic crystal) within 1e-10 of the e3nn path, on random mace-torch weights."""
    pytest.importorskip("cuequivariance_jax")
    pytest.importorskip("mace")
    options = dict(ARCHITECTURES[name])
    bundle = converted_bundle(options.pop("architecture"), ELEMENTS, seed=11, **{"channels": 8, **options})
    e3nn_potential, cueq_potential = _potentials(bundle, head=0)
    assert cueq_potential.config.backend == "cuequivariance" and e3nn_potential.config.backend == "e3nn"
    cells = list(structures().values())
    for atoms, expected, actual in zip(cells, e3nn_potential.evaluate(cells), cueq_potential.evaluate(cells)):
        for key in ("energy", "forces", "stress"):
            assert_close(actual[key], expected[key], f"{name} {atoms.get_chemical_formula()} {key}", rtol=RTOL)


@pytest.mark.slow
def test_hessian_and_third_order_products_match_e3nn():
    """H·v and ∂³E·v·w of the triclinic crystal (MP-0b3 architecture) along random v, w."""
    pytest.importorskip("cuequivariance_jax")
    pytest.importorskip("mace")
    from equitrain_jax.models.quantities import hessian_vector_product, third_order_product

    bundle = converted_bundle("mp0b3", ELEMENTS, seed=12)
    atoms = structures()["triclinic"]
    potentials = _potentials(bundle)
    graph = potentials[0].device_graph(potentials[0].graph(atoms))
    positions = graph.nodes["positions"]
    rng = np.random.default_rng(3)
    v, w = (jnp.asarray(np.pad(rng.normal(size=(len(atoms), 3)), ((0, positions.shape[0] - len(atoms)), (0, 0))))
            for _ in range(2))
    results = []
    for potential in potentials:
        hvp = jax.jit(functools.partial(hessian_vector_product, potential.node_energy_fn))
        third = jax.jit(functools.partial(third_order_product, potential.node_energy_fn))
        results.append((hvp(potential.variables, graph, positions, v), third(potential.variables, graph, positions, v, w)))
    (hvp_e3nn, third_e3nn), (hvp_cueq, third_cueq) = results
    assert np.abs(np.asarray(hvp_e3nn)).max() > 1e-3
    assert_close(hvp_cueq, hvp_e3nn, "H·v", rtol=RTOL)
    assert_close(third_cueq, third_e3nn, "third-order product", rtol=RTOL)


@pytest.mark.slow
def test_lora_training_step_matches_e3nn():
    """One SGD step on LoRA factors (B randomised so every factor has a gradient) of the Al/Ni/Cu
    MP-0a medium model on four EMT cells: the same loss and the same update on both backends, with
    the same parameter tree."""
    pytest.importorskip("cuequivariance_jax")
    import optax

    from equitrain_jax.adapters import LoRAWeight, lora_finetune
    from equitrain_jax.train import labelled_batches, make_train_step

    bundle = alloy_bundle(seed=5)
    strategy = lora_finetune(bundle.variables, rank=2, key=jax.random.PRNGKey(0))
    rng = np.random.default_rng(4)
    trainable = jax.tree_util.tree_map(
        lambda w: w.replace(b=0.3 * rng.normal(size=w.b.shape)), strategy.trainable,
        is_leaf=lambda x: isinstance(x, LoRAWeight),
    )
    batch = labelled_batches(emt_cells(4, seed=12), bundle.config.r_max, ALLOY_ELEMENTS, batch_size=4,
                             dtype=np.float64)[0]
    tx = optax.sgd(1e-3)  # the LoRA factors are the whole trainable tree
    steps = []
    for backend in ("e3nn", "cuequivariance"):
        module = bundle.config.with_backend(backend).module(np.float64)
        step = make_train_step(module, strategy.merge, tx)
        new, _, metrics = step(trainable, strategy.frozen, tx.init(trainable), batch)
        steps.append((float(metrics["loss"]), jax.tree_util.tree_map(lambda a, b: np.asarray(a) - np.asarray(b), new, trainable)))
    (loss_e3nn, update_e3nn), (loss_cueq, update_cueq) = steps
    assert abs(loss_cueq - loss_e3nn) <= RTOL * abs(loss_e3nn)
    leaves_e3nn, leaves_cueq = jax.tree_util.tree_leaves(update_e3nn), jax.tree_util.tree_leaves(update_cueq)
    assert jax.tree_util.tree_structure(update_e3nn) == jax.tree_util.tree_structure(update_cueq)
    assert sum(np.abs(u).max() > 0 for u in leaves_e3nn) > len(leaves_e3nn) // 2
    for a, b in zip(leaves_cueq, leaves_e3nn):
        assert_close(a, b, "LoRA update", rtol=RTOL)
