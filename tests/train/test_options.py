"""The optimiser options against their definitions (closed-form schedules; AdamW's update and
gradient clipping by hand), settings that check themselves when built, and one vocabulary:
the strategy registry, the command line's choices and its defaults are the library's."""

from __future__ import annotations

import argparse
import dataclasses
import math

import jax
import numpy as np
import pytest

from equitrain_jax.adapters import delta_finetune, l2sp_finetune
from equitrain_jax.cli import finetune as finetune_command
from equitrain_jax.potential import enable_float64
from equitrain_jax.train.config import (
    E0_CHOICES,
    FINETUNE_DTYPE,
    LOSS_KINDS,
    SCHEDULES,
    STRATEGIES,
    FinetuneConfig,
    LossConfig,
    TrainConfig,
)
from equitrain_jax.train.loop import adamw, learning_rate_schedule
from equitrain_jax.train.strategies import REGISTRY

EPS = 1e-8  # optax.adamw's default ε


def cosine_with_warmup(step: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """Linear warm-up from 0 over the warm-up epochs, then cosine decay to the minimum at the end."""
    warmup, total = config.warmup_epochs * steps_per_epoch, config.epochs * steps_per_epoch
    if step < warmup:
        return config.learning_rate * step / warmup
    progress = (step - warmup) / (total - warmup)
    low = config.min_learning_rate
    return low + (config.learning_rate - low) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("warmup", [0, 2])
def test_cosine_schedule_with_warmup_is_the_closed_form(warmup):
    config = TrainConfig(epochs=10, learning_rate=1e-2, min_learning_rate=1e-4, schedule="cosine", warmup_epochs=warmup)
    schedule = learning_rate_schedule(config, steps_per_epoch=3)
    for step in range(31):
        np.testing.assert_allclose(float(schedule(step)), cosine_with_warmup(step, config, 3), rtol=1e-6,
                                   atol=1e-6 * config.learning_rate)  # float32 rounding of the peak rate


def test_warmup_then_constant():
    schedule = learning_rate_schedule(TrainConfig(learning_rate=0.3, warmup_epochs=2), steps_per_epoch=5)
    np.testing.assert_allclose([float(schedule(s)) for s in range(13)], [0.3 * min(s / 10, 1) for s in range(13)],
                               rtol=1e-6)


def first_update(clip_norm, weight_decay=0.0):
    enable_float64()  # as every model test: float32 bias corrections would differ by 1e-5
    params, grads = {"w": np.array([1.0, -2.0])}, {"w": np.array([3.0, 4.0])}  # |g| = 5
    optimizer = adamw(0.1, weight_decay, clip_norm)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return np.asarray(updates["w"])


def test_clip_norm_scales_the_gradient_before_adam():
    """Adam's first step is −lr·ĝ/(|ĝ|+ε) with ĝ the clipped gradient: clipping |g| = 5 to 5e-8
    brings ĝ to ε's scale (−0.1·[0.75, 0.8]); a clip above |g| changes nothing."""
    adam = -0.1 * np.array([3 / (3 + EPS), 4 / (4 + EPS)])
    np.testing.assert_allclose(first_update(None), adam, rtol=1e-12)
    np.testing.assert_allclose(first_update(10.0), adam, rtol=1e-12)
    np.testing.assert_allclose(first_update(5e-8), -0.1 * np.array([0.75, 0.8]), rtol=1e-9)


def test_weight_decay_is_decoupled():
    """AdamW: the update adds −lr·λ·w to Adam's (Loshchilov & Hutter)."""
    adam = -0.1 * np.array([3 / (3 + EPS), 4 / (4 + EPS)])
    np.testing.assert_allclose(first_update(None, weight_decay=0.3), adam - 0.1 * 0.3 * np.array([1.0, -2.0]), rtol=1e-12)


def test_settings_check_themselves_when_built():
    for build, bad in ((TrainConfig, {"learning_rate": 0.0}), (TrainConfig, {"clip_norm": -1.0}),
                       (TrainConfig, {"warmup_epochs": -1}), (LossConfig, {"huber_delta": 0.0}),
                       (LossConfig, {"kind": "l3"}), (FinetuneConfig, {"strategy": "l2sp"}),
                       (FinetuneConfig, {"dtype": "float16"}), (FinetuneConfig, {"batch_size": 0})):
        with pytest.raises(ValueError, match=next(iter(bad))):
            build(**bad)


def test_one_vocabulary_for_strategies_choices_and_defaults():
    """The registry builds exactly the named strategies; the command line offers exactly the
    library's choices, and each of its defaults is the library's."""
    assert set(REGISTRY) == set(STRATEGIES)
    assert l2sp_finetune is delta_finetune
    sub = argparse.ArgumentParser().add_subparsers()
    finetune_command.add_parser(sub)
    parser = sub.choices["finetune"]
    actions = {a.dest: a for a in parser._actions}
    assert list(actions["strategy"].choices) == list(STRATEGIES)
    assert tuple(actions["schedule"].choices) == SCHEDULES and tuple(actions["loss"].choices) == LOSS_KINDS
    assert tuple(actions["e0s"].choices) == E0_CHOICES
    args = parser.parse_args(["--model", "m", "--train", "t", "-o", "o"])
    defaults = {**dataclasses.asdict(TrainConfig()), **dataclasses.asdict(LossConfig()), **dataclasses.asdict(FinetuneConfig())}
    option_dest = {option: option.split()[0].lstrip("-").replace("-", "_") for option in finetune_command.OPTIONS.values()}
    for field, option in finetune_command.OPTIONS.items():
        if field in defaults and " " not in option:
            assert getattr(args, option_dest[option]) == defaults[field], option
    assert tuple(args.weights) == (LossConfig().energy_weight, LossConfig().forces_weight, LossConfig().stress_weight)
    assert args.dtype == FinetuneConfig().dtype == FINETUNE_DTYPE


def test_delta_strategy_carries_its_l2sp_penalty():
    variables = {"params": {"layer": {"w": np.ones((2, 3))}}, "constants": {}}
    strategy = delta_finetune(variables, ("layer.*",), l2sp_weight=0.25)
    deltas = jax.tree_util.tree_map(lambda d: d + 2.0, strategy.trainable)
    np.testing.assert_allclose(float(strategy.penalty(deltas)), 0.25 * 6 * 4.0)
    assert delta_finetune(variables, ("layer.*",)).penalty is None
