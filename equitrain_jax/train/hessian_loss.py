"""The Hessian term of the loss: the model's Hessian-vector products H·v against DFT targets Φ·v.

Pure functions over a phonon batch (a padded graph carrying ``nodes["hessian_directions"]``,
``["hessian_targets"]`` and ``["hessian_mask"]``; see `equitrain_jax.train.phonon_data`) and the
model's products.  The products come from a `HessianVectorProduct` (`model_hvp`: the one energy
function's `hessian_vector_product` for a model), so the same code serves any energy function; the
loss is pooled as sums and counts, like
`equitrain_jax.train.loss.loss_sums`, so it adds up across batches and devices before it is
divided.  Every residual component is in eV/Å² (per Å of a direction of length √(3N)).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from phonopy import Phonopy

from equitrain_jax.models.quantities import NodeEnergyFn, hessian_vector_product
from equitrain_jax.phonons.compare import frequencies_at, frequency_errors, mesh_qpoints
from equitrain_jax.train.config import HessianLossConfig
from equitrain_jax.train.loss import pointwise

HessianVectorProduct = Callable[[Any, jraph.GraphsTuple, jnp.ndarray], jnp.ndarray]
"""``hvp(variables, graph, tangents [K, n_node, 3]) -> [K, n_node, 3]`` eV/Å²: the Hessian of the
summed energy of every structure in a padded graph with respect to all node positions, applied to
each tangent, at the graph's positions."""


def over_tangents(one: Callable, sequential: bool) -> Callable:
    """``one(variables, graph, *tangents)`` of one tangent (or pair) mapped over K stacked along
    the first axis: one after another with each rematerialised in the reverse pass
    (``sequential``: `jax.lax.map` of `jax.checkpoint`), or all at once (`jax.vmap`).  A single
    tangent is never rematerialised: with nothing to take turns with, recomputing it would only
    cost time (about a quarter more per product, `benchmarks/hessian_parts.py`)."""

    def mapped(variables: Any, graph: jraph.GraphsTuple, *tangents: jnp.ndarray) -> jnp.ndarray:
        if sequential and tangents[0].shape[0] > 1:
            rematerialised = jax.checkpoint(one)
            return jax.lax.map(lambda each: rematerialised(variables, graph, *each), tangents)
        return jax.vmap(functools.partial(one, variables, graph))(*tangents)

    return mapped


def model_hvp(node_energy_fn: NodeEnergyFn, sequential: bool = True) -> HessianVectorProduct:
    """The `HessianVectorProduct` of a model (its `NodeEnergyFn`): the one energy function's
    `equitrain_jax.models.quantities.hessian_vector_product` at the graph's positions.

    ``sequential`` (the default): one tangent after another (`jax.lax.map`), each product
    rematerialised (`jax.checkpoint`) in the reverse pass of the training loss, which then holds one
    tangent's intermediates at the price of recomputing its product.  ``sequential=False``: vmapped
    over the K tangents (one primal and reverse pass, K forward-mode tangents at once), whose
    reverse pass keeps every tangent's intermediates, so memory grows with K.  Same values; on one
    CPU core the sequential training step was also the faster at K = 4 (`HessianLossConfig`).
    """

    def one(variables: Any, graph: jraph.GraphsTuple, tangent: jnp.ndarray) -> jnp.ndarray:
        positions = graph.nodes["positions"]
        return hessian_vector_product(node_energy_fn, variables, graph, positions, tangent.astype(positions.dtype))

    return over_tangents(one, sequential)


def hessian_products(hvp: HessianVectorProduct, variables: Any, graph: jraph.GraphsTuple) -> jnp.ndarray:
    """The model's H·v for the batch's directions, node-major like the targets: [n_node, K, 3] eV/Å²."""
    tangents = jnp.swapaxes(graph.nodes["hessian_directions"], 0, 1)
    return jnp.swapaxes(hvp(variables, graph, tangents), 0, 1)


