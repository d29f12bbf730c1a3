"""Model directories: ``config.json`` (architecture, human-readable) + ``params/`` (orbax pytree).

``config.json`` names its model family in ``"format"`` (``equitrain-jax/mace`` or
``equitrain-jax/sevennet``); `load_model` reads the matching config class and
`ModelBundle.module` builds the matching Flax module.  Loading never imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Union

import jax
import numpy as np

from equitrain_jax.models.config import CONFIG_CLASSES, MACEConfig, SevenNetConfig
from equitrain_jax.models.mace import MACE
from equitrain_jax.models.sevennet import SevenNet

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
MODULES = {MACEConfig: MACE, SevenNetConfig: SevenNet}
"""Flax module class of each config class."""

ModelConfig = Union[MACEConfig, SevenNetConfig]


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    """A model's architecture, its Flax module and its variables (numpy arrays)."""

    config: ModelConfig
    variables: dict[str, Any]

    def module(self, dtype=np.float64) -> Union[MACE, SevenNet]:
        return MODULES[type(self.config)](self.config, param_dtype=dtype)


def save_model(directory: str | Path, config: ModelConfig, variables: dict[str, Any], overwrite: bool = True) -> Path:
    """Write ``directory/config.json`` and ``directory/params`` (orbax)."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    params_dir = directory / PARAMS_DIR
    if params_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{params_dir} exists")
        shutil.rmtree(params_dir)
    (directory / CONFIG_FILE).write_text(
        json.dumps({"format": config.FORMAT, **config.to_json()}, indent=2) + "\n"
    )
    arrays = jax.tree_util.tree_map(np.asarray, variables)
    checkpointer = ocp.PyTreeCheckpointer()
    checkpointer.save(params_dir, arrays)
    return directory


def load_model(directory: str | Path) -> ModelBundle:
    """Read a model directory written by `save_model` (or ``equitrain-jax convert``)."""
    import orbax.checkpoint as ocp

    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{directory} is not an equitrain-jax model directory (no {CONFIG_FILE}); "
            "convert a mace-torch model first with: equitrain-jax convert MODEL.model -o DIR"
        )
    data = json.loads(config_path.read_text())
    fmt = data.pop("format", None)
    if fmt not in CONFIG_CLASSES:
        raise ValueError(f"{config_path}: format {fmt!r}, expected one of {sorted(CONFIG_CLASSES)}")
    config = CONFIG_CLASSES[fmt].from_json(data)
    checkpointer = ocp.PyTreeCheckpointer()
    params_dir = (directory / PARAMS_DIR).absolute()
    structure = checkpointer.metadata(params_dir).item_metadata.tree
    restore_args = jax.tree_util.tree_map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), dict(structure)
    )
    variables = checkpointer.restore(params_dir, restore_args=restore_args)
    return ModelBundle(config, variables)
