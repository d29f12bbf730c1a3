"""Converters from PyTorch checkpoints (mace-torch models, SevenNet checkpoints); the only part of
the package that imports torch (through `common.import_torch`)."""

from __future__ import annotations

from pathlib import Path

from equitrain_jax.convert.common import ConversionError
from equitrain_jax.convert.mace_torch import convert_model, load_torch_model
from equitrain_jax.convert.sevennet import convert_pretrained, pretrained_checkpoint
from equitrain_jax.convert.to_mace_torch import export_to_mace_torch
from equitrain_jax.models.io import save_model
from equitrain_jax.models.mace import MACEConfig


def convert_module(module, output: str | Path) -> MACEConfig:
    """Convert a mace-torch module in memory and write the model directory ``output``."""
    config, variables = convert_model(module)
    save_model(output, config, variables)
    return config


def convert_file(path: str | Path, output: str | Path) -> MACEConfig:
    """Convert a mace-torch model file (e3nn or cuEquivariance layout) into ``output``."""
    return convert_module(load_torch_model(path), output)


__all__ = [
    "ConversionError",
    "convert_file",
    "convert_model",
    "convert_module",
    "convert_pretrained",
    "export_to_mace_torch",
    "load_torch_model",
    "pretrained_checkpoint",
]
