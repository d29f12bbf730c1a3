"""The Hessian term of the loss: the model's Hessian-vector products H·v against DFT targets Φ·v.

Pure functions over a phonon batch (a padded graph carrying ``nodes["hessian_directions"]``,
``["hessian_targets"]`` and ``["hessian_mask"]``; see `equitrain_jax.train.phonon_data`) and the
model's products.  The products come from a `HessianVectorProduct` the caller passes in, so the
same code serves any energy function; the loss is pooled as sums and counts, like
`equitrain_jax.train.loss.loss_sums`, so it adds up across batches and devices before it is
divided.  Every residual component is in eV/Å² (per Å of a direction of length √(3N)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from phonopy import Phonopy

from equitrain_jax.models.quantities import NodeEnergyFn
from equitrain_jax.phonons.compare import frequencies_at, frequency_errors, mesh_qpoints
from equitrain_jax.train.config import LOSS_KINDS as KINDS
from equitrain_jax.train.loss import pointwise

HessianVectorProduct = Callable[[Any, jraph.GraphsTuple, jnp.ndarray], jnp.ndarray]
"""``hvp(variables, graph, tangents [K, n_node, 3]) -> [K, n_node, 3]`` eV/Å²: the Hessian of the
summed energy of every structure in a padded graph with respect to all node positions, applied to
each tangent, at the graph's positions."""


class HessianLossConfig(NamedTuple):
    """Weight and pointwise loss of the Hessian term (residuals in eV/Å²).

    Huber with δ = 0.1 eV/Å² (a few per cent of typical force constants, 1–10 eV/Å²) by default:
    in the EMT-aluminium prototype (docs/phonon-finetuning.md) it cut the frequency error 144× in
    40 steps where MSE cut it 21×.
    """

    weight: float = 1.0
    kind: str = "huber"
    huber_delta: float = 0.1

    def check(self) -> "HessianLossConfig":
        if self.kind not in KINDS:
            raise ValueError(f"Hessian loss kind must be one of {KINDS}, got {self.kind!r}")
        if self.huber_delta <= 0:
            raise ValueError(f"Hessian huber_delta must be positive (eV/Å²), got {self.huber_delta}")
        if self.weight < 0:
            raise ValueError(f"Hessian weight must be non-negative, got {self.weight}")
        return self


def hvp_from_node_energies(node_energy_fn: NodeEnergyFn) -> HessianVectorProduct:
    """A `HessianVectorProduct` of a per-node energy function, forward over reverse.

    Interim: phase 2 takes the products from the package's single energy function
    (`equitrain_jax.models.quantities`); this one serves the tests and the prototype.  The primal
    and its reverse pass are shared by the K tangents (``jax.vmap`` over the tangent only).
    """

    def hvp(variables: Any, graph: jraph.GraphsTuple, tangents: jnp.ndarray) -> jnp.ndarray:
        def energy(positions):
            return jnp.sum(node_energy_fn(variables, graph._replace(nodes={**graph.nodes, "positions": positions})))

        positions = graph.nodes["positions"]
        gradient = jax.grad(energy)
        return jax.vmap(lambda tangent: jax.jvp(gradient, (positions,), (tangent.astype(positions.dtype),))[1])(tangents)

    return hvp


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


def phonon_frequency_errors(
    force_constants: np.ndarray,
    reference: Phonopy,
    mesh: Sequence[int] = (8, 8, 8),
    nac: bool = True,
) -> dict[str, float]:
    """Frequency errors (THz) of a model's force constants against a phonopy reference on a
    Γ-centred ``mesh``: MAE, RMSE, largest |error| and error of the highest frequency.

    ``force_constants`` [N, 3, N, 3] eV/Å² are the model's Hessian of the reference's own
    supercell (same atom order, e.g. a `PhononItem`'s supercell).  Like is compared with like:
    with ``nac`` and NAC parameters on the reference, both sides get the reference's Born charges
    and dielectric tensor (a model predicts none); with ``nac=False`` neither does.
    """
    n = len(reference.supercell)
    force_constants = np.asarray(force_constants, dtype=float)
    if force_constants.shape != (n, 3, n, 3):
        raise ValueError(f"force constants have shape {list(force_constants.shape)}, expected [{n}, 3, {n}, 3] for the reference's supercell")
    nac_params: Optional[dict] = reference.nac_params if nac else None
    phonons = []
    for fc in (np.transpose(force_constants, (0, 2, 1, 3)), reference.force_constants):
        phonon = Phonopy(reference.unitcell, reference.supercell_matrix, primitive_matrix=reference.primitive_matrix,
                         symprec=reference.symmetry.tolerance)
        phonon.force_constants = np.ascontiguousarray(fc)
        phonon.nac_params = nac_params
        phonons.append(phonon)
    qpoints = mesh_qpoints(mesh)
    model, theirs = (frequencies_at(phonon, qpoints) for phonon in phonons)
    return {"mesh": list(mesh), "nac": nac_params is not None, **frequency_errors(model, theirs)}
