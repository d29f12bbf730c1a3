"""Mode Grüneisen parameters γ = −(V/ω) ∂ω/∂V of a volume series, by phonopy (first-order
perturbation with ∂D/∂V from the neighbouring volumes): at given q-points, on the band path (for a
model and references at the same q-points), and their error against a reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np
from phonopy import Phonopy
from phonopy.gruneisen.band_structure import GruneisenBandStructure
from phonopy.gruneisen.core import GruneisenBase

from equitrain_jax.phonons import band_structure
from equitrain_jax.phonons.qha_config import GRUNEISEN_MIN_FREQUENCY_THZ

if TYPE_CHECKING:
    from equitrain_jax.phonons.qha import QuasiHarmonic

# ---------------------------------------------------------------------------- mode Grüneisen parameters


def gruneisen_centre(volumes: Sequence[float], v0: float) -> int:
    """Index of the grid volume nearest ``v0`` that has a neighbour on each side."""
    volumes = np.asarray(volumes)
    return int(np.clip(np.argmin(np.abs(volumes - v0)), 1, len(volumes) - 2))


def mode_gruneisen(phonons: Sequence[Phonopy], centre: int, qpoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mode Grüneisen parameters γ = −(V/ω) ∂ω/∂V at reduced ``qpoints`` [Q, 3] of the volume
    ``centre``, by phonopy (first-order perturbation with ∂D/∂V from the neighbouring volumes
    ``centre ± 1``).  Returns (frequencies [Q, B] THz ascending, γ [Q, B])."""
    if not 1 <= centre <= len(phonons) - 2:
        raise ValueError(f"volume {centre} needs a neighbour on each side among {len(phonons)} volumes")
    with np.errstate(divide="ignore", invalid="ignore"):  # γ is 0/0 for the acoustic modes at Γ
        base = GruneisenBase(phonons[centre].dynamical_matrix, phonons[centre + 1].dynamical_matrix,
                             phonons[centre - 1].dynamical_matrix, qpoints=np.asarray(qpoints, dtype=float))
    eigenvalues = base.get_eigenvalues()
    frequencies = np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)) * phonons[centre].unit_conversion_factor
    return frequencies, np.asarray(base.get_gruneisen())


def gruneisen_band_structure(phonons: Sequence[Phonopy], centre: int, npoints: int = 51) -> GruneisenBandStructure:
    """Phonopy's `GruneisenBandStructure` on the automatic band path of volume ``centre`` (its
    ``write_yaml`` writes phonopy-gruneisen's ``gruneisen.yaml``)."""
    bands = band_structure(phonons[centre], npoints=npoints)
    with np.errstate(divide="ignore", invalid="ignore"):  # γ is 0/0 for the acoustic modes at Γ
        return GruneisenBandStructure(
            bands["qpoints"], phonons[centre].dynamical_matrix, phonons[centre + 1].dynamical_matrix,
            phonons[centre - 1].dynamical_matrix, factor=phonons[centre].unit_conversion_factor,
            path_connections=bands["path_connections"], labels=bands["labels"],
        )


def gruneisen_on_path(model: QuasiHarmonic, others: Optional[Mapping[str, QuasiHarmonic]] = None, npoints: int = 51,
                      label: str = "model") -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Mode Grüneisen parameters on the automatic band path of ``model``'s Grüneisen volume, for the
    model and each of ``others`` at the same q-points of the same primitive cell (their cells may
    differ by a strain, `equitrain_jax.phonons.compare.primitive_transformation`), or, for a cell
    in another orientation, on its own automatic (seekpath) band path, which must have the same
    labels and segment lengths: the same path in its own basis.  Returns the
    band path (`band_structure`'s dict) and, by label (``model``'s ``label`` first), (frequencies
    THz ascending, γ), each [Q, B]."""
    from equitrain_jax.phonons.compare import primitive_transformation

    centre = model.phonons[model.centre]
    bands = band_structure(centre, npoints=npoints)
    qpoints = np.concatenate(bands["qpoints"])
    curves = {label: mode_gruneisen(model.phonons, model.centre, qpoints)}
    for name, other in (others or {}).items():
        other_centre = other.phonons[other.centre]
        try:
            other_qpoints = qpoints @ primitive_transformation(centre, other_centre).T
        except ValueError:  # another orientation (a CIF, say): the same seekpath path in its own basis
            other_bands = band_structure(other_centre, npoints=npoints)
            if other_bands["labels"] != bands["labels"] or [len(q) for q in other_bands["qpoints"]] != [
                    len(q) for q in bands["qpoints"]]:
                raise ValueError(f"{name}'s cell is neither the same lattice as the model's nor on the same "
                                 f"automatic band path ({other_bands['labels']} against {bands['labels']})") from None
            other_qpoints = np.concatenate(other_bands["qpoints"])
        curves[name] = mode_gruneisen(other.phonons, other.centre, other_qpoints)
    return bands, curves


def gruneisen_error(model: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray],
                    min_frequency: float = GRUNEISEN_MIN_FREQUENCY_THZ) -> dict[str, float]:
    """MAE and largest |error| of mode Grüneisen parameters, band by band (ascending frequency)
    at the same q-points, over the modes whose reference frequency is at least ``min_frequency``
    THz; also the mean γ of each (``model_mean``, ``reference_mean``) over those modes."""
    (_, gamma), (frequencies, gamma_reference) = model, reference
    kept = frequencies >= min_frequency
    difference = gamma[kept] - gamma_reference[kept]
    return {"mae": float(np.mean(np.abs(difference))), "max_abs_error": float(np.max(np.abs(difference))),
            "model_mean": float(np.mean(gamma[kept])), "reference_mean": float(np.mean(gamma_reference[kept])),
            "n_modes": int(kept.sum()), "min_frequency_THz": min_frequency}
