"""Input checks that every command runs before any work, without loading JAX.

Each raises an error that names the file, option or problem (`ValueError` and `OSError`
subclasses); `equitrain_jax.cli.main` prints it as one line ``equitrain-jax CMD: error: ...``
and exits with status 2.  Structure files are read here, with ASE, once: the commands keep what
was read.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

from equitrain_jax.train.config import SettingError
from equitrain_jax.train.outputs import check_output_directory, check_output_file, check_writable

MIN_SEPARATION = 0.5
"""Å: atoms closer than this are taken to overlap (the shortest bond, H₂, is 0.74 Å)."""

MODEL_CONFIG = "config.json"  # what makes a directory a model directory (see equitrain_jax.models.io)
MACE_FORMAT = "equitrain-jax/mace"  # its "format" for a MACE model (MACEConfig.FORMAT)

__all__ = ["MIN_SEPARATION", "at_least", "born_charges", "check_output_directory", "check_output_file", "check_writable", "crystal", "crystal_problem",
           "backend", "input_file", "model_directory", "model_family", "non_negative", "overlap", "positive", "settings", "structures"]


def input_file(path: str, what: str, may_be_empty: bool = False) -> Path:
    """An existing, readable file, not empty unless ``may_be_empty`` (the reader then says what it lacks)."""
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if file.is_dir():
        raise IsADirectoryError(f"{what} {path} is a directory, not a file")
    if not os.access(file, os.R_OK):
        raise PermissionError(f"{what} {path} is not readable")
    if not may_be_empty and file.stat().st_size == 0:
        raise ValueError(f"{what} {path} is empty")
    return file


def model_directory(path: str, option: str = "--model") -> Path:
    """A directory holding a converted model (its ``config.json``; the rest is checked on loading)."""
    directory = Path(path)
    if not directory.exists():
        raise FileNotFoundError(f"{option} {path} does not exist")
    if directory.is_dir() and (directory / "model" / MODEL_CONFIG).is_file():
        raise ValueError(f"{option} {path} is a fine-tuning run's directory; its model is {directory / 'model'}")
    if not directory.is_dir() or not (directory / MODEL_CONFIG).is_file():
        raise ValueError(f"{option} {path} is not an equitrain-jax model directory (no {MODEL_CONFIG}); convert a model "
                         "first: equitrain-jax convert MODEL -o DIR")
    return directory


def model_family(model: Path) -> Optional[str]:
    """The ``format`` of a model directory's ``config.json`` (e.g. `MACE_FORMAT`); None if it cannot
    be read, which loading the model then reports."""
    import json

    try:
        return json.loads((model / MODEL_CONFIG).read_text()).get("format")
    except (ValueError, AttributeError):
        return None


def backend(name: Optional[str], model: Path) -> None:
    """``--backend NAME`` usable with the model directory ``model``: cuequivariance needs a MACE
    model and cuequivariance-jax installed (the ``cueq`` extra)."""
    if name in (None, "e3nn"):
        return
    import importlib.util

    family = model_family(model)
    if family is not None and family != MACE_FORMAT:
        raise ValueError(f"--backend {name}: {model} holds a {family} model; only MACE models have this backend")
    if importlib.util.find_spec("cuequivariance_jax") is None:
        raise ValueError(f"--backend {name} needs cuequivariance-jax, which is not installed: "
                         "pip install 'equitrain-jax[cueq]'")


def structures(path: str, what: str) -> list:
    """Every structure in an ASE-readable file, each with finite positions and cell."""
    input_file(path, what)
    import ase.io  # here, after the cheap checks: ASE takes a good part of a second to load
    import numpy as np

    try:
        read = ase.io.read(path, index=":")
    except Exception as error:  # ASE raises many kinds for a file it cannot parse
        detail = " ".join(f"{type(error).__name__}: {error}".split())
        raise ValueError(f"{what} {path}: not a structure file ASE can read ({detail[:300]})") from None
    if not read:
        raise ValueError(f"{what} {path} holds no structures")
    for index, atoms in enumerate(read):
        if len(atoms) == 0:
            raise ValueError(f"{what} {path}: structure {index} has no atoms")
        if not (np.all(np.isfinite(atoms.positions)) and np.all(np.isfinite(atoms.cell.array))):
            raise ValueError(f"{what} {path}: structure {index} has positions or a cell that are not finite numbers")
    return read


def crystal(path: str, what: str = "structure") -> Any:
    """The structure in ``path`` (its last one) as a crystal for phonons (see `crystal_problem`)."""
    atoms = structures(path, what)[-1]
    problem = crystal_problem(atoms)
    if problem:
        raise ValueError(f"{what} {path}: {problem}")
    return atoms


def crystal_problem(atoms: Any) -> Optional[str]:
    """Why ``atoms`` is no crystal for phonons, or None: it must be periodic in three directions,
    have a cell of non-zero volume, and no two atoms closer than `MIN_SEPARATION`."""
    import numpy as np

    if not atoms.pbc.all():
        return f"a phonon run needs a crystal periodic in 3 directions, got pbc={atoms.pbc.tolist()}"
    volume = abs(np.linalg.det(atoms.cell.array))
    if not volume > 1e-6:
        return f"the cell {np.round(atoms.cell.array, 4).tolist()} Å has no volume"
    return overlap(atoms)


def overlap(atoms: Any) -> Optional[str]:
    """The closest two atoms of ``atoms`` (periodic images included) if they are nearer than
    `MIN_SEPARATION`, as a sentence naming them; else None."""
    from ase.neighborlist import neighbor_list

    first, second, distance = neighbor_list("ijd", atoms, MIN_SEPARATION, self_interaction=False)
    pairs = [(i, j, d) for i, j, d in zip(first, second, distance) if i <= j]
    if not pairs:
        return None
    i, j, d = min(pairs, key=lambda pair: pair[2])
    image = "" if i != j else " (with its own periodic image)"
    return (f"atoms {i} ({atoms.get_chemical_symbols()[i]}) and {j} ({atoms.get_chemical_symbols()[j]}) are "
            f"{d:.3f} Å apart{image}, closer than {MIN_SEPARATION} Å: overlapping atoms")


def positive(value: Optional[float], option: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{option} must be a positive number, got {value}")


def non_negative(value: Optional[float], option: str) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{option} must be a number >= 0, got {value}")


def at_least(value: Optional[int], low: int, option: str) -> None:
    if value is not None and value < low:
        raise ValueError(f"{option} must be at least {low}, got {value}")


def settings(build: Any, options: dict[str, str], **fields: Any) -> Any:
    """``build(**fields)`` (a settings class that checks itself), its errors naming the command
    line's options (``options``: field → option) instead of the fields."""
    try:
        return build(**fields)
    except SettingError as error:
        problems = error.problems.items()
        raise ValueError("; ".join(f"{options.get(field, field)} {text}" for field, text in problems)) from None


def incomplete(args: Any) -> str:
    """What an interruption leaves of a command that writes ``args.output``."""
    output = getattr(args, "output", None)
    if output and Path(output).exists():
        return f"{output} may be incomplete; rerun with --overwrite"
    return "nothing was written"


def born_charges(path: Optional[str], atoms: Any, option: str = "--born"):
    """The NAC parameters (`equitrain_jax.phonons.nac.NacParameters`) of a phonopy ``BORN`` file for
    the primitive cell of the crystal ``atoms``, checked by `equitrain_jax.phonons.nac.read_born`
    (phonopy, no JAX); none without a file."""
    from equitrain_jax.phonons.nac import NacParameters, read_born_for_structure

    if path is None:
        return NacParameters()
    input_file(path, f"{option} file")
    return read_born_for_structure(path, atoms)