def _residual(products: jnp.ndarray, graph: jraph.GraphsTuple) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Residual H·v − target [n_node, K, 3] (eV/Å²) and its mask: real atoms and real directions."""
    residual = products - graph.nodes["hessian_targets"]
    mask = graph.nodes["hessian_mask"] & graph.nodes["mask"][:, None]
    return residual, jnp.broadcast_to(mask[..., None], residual.shape)


def hessian_loss_sums(products: jnp.ndarray, graph: jraph.GraphsTuple, config: HessianLossConfig) -> dict[str, jnp.ndarray]:
    """Sum of the pointwise loss over real components and their count: ``hessian_loss``,
    ``hessian_count``; pool them (add across batches/devices), then `combine_hessian_loss`."""
    residual, mask = _residual(products, graph)
    return {
        "hessian_loss": jnp.sum(jnp.where(mask, pointwise(residual, config), 0.0)),
        "hessian_count": jnp.sum(mask).astype(residual.dtype),
    }


def combine_hessian_loss(sums: dict[str, jnp.ndarray], config: HessianLossConfig) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(weight × mean, mean) of pooled `hessian_loss_sums`; 0 when no component was seen."""
    mean = sums["hessian_loss"] / jnp.maximum(sums["hessian_count"], 1)
    return config.weight * mean, mean


def hessian_error_sums(products: jnp.ndarray, graph: jraph.GraphsTuple) -> dict[str, jnp.ndarray]:
    """Sums of |residual| and residual² over real components and their count (``hessian_abs``,
    ``hessian_sq``, ``hessian_count``), to pool and pass to `hessian_metrics`."""
    residual, mask = _residual(products, graph)
    return {
        "hessian_abs": jnp.sum(jnp.where(mask, jnp.abs(residual), 0.0)),
        "hessian_sq": jnp.sum(jnp.where(mask, jnp.square(residual), 0.0)),
        "hessian_count": jnp.sum(mask).astype(residual.dtype),
    }


