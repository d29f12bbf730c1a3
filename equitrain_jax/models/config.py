"""Architecture and constants of a model (MACE or SevenNet): everything the JAX side needs besides
the weights.

Stored as ``config.json`` next to the converted weights, tagged with the family's ``FORMAT``;
human-readable and torch-free.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

INTERACTION_BLOCKS = (
    "RealAgnosticInteractionBlock",
    "RealAgnosticResidualInteractionBlock",
    "RealAgnosticDensityInteractionBlock",
    "RealAgnosticDensityResidualInteractionBlock",
)
MODEL_CLASSES = ("ScaleShiftMACE", "MACE")
DISTANCE_TRANSFORMS = (None, "Agnesi", "Soft")


@dataclasses.dataclass(frozen=True)
class MACEConfig:
    FORMAT = "equitrain-jax/mace"

    """MACE hyper-parameters and fixed constants (energies in eV, lengths in Å).

    ``atomic_energies`` is ``[n_heads][n_elements]`` (E0 per element and head); ``scale`` and
    ``shift`` have one value per head.  ``covalent_radii`` has one value per element of the model,
    in the order of ``atomic_numbers`` (used by distance transforms and ZBL).
    """

    atomic_numbers: tuple[int, ...]
    r_max: float
    num_bessel: int = 8
    num_polynomial_cutoff: int = 5
    max_ell: int = 3
    hidden_irreps: str = "128x0e+128x1o"
    num_interactions: int = 2
    correlation: tuple[int, ...] = (3, 3)
    interaction_first: str = "RealAgnosticResidualInteractionBlock"
    interaction: str = "RealAgnosticResidualInteractionBlock"
    readout_mlp_channels: int = 16
    radial_mlp: tuple[int, ...] = (64, 64, 64)
    avg_num_neighbors: float = 1.0
    model_class: str = "ScaleShiftMACE"
    heads: tuple[str, ...] = ("Default",)
    atomic_energies: tuple[tuple[float, ...], ...] = ()
    scale: tuple[float, ...] = (1.0,)
    shift: tuple[float, ...] = (0.0,)
    apply_cutoff: bool = True
    distance_transform: Optional[str] = None
    agnesi: tuple[float, float, float] = (0.9183, 4.5791, 1.0805)  # q, p, a
    soft_alpha: float = 4.0
    pair_repulsion: bool = False
    zbl_a_prefactor: float = 0.4543
    zbl_a_exponent: float = 0.3
    zbl_coefficients: tuple[float, ...] = (0.1818, 0.5099, 0.2802, 0.02817)
    covalent_radii: tuple[float, ...] = ()
    radial_activation_constant: float = 1.6791767923989418
    readout_activation_constant: float = 1.6791767923989418

    def __post_init__(self):
        problems = []
        if self.model_class not in MODEL_CLASSES:
            problems.append(f"model_class {self.model_class!r} not in {MODEL_CLASSES}")
        for name in (self.interaction_first, self.interaction):
            if name not in INTERACTION_BLOCKS:
                problems.append(f"interaction block {name!r} not in {INTERACTION_BLOCKS}")
        if self.distance_transform not in DISTANCE_TRANSFORMS:
            problems.append(f"distance_transform {self.distance_transform!r} not supported")
        if len(self.correlation) != self.num_interactions:
            problems.append(
                f"{len(self.correlation)} correlation orders for {self.num_interactions} interactions"
            )
        if not 0 <= self.max_ell <= 3:
            problems.append(f"max_ell {self.max_ell} outside 0…3")
        n_heads, n_elements = len(self.heads), len(self.atomic_numbers)
        if self.atomic_energies and (
            len(self.atomic_energies) != n_heads
            or any(len(e) != n_elements for e in self.atomic_energies)
        ):
            problems.append(f"atomic_energies must be [{n_heads} heads][{n_elements} elements]")
        if len(self.scale) != n_heads or len(self.shift) != n_heads:
            problems.append(f"scale and shift need one value per head ({n_heads})")
        if self.covalent_radii and len(self.covalent_radii) != n_elements:
            problems.append(f"covalent_radii needs one value per element ({n_elements})")
        channels = {mul for mul, _ in self.hidden_irreps_list}
        if len(channels) != 1:
            problems.append(f"hidden_irreps {self.hidden_irreps!r} must have one multiplicity")
        if any(e3nn_parity(ir) != (-1) ** int(ir[:-1]) for _, ir in self.hidden_irreps_list):
            problems.append(f"hidden_irreps {self.hidden_irreps!r}: only l with parity (-1)^l")
        if problems:
            raise ValueError("invalid MACE configuration: " + "; ".join(problems))

    @property
    def hidden_irreps_list(self) -> list[tuple[int, str]]:
        return irreps_list(self.hidden_irreps)

    @property
    def num_channels(self) -> int:
        return self.hidden_irreps_list[0][0]

    @property
    def num_elements(self) -> int:
        return len(self.atomic_numbers)

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "MACEConfig":
        return _from_json(cls, data, "MACE")

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "MACEConfig":
        return cls.from_json(json.loads(Path(path).read_text()))


@dataclasses.dataclass(frozen=True)
class SevenNetConfig:
    """SevenNet (NequIP architecture, as built by sevenn) hyper-parameters and fixed constants.

    Energies in eV, lengths in Å.  ``node_irreps[t]`` are the node features entering interaction t
    (``node_irreps[-1]`` those leaving the last one, scalars only); all irreps are even (SevenNet
    without parity), and the edge filter is the spherical harmonics l = 0…``lmax`` taken as even.
    ``conv_denominators`` divide each layer's summed messages (√avg_num_neigh in SevenNet-0).
    ``scale`` and ``shift`` have one value per element, in the order of ``atomic_numbers``; the atomic
    energy is scale·readout + shift.  A model with several ``heads`` (multi-head fine-tuning) has one
    readout per head (``readouts_<h>``) and ``scale``/``shift`` as [n_heads][n_elements].
    """

    FORMAT = "equitrain-jax/sevennet"

    atomic_numbers: tuple[int, ...]
    node_irreps: tuple[str, ...]
    conv_denominators: tuple[float, ...]
    scale: tuple[float, ...]
    shift: tuple[float, ...]
    r_max: float = 5.0
    cutoff_on: float = 4.5
    num_bessel: int = 8
    lmax: int = 2
    radial_mlp: tuple[int, ...] = (64, 64)
    readout_hidden: int = 64
    activation_constant: float = 1.6791767923989418
    heads: tuple[str, ...] = ("Default",)

    def __post_init__(self):
        problems = []
        n_elements = len(self.atomic_numbers)
        if len(self.node_irreps) < 2:
            problems.append(f"node_irreps {self.node_irreps!r} needs at least two entries")
        else:
            parsed = [irreps_list(text) for text in self.node_irreps]
            if any(not ir.endswith("e") for irreps in parsed for _, ir in irreps):
                problems.append(f"node_irreps {self.node_irreps!r}: only even irreps (no parity) are supported")
            if any(ir != "0e" for _, ir in parsed[-1]):
                problems.append(f"last node_irreps {self.node_irreps[-1]!r} must be scalars (0e) only")
            if any(int(ir[:-1]) > self.lmax for irreps in parsed for _, ir in irreps):
                problems.append(f"node_irreps {self.node_irreps!r} go beyond lmax {self.lmax}")
        if len(self.conv_denominators) != self.num_interactions:
            problems.append(
                f"{len(self.conv_denominators)} conv_denominators for {self.num_interactions} interactions"
            )
        n_heads = len(self.heads)
        if n_heads == 0 or len(set(self.heads)) != n_heads:
            problems.append(f"heads {self.heads!r} must be distinct names, at least one")
        expected = (n_elements,) if n_heads == 1 else (n_heads, n_elements)
        for name in ("scale", "shift"):
            shape = np.shape(getattr(self, name))
            if shape != expected:
                problems.append(
                    f"{name} has shape {list(shape)}; it needs one value per element ({n_elements})"
                    + ("" if n_heads == 1 else f" for each of the {n_heads} heads")
                )
        if not 0.0 < self.cutoff_on < self.r_max:
            problems.append(f"cutoff_on {self.cutoff_on} must lie between 0 and r_max {self.r_max}")
        if problems:
            raise ValueError("invalid SevenNet configuration: " + "; ".join(problems))

    @property
    def num_interactions(self) -> int:
        return len(self.node_irreps) - 1

    @property
    def num_elements(self) -> int:
        return len(self.atomic_numbers)

    def head_scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """``scale`` and ``shift`` as [n_heads, n_elements] arrays, whatever the number of heads."""
        shape = (len(self.heads), self.num_elements)
        return np.reshape(self.scale, shape), np.reshape(self.shift, shape)

    def with_head_scale_shift(self, scale: Any, shift: Any) -> "SevenNetConfig":
        """This config with [n_heads, n_elements] ``scale`` and ``shift`` (stored flat for one head)."""
        def stored(values):
            values = np.asarray(values, dtype=float)
            rows = tuple(tuple(float(v) for v in row) for row in values)
            return rows[0] if len(self.heads) == 1 else rows

        return dataclasses.replace(self, scale=stored(scale), shift=stored(shift))

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SevenNetConfig":
        return _from_json(cls, data, "SevenNet")


CONFIG_CLASSES = {cls.FORMAT: cls for cls in (MACEConfig, SevenNetConfig)}
"""Config class of each model-directory format (the ``"format"`` entry of ``config.json``)."""


def irreps_list(text: str) -> list[tuple[int, str]]:
    """``"128x0e+64x1e"`` → ``[(128, "0e"), (64, "1e")]``."""
    out = []
    for term in text.replace(" ", "").split("+"):
        mul, ir = term.split("x")
        out.append((int(mul), ir))
    return out


def _to_json(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _from_json(cls, data: dict[str, Any], family: str):
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"unknown {family} config keys: {unknown}")
    return cls(**{k: _tuples(v) for k, v in data.items()})


def e3nn_parity(ir: str) -> int:
    return 1 if ir.endswith("e") else -1


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
