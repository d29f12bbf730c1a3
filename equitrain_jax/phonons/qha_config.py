"""Defaults and cheap checks of the quasi-harmonic approximation (numpy only, no JAX), so the
command line can show and validate them before loading a model."""

from __future__ import annotations

import numpy as np

N_VOLUMES = 11
VOLUME_STRAIN_RANGE = 0.05
"""Default grid: 11 volumes from 0.95·V₀ to 1.05·V₀ (ASE ``calculate_eos``'s ``eps`` is this
volume strain; ±5 % in volume is ±1.6 % in lattice parameter)."""
DISPLACEMENT_DISTANCE = 0.01
"""Å, phonopy's default displacement; the forces are exact (−H·u), so it only sets the scale."""
EOS = "vinet"
"""Phonopy's default equation of state for F(V; T)."""
MESH = 100.0
"""Phonopy's default q-point sampling of `phonopy.run_qha`: a length in Å, round(100·|b_i|)
points along reciprocal vector b_i (|b_i| in 1/Å without 2π)."""
SMOOTHNESS_TOLERANCE_MEV = 0.05
"""meV per atom: the largest residual of a cubic fit to the phonon free energy F_ph(V) at 300 K
above which `qha_summary` calls F_ph(V) not smooth.  Smooth models leave ~0.003 (NaCl with the
test model, SevenNet-0 Si on one side of its kink); SevenNet-0 Si across the inner radius of its
XPLOR switch leaves 1.7."""
GRUNEISEN_MIN_FREQUENCY_THZ = 0.5
"""Modes below this frequency (THz; the acoustic ones near Γ) are left out of Grüneisen errors:
γ = −(V/ω) dω/dV is 0/0 at Γ and its rounding error grows as 1/ω² next to it."""
EOS_CHOICES = ("vinet", "birch_murnaghan", "murnaghan")
"""phonopy's equations of state for F(V; T)."""


def volume_factors(n_volumes: int = N_VOLUMES, strain_range: float = VOLUME_STRAIN_RANGE) -> np.ndarray:
    """V/V₀ of the grid: ``n_volumes`` values evenly spaced in 1 − s … 1 + s (ASE ``calculate_eos``)."""
    if int(n_volumes) != n_volumes or n_volumes < 5:
        raise ValueError(f"QHA needs at least 5 volumes (phonopy's run_qha), got {n_volumes}")
    if not 0 < strain_range < 0.5:
        raise ValueError(f"the volume strain range must be in (0, 0.5), got {strain_range}")
    return np.linspace(1 - strain_range, 1 + strain_range, int(n_volumes))


def temperature_grid(t_max: float = 1000.0, t_step: float = 10.0) -> np.ndarray:
    """0, t_step, …, t_max + t_step K: `phonopy.run_qha` spends the last point on finite
    differences, so its results then reach exactly ``t_max``."""
    if t_step <= 0 or t_max < 2 * t_step:
        raise ValueError(f"need t_step > 0 and t_max ≥ 2·t_step, got t_max={t_max} K, t_step={t_step} K")
    return np.arange(0.0, t_max + 1.5 * t_step, t_step)
