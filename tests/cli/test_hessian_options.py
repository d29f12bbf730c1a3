"""The Hessian and third-order terms' products are computed one after another unless the command
line says otherwise (the sequential step was the faster and smaller one in benchmarks/hessian_step.py)."""

from equitrain_jax.cli import parser
import pytest

from equitrain_jax.train.config import HessianLossConfig, ThirdOrderLossConfig

BASE = ["finetune", "--model", "base", "--phonons", "ref.yaml", "-o", "out"]


def test_sequential_products_by_default_and_vmapped_on_request():
    assert HessianLossConfig().sequential is True
    assert parser().parse_args(BASE).hessian_sequential is True
    assert parser().parse_args(BASE + ["--no-hessian-sequential"]).hessian_sequential is False
    assert parser().parse_args(BASE + ["--hessian-sequential"]).hessian_sequential is True


def test_third_order_products_sequential_by_default_and_vmapped_on_request():
    assert ThirdOrderLossConfig().sequential is True
    assert parser().parse_args(BASE).third_order_sequential is True
    assert parser().parse_args(BASE + ["--no-third-order-sequential"]).third_order_sequential is False
    with pytest.raises(ValueError, match="sequential"):
        ThirdOrderLossConfig(sequential=1)
