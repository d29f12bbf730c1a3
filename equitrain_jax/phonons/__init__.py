"""Phonons from jit-compiled analytic Hessians, handed to phonopy as force constants; unstable-mode
analysis and comparison with a reference.

Modules: `hessian` (Hessian-vector products of ASE structures), `harmonic` (force constants and
phonopy objects holding them), `bridge` (ASE ↔ phonopy), `results` (bands, DOS, thermal
properties, files), `modes` and `scans` (unstable modes and the energy along them), `relax`,
`compare` (against a reference) and `plots`.
"""

from equitrain_jax.phonons.bridge import (
    SupercellTooSmallWarning,
    ase_to_phonopy,
    check_supercell_size,
    perpendicular_widths,
    phonopy_to_ase,
)
from equitrain_jax.phonons.compare import compare_phonons, load_reference
from equitrain_jax.phonons.harmonic import (
    DEFAULT_METHOD,
    METHODS,
    finite_displacement_force_constants,
    force_constants,
    phonopy_from_calculator,
    phonopy_from_potential,
)
from equitrain_jax.phonons.hessian import hessian, hessian_rows, hessian_vector_products
from equitrain_jax.phonons.modes import PhononMode, commensurate_qpoints, imaginary_modes, modes_at
from equitrain_jax.phonons.relax import relax
from equitrain_jax.phonons.results import (
    CUTOFF_FREQUENCY_THZ,
    IMAGINARY_TOLERANCE_THZ,
    band_structure,
    gamma_frequencies,
    summary,
    thermal_properties,
    total_dos,
    write_results,
)
from equitrain_jax.phonons.scans import analyse_imaginary_modes, follow_mode, scan_mode, scan_mode_2d
from equitrain_jax.potential import Potential

__all__ = [
    "CUTOFF_FREQUENCY_THZ",
    "DEFAULT_METHOD",
    "IMAGINARY_TOLERANCE_THZ",
    "METHODS",
    "PhononMode",
    "Potential",
    "SupercellTooSmallWarning",
    "analyse_imaginary_modes",
    "ase_to_phonopy",
    "band_structure",
    "check_supercell_size",
    "commensurate_qpoints",
    "compare_phonons",
    "finite_displacement_force_constants",
    "follow_mode",
    "force_constants",
    "gamma_frequencies",
    "hessian",
    "hessian_rows",
    "hessian_vector_products",
    "imaginary_modes",
    "load_reference",
    "modes_at",
    "perpendicular_widths",
    "phonopy_from_calculator",
    "phonopy_from_potential",
    "phonopy_to_ase",
    "relax",
    "scan_mode",
    "scan_mode_2d",
    "summary",
    "thermal_properties",
    "total_dos",
    "write_results",
]
