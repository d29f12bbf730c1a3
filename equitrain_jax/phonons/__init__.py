"""Phonons from jit-compiled analytic Hessians, handed to phonopy as force constants."""

from equitrain_jax.phonons.hessian import energy_of_positions, hessian, hessian_rows, positions_energy
from equitrain_jax.phonons.phonopy_interface import (
    SupercellTooSmallWarning,
    band_structure,
    check_supercell_size,
    force_constants,
    gamma_frequencies,
    phonopy_from_potential,
    summary,
    thermal_properties,
    total_dos,
    write_results,
)

__all__ = [
    "SupercellTooSmallWarning",
    "band_structure",
    "check_supercell_size",
    "energy_of_positions",
    "force_constants",
    "gamma_frequencies",
    "hessian",
    "hessian_rows",
    "phonopy_from_potential",
    "positions_energy",
    "summary",
    "thermal_properties",
    "total_dos",
    "write_results",
]
