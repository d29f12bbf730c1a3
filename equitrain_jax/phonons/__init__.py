"""Phonons from jit-compiled analytic Hessians, handed to phonopy as force constants; unstable-mode
analysis and comparison with a reference.

Modules: `hessian` (Hessian-vector products of ASE structures), `harmonic` (force constants and
phonopy objects holding them), `bridge` (ASE ↔ phonopy), `results` (bands, DOS, thermal
properties, files), `modes` and `scans` (unstable modes and the energy along them), `relax`,
`compare` (against a reference) and `plots`; beyond the harmonic approximation `volumes`, `qha` and
`gruneisen` (quasi-harmonic) and `third_order`/`conductivity`.

Names are imported on first use (PEP 562), so the command line reads its defaults (e.g.
`equitrain_jax.phonons.qha_config`) without loading JAX.  The full Hessian is
`equitrain_jax.phonons.hessian.hessian` and the relaxation `equitrain_jax.phonons.relax.relax` (not
re-exported here: each would be shadowed by its module once that is imported).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "analyse_imaginary_modes": "equitrain_jax.phonons.scans",
    "ase_to_phonopy": "equitrain_jax.phonons.bridge",
    "band_structure": "equitrain_jax.phonons.results",
    "check_supercell_size": "equitrain_jax.phonons.bridge",
    "commensurate_qpoints": "equitrain_jax.phonons.modes",
    "compare_phonons": "equitrain_jax.phonons.compare",
    "CUTOFF_FREQUENCY_THZ": "equitrain_jax.phonons.results",
    "DEFAULT_METHOD": "equitrain_jax.phonons.harmonic",
    "finite_displacement_force_constants": "equitrain_jax.phonons.harmonic",
    "follow_mode": "equitrain_jax.phonons.scans",
    "force_constants": "equitrain_jax.phonons.harmonic",
    "free_atom_indices": "equitrain_jax.phonons.hessian",
    "gamma_frequencies": "equitrain_jax.phonons.results",
    "hessian_rows": "equitrain_jax.phonons.hessian",
    "hessian_vector_products": "equitrain_jax.phonons.hessian",
    "imaginary_modes": "equitrain_jax.phonons.modes",
    "IMAGINARY_TOLERANCE_THZ": "equitrain_jax.phonons.results",
    "load_reference": "equitrain_jax.phonons.compare",
    "METHODS": "equitrain_jax.phonons.harmonic",
    "modes_at": "equitrain_jax.phonons.modes",
    "partial_hessian": "equitrain_jax.phonons.hessian",
    "perpendicular_widths": "equitrain_jax.phonons.bridge",
    "PhononMode": "equitrain_jax.phonons.modes",
    "phonopy_from_calculator": "equitrain_jax.phonons.harmonic",
    "phonopy_from_potential": "equitrain_jax.phonons.harmonic",
    "phonopy_to_ase": "equitrain_jax.phonons.bridge",
    "Potential": "equitrain_jax.potential",
    "scan_mode": "equitrain_jax.phonons.scans",
    "scan_mode_2d": "equitrain_jax.phonons.scans",
    "summary": "equitrain_jax.phonons.results",
    "SupercellTooSmallWarning": "equitrain_jax.phonons.bridge",
    "NonSmoothRadiusWarning": "equitrain_jax.phonons.bridge",
    "check_derivative_jumps": "equitrain_jax.phonons.bridge",
    "thermal_properties": "equitrain_jax.phonons.results",
    "total_dos": "equitrain_jax.phonons.results",
    "vibrations_data": "equitrain_jax.phonons.hessian",
    "write_results": "equitrain_jax.phonons.results",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'equitrain_jax.phonons' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
