"""SevenNet architecture and constants: everything the JAX side needs besides the weights.

Stored as ``config.json`` next to the converted weights, tagged with ``SevenNetConfig.FORMAT``;
human-readable and torch-free.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import numpy as np

from equitrain_jax.models.equivariant import irreps_list
from equitrain_jax.models.family import ModelConfig


@dataclasses.dataclass(frozen=True)
class SevenNetConfig(ModelConfig):
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
    FAMILY = "SevenNet"

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

    @property
    def derivative_jumps(self) -> tuple[tuple[float, int], ...]:
        """The XPLOR switch s(r) is 1 below ``cutoff_on`` and a cubic in r² above it, with s′ continuous
        but s″ jumping at ``cutoff_on`` (0 inside, −24·r_on²/(r_max² − r_on²)² outside) and at
        ``r_max``; the radial basis multiplying it (Bessel functions of trained frequencies) need
        not vanish there, so the energy's second derivative can jump at both radii."""
        return ((float(self.cutoff_on), 2), (float(self.r_max), 2))

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

    @classmethod
    def module_class(cls) -> type[nn.Module]:
        from equitrain_jax.models.sevennet.model import SevenNet

        return SevenNet

    @property
    def description(self) -> str:
        return f"SevenNet {' → '.join(self.node_irreps)}"

    def energy_offsets(self) -> np.ndarray:
        """The per-element ``shift`` (eV per atom), [n_heads, n_elements]."""
        return self.head_scale_shift()[1].copy()

    def with_energy_offsets(self, offsets: np.ndarray) -> "SevenNetConfig":
        return self.with_head_scale_shift(self.head_scale_shift()[0], offsets)

    def with_head(self, variables: dict[str, Any], name: str, copy_from: int) -> tuple["SevenNetConfig", dict[str, Any]]:
        """One readout per head (``readouts_<h>``): the new one is a copy, as are its scale and shift."""
        params = dict(variables["params"])
        params[f"readouts_{len(self.heads)}"] = {
            layer: {ir: np.array(w) for ir, w in weights.items()}
            for layer, weights in params[f"readouts_{copy_from}"].items()
        }

        def grown(values: np.ndarray) -> tuple:  # [n_heads + 1][n_elements]: several heads, nested
            return tuple(tuple(float(v) for v in row) for row in np.vstack([values, values[copy_from]]))

        scale, shift = self.head_scale_shift()
        config = dataclasses.replace(self, heads=tuple(self.heads) + (name,), scale=grown(scale), shift=grown(shift))
        return config, {**variables, "params": params}