def hessian_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Pooled error sums → MAE and RMSE of the H·v components (eV/Å²); NaN where nothing was seen."""
    count = float(sums["hessian_count"])
    if count <= 0:
        return {"hessian_mae_ev_per_a2": float("nan"), "hessian_rmse_ev_per_a2": float("nan")}
    return {
        "hessian_mae_ev_per_a2": float(sums["hessian_abs"]) / count,
        "hessian_rmse_ev_per_a2": float(np.sqrt(float(sums["hessian_sq"]) / count)),
    }


# ---------------------------------------------------------------------------- validation


def hessian_of_first_structure(
    hvp: HessianVectorProduct, variables: Any, graph: jraph.GraphsTuple, n_atoms: int, chunk_size: int = 24
) -> np.ndarray:
    """The full Hessian [N, 3, N, 3] eV/Å² of the first N nodes of a padded graph of ONE structure,
    ``chunk_size`` unit tangents per call of ``hvp`` (jit it; the last chunk is padded with zeros,
    so every call has one shape)."""
    n_node = graph.nodes["positions"].shape[0]
    rows = []
    for start in range(0, 3 * n_atoms, chunk_size):
        tangents = np.zeros((chunk_size, n_node * 3))
        stop = min(start + chunk_size, 3 * n_atoms)
        tangents[np.arange(stop - start), np.arange(start, stop)] = 1.0
        out = hvp(variables, graph, jnp.asarray(tangents.reshape(chunk_size, n_node, 3), graph.nodes["positions"].dtype))
        rows.append(np.asarray(out)[: stop - start, :n_atoms])
    return np.concatenate(rows).reshape(n_atoms, 3, n_atoms, 3).astype(np.float64)


class FrequencyComparison:
    """Phonon frequencies of a model's force constants against a phonopy reference on a Γ-centred
    ``mesh``, the reference's frequencies computed once (THz).

    ``force_constants`` [N, 3, N, 3] eV/Å² are the model's Hessian of the reference's own
    supercell (same atom order, e.g. a `PhononItem`'s supercell).  Like is compared with like:
    with ``nac`` and NAC parameters on the reference, both sides get the reference's Born charges
    and dielectric tensor (a model predicts none); with ``nac=False`` neither does.
    """

    def __init__(self, reference: Phonopy, mesh: Sequence[int] = (8, 8, 8), nac: bool = True):
        self.n_atoms = len(reference.supercell)
        self.mesh, self.qpoints = list(mesh), mesh_qpoints(mesh)
        self.nac_params: Optional[dict] = reference.nac_params if nac else None
        phonons = []
        for fc in (reference.force_constants, reference.force_constants):
            phonon = Phonopy(reference.unitcell, reference.supercell_matrix, primitive_matrix=reference.primitive_matrix,
                             symprec=reference.symmetry.tolerance)
            phonon.force_constants = np.ascontiguousarray(fc)
            phonon.nac_params = self.nac_params
            phonons.append(phonon)
        self.model, reference_phonon = phonons
        self.reference_frequencies = frequencies_at(reference_phonon, self.qpoints)

    def frequencies(self, force_constants: np.ndarray) -> np.ndarray:
        """The model's frequencies [Q, B] (THz) at the mesh's q-points."""
        n = self.n_atoms
        force_constants = np.asarray(force_constants, dtype=float)
        if force_constants.shape != (n, 3, n, 3):
            raise ValueError(f"force constants have shape {list(force_constants.shape)}, expected [{n}, 3, {n}, 3] "
                             "for the reference's supercell")
        self.model.force_constants = np.ascontiguousarray(np.transpose(force_constants, (0, 2, 1, 3)))
        return frequencies_at(self.model, self.qpoints)

    def errors(self, force_constants: np.ndarray) -> dict[str, Any]:
        """MAE, RMSE, largest |error| and error of the highest frequency (THz), see
        `equitrain_jax.phonons.compare.frequency_errors`."""
        model = self.frequencies(force_constants)
        return {"mesh": self.mesh, "nac": self.nac_params is not None,
                **frequency_errors(model, self.reference_frequencies)}


def phonon_frequency_errors(
    force_constants: np.ndarray,
    reference: Phonopy,
    mesh: Sequence[int] = (8, 8, 8),
    nac: bool = True,
) -> dict[str, Any]:
    """Frequency errors (THz) of a model's force constants [N, 3, N, 3] (eV/Å²) against a phonopy
    reference on a Γ-centred ``mesh`` (see `FrequencyComparison`)."""
    return FrequencyComparison(reference, mesh, nac).errors(force_constants)


class PhononValidation:
    """A validation phonon reference, evaluated each epoch from the model's full Hessian of its
    supercell (3N Hessian-vector products with unit vectors, ``chunk_size`` a call): the
    frequency errors on a mesh (`FrequencyComparison`) and the exact Hessian term.

    The Hessian term uses every direction √(3N)·e_j (the scale of the training directions), so its
    mean squared residual per component is exactly ‖H − Φ‖²_F / 3N, what random training
    directions estimate; MAE and RMSE are of those components (eV/Å²).

    Args:
        item: the reference as a `PhononItem` (supercell, Φ); ``reference``: the `Phonopy` object
            it was read from (frequencies, NAC parameters).
        graph: the item's padded graph as device arrays (`phonon_graph`, padded, in the
            training dtype).
    """

    def __init__(self, item: Any, reference: Phonopy, graph: jraph.GraphsTuple, mesh: Sequence[int] = (8, 8, 8),
                 nac: bool = True, chunk_size: int = 24):
        self.item, self.graph, self.chunk_size = item, graph, chunk_size
        self.comparison = FrequencyComparison(reference, mesh, nac)

    def sums(self, hvp: HessianVectorProduct, variables: Any, config: HessianLossConfig) -> dict[str, float]:
        """Pooled sums (add them over references, then `phonon_metrics`): absolute frequency
        errors and their count, and the Hessian term's loss and error sums."""
        n = self.item.n_atoms
        hessian = hessian_of_first_structure(hvp, variables, self.graph, n, self.chunk_size)
        residual = np.sqrt(3 * n) * (hessian - self.item.force_constants).reshape(3 * n, 3 * n)
        difference = self.comparison.frequencies(hessian) - self.comparison.reference_frequencies
        return {
            "frequency_abs": float(np.sum(np.abs(difference))), "frequency_count": float(difference.size),
            "hessian_loss": float(np.sum(pointwise(residual, config))), "hessian_abs": float(np.sum(np.abs(residual))),
            "hessian_sq": float(np.sum(np.square(residual))), "hessian_count": float(residual.size),
        }


def validate_phonons(validations: Sequence[PhononValidation], hvp: HessianVectorProduct, variables: Any,
                     config: HessianLossConfig) -> dict[str, float]:
    """Per-epoch metrics over the validation phonon references: ``phonon_mae_thz`` (frequency MAE
    over all their mesh frequencies, THz), ``hessian_mae_ev_per_a2``, ``hessian_rmse_ev_per_a2``
    (see `PhononValidation`) and ``valid_hessian_loss`` (weighted like the training term)."""
    parts = [validation.sums(hvp, variables, config) for validation in validations]
    total = {key: sum(part[key] for part in parts) for key in parts[0]}
    return {
        "phonon_mae_thz": total["frequency_abs"] / total["frequency_count"],
        **hessian_metrics(total),
        "valid_hessian_loss": float(combine_hessian_loss(total, config)[0]),
    }
