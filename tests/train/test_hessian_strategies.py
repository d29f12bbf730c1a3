"""The Hessian term under the strategies not covered in test_hessian_step.py (L2-SP delta,
multi-head replay, scratch), and the sequential (rematerialised) Hessian-vector products against
the vmapped ones.  A tiny MACE in float64 and EMT phonons of fcc Al (2×2×2 primitive, 8 atoms)."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from ase.calculators.emt import EMT

from equitrain_jax.adapters import leaf_paths, masked_optimizer
from equitrain_jax.data import device_arrays, pad_to_bucket
from equitrain_jax.train import labelled_batches
from equitrain_jax.train.config import FinetuneConfig, HessianLossConfig, LossConfig
from equitrain_jax.train.finetune import phonon_references
from equitrain_jax.train.phonon_data import PhononBatches, phonon_graph
from equitrain_jax.train.step import StepBatch, make_train_step
from equitrain_jax.train.strategies import StrategyInputs, build_strategy, with_new_head

from common import ALLOY_ELEMENTS as ELEMENTS, emt_cells

from .phonon_references import aluminium, finite_displacement_phonopy
from .test_hessian_step import assert_same_term_and_gradient


@pytest.fixture(scope="module")
def aluminium_item():
    """EMT phonons of fcc Al (phonopy finite displacements, 8-atom supercell) as a phonon item."""
    return phonon_references([finite_displacement_phonopy(aluminium(), np.diag([2, 2, 2]), EMT)])[0][0]


def phonon_batch(bundle, item, directions, head=0, seed=0):
    graph = phonon_graph(item, bundle.config.r_max, ELEMENTS, head)
    return PhononBatches([item], [graph], 1, directions, "random", seed, 1, np.float64).batch(0, 1, 0)


def leaves_bytes(tree):
    return [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.slow
def test_sequential_products_give_the_loss_and_gradient_of_the_vmapped_ones(tiny_bundle, aluminium_item):
    """K = 3 directions, all weights trained, the Hessian term alone: one step of SGD with rate 1
    moves the weights by minus the gradient; computing the products one after another with
    rematerialisation gives the vmapped step's loss and gradient to rounding (1e-12)."""
    batch = StepBatch(None, phonon_batch(tiny_bundle, aluminium_item, 3))
    assert_same_term_and_gradient(tiny_bundle, batch, "hessian", [
        {"hessian_config": HessianLossConfig(kind="mse", directions=3, sequential=sequential)} for sequential in (False, True)
    ])


def test_sequential_must_be_a_bool():
    with pytest.raises(ValueError, match="sequential"):
        HessianLossConfig(sequential="yes")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["delta", "multihead", "scratch"])
def test_hessian_term_trains_under_delta_multihead_and_scratch(tiny_bundle, aluminium_item, strategy):
    """Ten Adam steps on two structures and the Al phonon item (fixed directions, Hessian weight
    10) under each strategy as `finetune` builds it: the Hessian term falls by more than a
    fifth.
    Delta adapts the interaction blocks only: every other weight comes out bit for bit as it went
    in.  Multi-head: the phonon item and structures train the new head while two replay
    structures train the pretrained one, in the same step."""
    bundle, head, replay_head = tiny_bundle, 0, None
    config = FinetuneConfig(strategy=strategy, targets=("interactions.*",) if strategy == "delta" else None)
    if strategy == "multihead":
        bundle = with_new_head(bundle, config.new_head, 0)
        replay_head, head = 0, len(bundle.config.heads) - 1
    cells = emt_cells(4 if replay_head is not None else 2, seed=71)
    heads = [head, head] + ([replay_head] * 2 if replay_head is not None else [])
    structures = labelled_batches(cells, bundle.config.r_max, ELEMENTS, batch_size=len(cells), head=heads)[0]
    phonons = phonon_batch(bundle, aluminium_item, 2, head=head)
    example = device_arrays(pad_to_bucket(phonon_graph(aluminium_item, bundle.config.r_max, ELEMENTS, head)))
    built = build_strategy(StrategyInputs(bundle.variables, bundle.config, example, jax.random.PRNGKey(3), np.float64),
                           config)
    optimizer = optax.adam(5e-2)
    if built.labels is not None:
        optimizer = masked_optimizer(optimizer, built.labels)
    step = make_train_step(bundle.module(np.float64), built.merge, optimizer, LossConfig(kind="mse"), built.penalty,
                           HessianLossConfig(kind="mse", weight=10.0, directions=2))
    trainable = jax.device_put(built.trainable)
    opt_state = optimizer.init(trainable)
    hessian = []
    for _ in range(10):
        trainable, opt_state, metrics = step(trainable, built.frozen, opt_state, StepBatch(structures, phonons))
        hessian.append(float(metrics["hessian"]))
    assert hessian[-1] < 0.8 * hessian[0], hessian
    if strategy == "delta":
        assert float(metrics["penalty"]) > 0
        before = built.merge(built.trainable, built.frozen)["params"]
        after = built.merge(trainable, built.frozen)["params"]
        paths = leaf_paths(before)
        moved = [p for p, a, b in zip(paths, leaves_bytes(before), leaves_bytes(after)) if a != b]
        assert moved and all(p.startswith("interactions") for p in moved), moved
        assert len(moved) < len(paths)
