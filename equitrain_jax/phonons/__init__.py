"""Phonons from jit-compiled analytic Hessians, handed to phonopy as force constants; unstable-mode
analysis and comparison with a reference."""

from equitrain_jax.phonons.compare import compare_phonons, load_reference
from equitrain_jax.phonons.hessian import (
    energy_of_positions,
    hessian,
    hessian_rows,
    hessian_vector_products,
    positions_energy,
)
from equitrain_jax.phonons.modes import (
    PhononMode,
    analyse_imaginary_modes,
    commensurate_qpoints,
    follow_mode,
    imaginary_modes,
    modes_at,
    scan_mode,
    scan_mode_2d,
)
from equitrain_jax.phonons.phonopy_interface import (
    SupercellTooSmallWarning,
    band_structure,
    check_supercell_size,
    force_constants,
    gamma_frequencies,
    phonopy_from_calculator,
    phonopy_from_potential,
    summary,
    thermal_properties,
    total_dos,
    write_results,
)

__all__ = [
    "PhononMode",
    "SupercellTooSmallWarning",
    "analyse_imaginary_modes",
    "band_structure",
    "check_supercell_size",
    "commensurate_qpoints",
    "compare_phonons",
    "energy_of_positions",
    "follow_mode",
    "force_constants",
    "gamma_frequencies",
    "hessian",
    "hessian_rows",
    "hessian_vector_products",
    "imaginary_modes",
    "load_reference",
    "modes_at",
    "phonopy_from_calculator",
    "phonopy_from_potential",
    "positions_energy",
    "scan_mode",
    "scan_mode_2d",
    "summary",
    "thermal_properties",
    "total_dos",
    "write_results",
]
