"""A loaded model ready to evaluate structures: dtype, head, jit-compiled outputs, batching.

`Potential` is what the ASE calculator, the phonon code and scripts share.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import ase
import jax
import jraph
import numpy as np

from equitrain_jax.data import DTYPES, PaddedShape, atoms_to_graph, batch_graphs, device_arrays, enable_float64, padded_device_graph
from equitrain_jax.models.io import ModelBundle, load_model
from equitrain_jax.models.quantities import energy_forces_stress, node_energy_function

__all__ = ["DTYPES", "Potential", "enable_float64", "resolve_head"]


def resolve_head(heads: Sequence[str], head: Union[str, int, None]) -> int:
    """Index of the requested head; by default the only head or the one named 'default'."""
    if head is None:
        if len(heads) == 1:
            return 0
        defaults = [i for i, name in enumerate(heads) if name.lower() == "default"]
        if defaults:
            return defaults[0]
        raise ValueError(f"this model has heads {list(heads)}; choose one with head=...")
    if isinstance(head, (int, np.integer)):
        if not 0 <= head < len(heads):
            raise ValueError(f"head index {head} out of range for heads {list(heads)}")
        return int(head)
    if head not in heads:
        raise ValueError(f"head {head!r} is not one of the model's heads {list(heads)}")
    return list(heads).index(head)


class Potential:
    """Energies (eV), forces (eV/Å) and stress (eV/Å³) of ASE structures from a converted model.

    Args:
        model: a model directory (see ``equitrain-jax convert``) or a loaded `ModelBundle`.
        dtype: ``"float64"`` (real float64 end to end; enables JAX x64) or ``"float32"``.
        head: head name or index for multi-head models.
        backend: ``"e3nn"`` or ``"cuequivariance"`` (MACE; needs the ``cueq`` extra) for the edge
            convolution and symmetric contraction; None keeps the model's (``config.json``).
    """

    def __init__(
        self,
        model: Union[str, Path, ModelBundle],
        dtype: str = "float64",
        head: Union[str, int, None] = None,
        backend: Optional[str] = None,
    ):
        if not isinstance(dtype, str):  # np.float64, np.dtype("float32"), jnp.float32 name the same
            try:
                dtype = np.dtype(dtype).name
            except TypeError:
                pass
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if dtype == "float64":
            enable_float64()
        self.bundle = model if isinstance(model, ModelBundle) else load_model(model)
        if backend is not None:
            self.bundle = ModelBundle(self.bundle.config.with_backend(backend), self.bundle.variables)
        self.config = self.bundle.config
        self.dtype = DTYPES[dtype]
        self.head = resolve_head(self.config.heads, head)
        self.module = self.bundle.module(self.dtype)
        self.variables = device_arrays(self.bundle.variables, self.dtype)
        self.node_energy_fn = node_energy_function(self.module)
        self._outputs = jax.jit(functools.partial(energy_forces_stress, self.node_energy_fn))
        self._compiled: dict[str, Callable] = {}

    def compiled(self, name: str, build: Callable[[], Callable]) -> Callable:
        """A jit-compiled function of this potential (e.g. Hessian rows), built once per name."""
        if name not in self._compiled:
            self._compiled[name] = build()
        return self._compiled[name]

    @property
    def cutoff(self) -> float:
        return self.config.r_max

    def graph(self, atoms: ase.Atoms) -> jraph.GraphsTuple:
        """Unpadded numpy graph of one structure; raises ValueError naming any bad input."""
        return atoms_to_graph(atoms, self.cutoff, self.config.atomic_numbers, head=self.head)

    def device_graph(self, graph: jraph.GraphsTuple, shape: Optional[PaddedShape] = None) -> jraph.GraphsTuple:
        """A numpy graph (see `graph`; or a batch of them) padded to bucket sizes, or at least to
        ``shape``, as JAX arrays in this potential's dtype (`equitrain_jax.data.padded_device_graph`)."""
        return padded_device_graph(graph, self.dtype, shape)

    def evaluate_graph(
        self, graph: jraph.GraphsTuple, shape: Optional[PaddedShape] = None
    ) -> list[dict[str, np.ndarray]]:
        """Outputs of every structure of a (batched, unpadded) graph as numpy, one dict each;
        ``shape``: pad at least to it (see `device_graph`)."""
        out = self._outputs(self.variables, self.device_graph(graph, shape))
        energy, node_energy, forces, stress, virial = (np.asarray(x) for x in out)
        results = []
        start = 0
        for g, n in enumerate(np.asarray(graph.n_node)):
            results.append(
                dict(
                    energy=float(energy[g]),
                    energies=node_energy[start : start + n],
                    forces=forces[start : start + n],
                    stress=stress[g],
                    virial=virial[g],
                )
            )
            start += n
        return results

    def evaluate(self, structures: Iterable[ase.Atoms], batch_size: int = 16) -> list[dict[str, Any]]:
        """Outputs for many structures, ``batch_size`` per compiled call (same results as one by one)."""
        if isinstance(structures, ase.Atoms):
            raise TypeError("evaluate takes a list of structures; for one, pass [atoms] (or use evaluate_graph)")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        structures = list(structures)
        results: list[dict[str, Any]] = []
        for start in range(0, len(structures), batch_size):
            chunk = structures[start : start + batch_size]
            results += self.evaluate_graph(batch_graphs([self.graph(a) for a in chunk]))
        return results

    def compiled_shapes(self) -> Optional[int]:
        """Number of compiled variants of the output function (one per bucket size seen)."""
        return self._outputs._cache_size()
