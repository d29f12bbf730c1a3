"""The interface of a model family's configuration: what training, adapters, model directories and
the command line ask of a family, so that none of them branches on the family.

A family (``models/<family>/``) provides a frozen dataclass subclassing `ModelConfig` with the
architecture and fixed constants, its Flax module (an `equitrain_jax.models.layers.EnergyModel`),
and is listed once in `equitrain_jax.models.io.FAMILIES`; its converter lives in
``equitrain_jax/convert/``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, Optional

import flax.linen as nn
import numpy as np


class ModelConfig:
    """Base of the families' configuration dataclasses (energies in eV, lengths in Å).

    Every family has ``atomic_numbers`` (the model's elements), ``r_max`` (cutoff, Å), ``heads``
    (names) and ``num_interactions``; it is stored as ``config.json`` tagged with ``FORMAT``.
    """

    FORMAT: ClassVar[str]
    """The ``"format"`` entry of ``config.json`` (e.g. ``"equitrain-jax/mace"``)."""
    FAMILY: ClassVar[str]
    """The family's name in messages (``"MACE"``, ``"SevenNet"``)."""

    atomic_numbers: tuple[int, ...]
    r_max: float
    heads: tuple[str, ...]

    @property
    def num_elements(self) -> int:
        return len(self.atomic_numbers)

    @property
    def num_interactions(self) -> int:
        raise NotImplementedError

    @property
    def derivative_jumps(self) -> tuple[tuple[float, int], ...]:
        """Pair distances (Å) where the energy is not smooth, each with the lowest order of its
        derivative with respect to that distance that can jump there: a neighbour shell at such a
        radius makes the force constants of that order (2: fc2, 3: fc3) jump with the lattice
        constant.  Empty where the family declares none."""
        return ()

    @classmethod
    def module_class(cls) -> type[nn.Module]:
        """The family's Flax module class."""
        raise NotImplementedError

    def module(self, param_dtype: Any = np.float64) -> nn.Module:
        """The Flax module of this architecture, parameters in ``param_dtype``."""
        return self.module_class()(self, param_dtype=param_dtype)

    @property
    def description(self) -> str:
        """One line naming the architecture (for messages), e.g. ``"ScaleShiftMACE 128x0e+128x1o"``."""
        raise NotImplementedError

    def energy_offsets(self) -> np.ndarray:
        """Per-element energy added to each atom (eV), [n_heads, n_elements]: the part of the energy
        that is linear in the composition (E0s of MACE, per-element shift of SevenNet)."""
        raise NotImplementedError

    def with_energy_offsets(self, offsets: np.ndarray) -> "ModelConfig":
        """This config with `energy_offsets` replaced by ``offsets`` [n_heads, n_elements] (eV)."""
        raise NotImplementedError

    def with_backend(self, backend: str, method: Optional[str] = None) -> "ModelConfig":
        """This config computing with ``backend`` (``"e3nn"``, or ``"cuequivariance"`` where the family
        supports it; same parameters) and its execution ``method`` (None: chosen by platform).
        ValueError for a backend the family lacks; ImportError naming the extra to install."""
        if backend != "e3nn" or method is not None:
            raise ValueError(f"{self.FAMILY} models have only the 'e3nn' backend, got {backend!r} (method {method!r})")
        return self

    def with_head(self, variables: dict[str, Any], name: str, copy_from: int) -> tuple["ModelConfig", dict[str, Any]]:
        """The config and variables (numpy) of this model with one more head ``name``, an exact copy
        of head ``copy_from`` (readout weights and constants); the other heads are unchanged.
        Arguments are checked by `equitrain_jax.adapters.heads.add_head`."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ModelConfig":
        """The config of a ``config.json`` dict (without ``"format"``); ValueError naming unknown or
        missing keys."""
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.FAMILY} config keys: {unknown}")
        missing = sorted(
            f.name for f in fields
            if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        if missing:
            raise ValueError(f"{cls.FAMILY} config keys missing: {missing}")
        for f in fields:
            if f.name in data:
                _check_type(f.name, str(f.type), data[f.name])
        return cls(**{k: _tuples(v) for k, v in data.items()})

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "ModelConfig":
        return cls.from_json(json.loads(Path(path).read_text()))


_JSON_TYPES = {"float": (int, float), "int": (int,), "str": (str,), "bool": (bool,), "tuple": (list, tuple)}


def _check_type(name: str, annotation: str, value: Any) -> None:
    """ValueError naming the key unless ``value`` has the JSON type of the field's annotation
    (``float``, ``int``, ``str``, ``bool``, ``tuple[…]``, ``Optional[…]``)."""
    if annotation.startswith("Optional[") and value is None:
        return
    kind = annotation.removeprefix("Optional[").split("[")[0].rstrip("]")
    allowed = _JSON_TYPES.get(kind)
    if allowed is None:
        return
    if isinstance(value, bool) and kind != "bool" or not isinstance(value, allowed):
        expected = {"float": "a number", "int": "an integer", "str": "a string", "bool": "true or false",
                    "tuple": "a list"}[kind]
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
