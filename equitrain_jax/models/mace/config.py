"""MACE architecture and constants: everything the JAX side needs besides the weights.

Stored as ``config.json`` next to the converted weights, tagged with ``MACEConfig.FORMAT``;
human-readable and torch-free.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import numpy as np

from equitrain_jax.models.equivariant import irreps_list
from equitrain_jax.models.family import ModelConfig
from equitrain_jax.models.mace import heads
from equitrain_jax.train.config import BACKENDS

INTERACTION_BLOCKS = (
    "RealAgnosticInteractionBlock",
    "RealAgnosticResidualInteractionBlock",
    "RealAgnosticDensityInteractionBlock",
    "RealAgnosticDensityResidualInteractionBlock",
    "RealAgnosticResidualNonLinearInteractionBlock",
)
NONLINEAR_BLOCK = "RealAgnosticResidualNonLinearInteractionBlock"
MODEL_CLASSES = ("ScaleShiftMACE", "MACE")
DISTANCE_TRANSFORMS = (None, "Agnesi", "Soft")
CUEQ_METHODS = (None, "naive", "uniform_1d")
"""cuEquivariance execution methods; None: the CUDA kernel on a GPU, plain JAX elsewhere."""


@dataclasses.dataclass(frozen=True)
class MACEConfig(ModelConfig):
    """MACE hyper-parameters and fixed constants (energies in eV, lengths in Å).

    ``atomic_energies`` is ``[n_heads][n_elements]`` (E0 per element and head); ``scale`` and
    ``shift`` have one value per head.  ``covalent_radii`` has one value per element of the model,
    in the order of ``atomic_numbers`` (used by distance transforms and ZBL).

    ``edge_irreps`` (None: the node irreps) are the features the edge convolution of layers 2, 3, …
    runs on, and of layer 1 too with ``edge_irreps_first`` (its scalars only).  ``agnostic_product``:
    one symmetric-contraction weight set for all elements.  ``gate_activation_constants``: the
    normalisation constants of SiLU and sigmoid in the gate of the non-linear interaction block.

    ``backend`` runs the edge convolution and the symmetric contraction with e3nn-jax-style JAX
    (``"e3nn"``) or through cuequivariance-jax (``"cuequivariance"``, the optional extra ``cueq``),
    on the same parameters; ``cueq_method`` forces its ``segmented_polynomial`` method
    (``"naive"``: plain JAX; ``"uniform_1d"``: CUDA kernel), None choosing by platform.
    """

    FORMAT = "equitrain-jax/mace"
    FAMILY = "MACE"

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
    edge_irreps: Optional[str] = None
    edge_irreps_first: bool = False
    agnostic_product: bool = False
    gate_activation_constants: tuple[float, float] = (1.6791767923989418, 1.8467055342154763)  # silu, sigmoid
    backend: str = "e3nn"
    cueq_method: Optional[str] = None

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
        if self.edge_irreps is not None:
            node = {ir for _, ir in self.hidden_irreps_list}
            extra = [ir for _, ir in irreps_list(self.edge_irreps) if ir not in node]
            if extra:
                problems.append(f"edge_irreps {self.edge_irreps!r} hold {extra}, not in hidden_irreps")
        elif self.edge_irreps_first:
            problems.append("edge_irreps_first needs edge_irreps")
        if self.backend not in BACKENDS:
            problems.append(f"backend {self.backend!r} not in {BACKENDS}")
        if self.cueq_method not in CUEQ_METHODS:
            problems.append(f"cueq_method {self.cueq_method!r} not in {CUEQ_METHODS}")
        elif self.cueq_method is not None and self.backend != "cuequivariance":
            problems.append(f"cueq_method {self.cueq_method!r} needs backend 'cuequivariance'")
        if problems:
            raise ValueError("invalid MACE configuration: " + "; ".join(problems))

    @property
    def hidden_irreps_list(self) -> list[tuple[int, str]]:
        return irreps_list(self.hidden_irreps)

    @property
    def num_channels(self) -> int:
        return self.hidden_irreps_list[0][0]

    def layer_edge_irreps(self, layer: int, node_irreps: tuple[str, ...]) -> tuple[tuple[int, str], ...]:
        """(multiplicity, irrep) of the features layer ``layer`` (0-based) convolves over edges."""
        if self.edge_irreps is None or (layer == 0 and not self.edge_irreps_first):
            mul = dict((ir, m) for m, ir in self.hidden_irreps_list)
            return tuple((mul[ir], ir) for ir in node_irreps)
        edge = irreps_list(self.edge_irreps)
        if layer == 0:
            return ((sum(m for m, ir in edge if ir == "0e"), "0e"),)
        return tuple(edge)

    @classmethod
    def module_class(cls) -> type[nn.Module]:
        from equitrain_jax.models.mace.model import MACE

        return MACE

    @property
    def description(self) -> str:
        return f"{self.model_class} {self.hidden_irreps}"

    def energy_offsets(self) -> np.ndarray:
        """The E0s (eV), [n_heads, n_elements]; ValueError for a model without E0s."""
        if not self.atomic_energies:
            raise ValueError("this model has no E0s (atomic_energies is empty)")
        return np.array(self.atomic_energies, dtype=float)

    def with_energy_offsets(self, offsets: np.ndarray) -> "MACEConfig":
        rows = tuple(tuple(float(v) for v in row) for row in np.asarray(offsets, dtype=float))
        return dataclasses.replace(self, atomic_energies=rows)

    def with_backend(self, backend: str, method: Optional[str] = None) -> "MACEConfig":
        if backend == "cuequivariance":
            from equitrain_jax.models.mace import cueq

            cueq.require()
        return dataclasses.replace(self, backend=backend, cueq_method=method)

    def with_head(self, variables: dict[str, Any], name: str, copy_from: int) -> tuple["MACEConfig", dict[str, Any]]:
        return heads.add_head(self, variables, name, copy_from)


def e3nn_parity(ir: str) -> int:
    return 1 if ir.endswith("e") else -1
