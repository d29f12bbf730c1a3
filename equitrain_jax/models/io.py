"""Model directories: ``config.json`` (architecture, human-readable) + ``params/`` (orbax pytree).

``config.json`` names its model family in ``"format"`` (``equitrain-jax/mace`` or
``equitrain-jax/sevennet``); `load_model` reads the matching config class of `FAMILIES` and
`ModelBundle.module` builds its Flax module.  Loading never imports torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Optional

import flax.linen as nn
import jax
import numpy as np

from equitrain_jax.models.family import ModelConfig
from equitrain_jax.models.mace import MACEConfig
from equitrain_jax.models.sevennet import SevenNetConfig

FAMILIES: tuple[type[ModelConfig], ...] = (MACEConfig, SevenNetConfig)
"""The config class of every model family: the one list a new family joins."""
CONFIG_CLASSES = {cls.FORMAT: cls for cls in FAMILIES}
"""Config class of each model-directory format (the ``"format"`` entry of ``config.json``)."""
MODULES = {cls: cls.module_class() for cls in FAMILIES}
"""Flax module class of each config class."""

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    """A model's architecture, its Flax module and its variables (numpy arrays)."""

    config: ModelConfig
    variables: dict[str, Any]

    def module(self, dtype=np.float64) -> nn.Module:
        return self.config.module(dtype)


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


class BrokenModelError(ValueError):
    """A model directory that cannot be loaded; the message names the directory, the file and what
    is wrong."""


def load_model(directory: str | Path, backend: Optional[str] = None) -> ModelBundle:
    """Read a model directory written by `save_model` (or ``equitrain-jax convert``).

    ``backend`` (``"e3nn"`` or, for MACE, ``"cuequivariance"``) replaces the one in ``config.json``
    (see `ModelConfig.with_backend`); the parameters are the same on every backend.

    Raises:
        FileNotFoundError: ``directory`` has no ``config.json`` (not a model directory).
        BrokenModelError: (a ValueError) ``config.json`` is not valid JSON, lacks keys or holds
            invalid values; ``params/`` is missing, empty or unreadable; or the parameters do not
            fit the architecture of ``config.json`` — one error naming the file and the problem.
        ValueError: a backend the model family lacks.
        ImportError: the cuequivariance backend without cuequivariance-jax installed.
    """
    directory = Path(directory)
    config = read_config(directory)
    if backend is not None:
        config = config.with_backend(backend)
    variables = read_parameters(directory)
    check_variables(config, variables, directory / PARAMS_DIR)
    return ModelBundle(config, variables)


def read_config(directory: Path) -> ModelConfig:
    """The config of ``directory/config.json``, checked (see `load_model`)."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not an equitrain-jax model directory (no {CONFIG_FILE}); "
            "convert a mace-torch model first with: equitrain-jax convert MODEL.model -o DIR"
        )
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BrokenModelError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise BrokenModelError(f"{path}: expected a JSON object of settings, found a {type(data).__name__}")
    fmt = data.pop("format", None)
    if fmt not in CONFIG_CLASSES:
        raise BrokenModelError(f"{path}: format {fmt!r}, expected one of {sorted(CONFIG_CLASSES)}")
    try:
        return CONFIG_CLASSES[fmt].from_json(data)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as error:
        raise BrokenModelError(f"{path}: {error}") from None


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax and absl log warnings (and asyncio errors) while probing a damaged checkpoint; the
    error raised in their place says what is wrong."""
    loggers = [logging.getLogger(name) for name in ("absl", "orbax", "asyncio")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def read_parameters(directory: Path) -> dict[str, Any]:
    """The variables (numpy) in ``directory/params`` (orbax); BrokenModelError if they cannot be read."""
    import orbax.checkpoint as ocp

    params_dir = (directory / PARAMS_DIR).absolute()
    if not params_dir.is_dir():
        raise BrokenModelError(f"{params_dir}: missing; a model directory holds {CONFIG_FILE} and {PARAMS_DIR}/")
    if not any(params_dir.iterdir()):
        raise BrokenModelError(f"{params_dir}: empty, no parameters saved")
    with _quiet_orbax():
        try:
            with ocp.PyTreeCheckpointer() as checkpointer:
                metadata = checkpointer.metadata(params_dir)
                structure = getattr(getattr(metadata, "item_metadata", None), "tree", None)
                if structure is None:
                    raise BrokenModelError(f"{params_dir}: no readable parameter tree (damaged or not an orbax checkpoint)")
                restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), dict(structure))
                return checkpointer.restore(params_dir, restore_args=restore_args)
        except BrokenModelError:
            raise
        except Exception as error:  # tensorstore, orbax and OS errors: a damaged or unreadable checkpoint
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            if _permission_denied(error):
                raise BrokenModelError(f"{params_dir}: parameter files not readable by this user ({reason})") from None
            raise BrokenModelError(f"{params_dir}: parameter files damaged, cannot be read ({reason})") from None


def _permission_denied(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, is a refused permission (orbax and
    tensorstore wrap the OS's error, sometimes only in their message)."""
    while error is not None:
        if isinstance(error, PermissionError) or "permission denied" in str(error).lower():
            return True
        error = error.__cause__ or error.__context__
    return False


def check_variables(config: ModelConfig, variables: dict[str, Any], where: Path) -> None:
    """BrokenModelError, naming ``where``, unless ``variables`` fit the module of ``config``: every
    variable the model uses is there with its shape, and none is left over (parameters of another
    architecture).  The model is traced once on a two-atom graph (no computation), once per
    architecture and parameter layout in a process (with the e3nn backend: every backend uses the
    same parameters)."""
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    layout = tuple((jax.tree_util.keystr(path), np.shape(leaf), _abstract_dtype(leaf)) for path, leaf in leaves)
    problem = _layout_problem(config, jax.tree_util.tree_structure(variables), layout)
    if problem:
        raise BrokenModelError(f"{where}: the parameters do not fit the architecture in {CONFIG_FILE}: {problem}")


def _abstract_dtype(leaf: Any) -> str:
    dtype = np.asarray(leaf).dtype
    return "float32" if np.issubdtype(dtype, np.floating) else str(dtype)


@functools.lru_cache(maxsize=32)
def _layout_problem(config: ModelConfig, treedef: Any, layout: tuple) -> str:
    """What is wrong with a variable layout ([(path, shape, dtype)] in ``treedef``) for ``config``'s
    module, or "" if nothing."""
    from ase import Atoms

    from equitrain_jax.data import atoms_to_graph, padded_device_graph

    z = config.atomic_numbers[0]
    atoms = Atoms(numbers=[z, z], positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.5 * config.r_max]])
    graph = padded_device_graph(atoms_to_graph(atoms, config.r_max, config.atomic_numbers), np.float32)
    module = config.with_backend("e3nn").module(np.float32)
    abstract = treedef.unflatten([jax.ShapeDtypeStruct(shape, dtype) for _, shape, dtype in layout])
    try:
        closed = jax.make_jaxpr(lambda v: module.apply(v, graph, method=type(module).node_energies))(abstract)
    except Exception as error:  # flax names the missing or misshapen parameter
        message = str(error).strip().splitlines()
        return message[0] if message else type(error).__name__
    used = {id(v) for eqn in closed.jaxpr.eqns for v in eqn.invars} | {id(v) for v in closed.jaxpr.outvars}
    unused = [path for (path, _, _), var in zip(layout, closed.jaxpr.invars) if id(var) not in used]
    if unused:
        return f"{len(unused)} variable(s) the model does not use: {', '.join(unused[:5])}{' …' if len(unused) > 5 else ''}"
    return ""
