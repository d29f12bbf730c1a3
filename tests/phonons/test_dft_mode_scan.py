"""The soft-mode pattern that benchmarks/data/generate.py scans with DFT, checked against phonopy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import phonopy
import pytest

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data"


def generator():
    spec = importlib.util.spec_from_file_location("generate", DATA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports ase and numpy only; GPAW only when a DFT step runs
    return module


@pytest.mark.skipif(not (DATA / "BaTiO3" / "phonopy_params.yaml").is_file(), reason="no BaTiO3 reference")
def test_soft_mode_pattern_is_the_imaginary_gamma_mode_in_mass_weighted_units():
    """For cubic BaTiO3 (PBE reference): the pattern u (Å per unit Q) is an eigenvector of phonopy's
    force constants, Φu = λ M u with λ < 0 at the reference's imaginary Γ frequency; it is normalised
    so that Σ m_i |u_i|² = 1 (Q in amu^½ Å); it is polar along z; and ½·curvature·Q² equals the
    harmonic energy ½ (Qu)ᵀ Φ (Qu) from the force constants (which checks the THz → eV/(amu Å²) units)."""
    gen = generator()
    material = gen.Material("BaTiO3", DATA / "logs")
    supercell, frequency, pattern = material.soft_mode()
    reference = phonopy.load(DATA / "BaTiO3" / "phonopy_params.yaml", log_level=0)
    assert frequency == pytest.approx(np.sort(reference.get_frequencies([0, 0, 0]))[0], abs=1e-9)
    assert frequency < -1.0
    masses = np.asarray(supercell.masses)
    assert np.sum(masses[:, None] * pattern**2) == pytest.approx(1.0, abs=1e-12)
    assert np.abs(pattern[:, :2]).max() < 1e-8 and np.abs(pattern[:, 2]).max() > 0.05  # polar along z
    fc = reference.force_constants  # [N, N, 3, 3] eV/Å², same supercell (1×1×1)
    n = len(masses)
    phi = fc.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    u = pattern.ravel()
    force_response = phi @ u
    curvature = gen.harmonic_curvature(frequency)  # eV / (amu Å²)
    np.testing.assert_allclose(force_response, curvature * np.repeat(masses, 3) * u, rtol=0,
                               atol=1e-6 * np.abs(force_response).max())
    q = 0.7
    assert 0.5 * curvature * q**2 == pytest.approx(0.5 * (q * u) @ phi @ (q * u), rel=1e-6)
