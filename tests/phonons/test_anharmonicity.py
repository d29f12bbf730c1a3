"""The anharmonicity guard's mean Grüneisen parameter (phono3py's, from the model's exact fc2 and fc3)
against the definition: γ = −d ln ω / d ln V from the model's harmonic phonons at two volumes
(exact Hessians, no fc3), heat-capacity weighted by hand."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from phonopy import Phonopy

from equitrain_jax.phonons.anharmonicity import mean_gruneisen, model_phono3py
from equitrain_jax.phonons.bridge import ase_to_phonopy
from equitrain_jax.phonons.compare import mesh_qpoints
from equitrain_jax.phonons.harmonic import phonopy_from_potential

from .third_order_models import kappa_potential, silicon

MESH = (4, 4, 4)


@pytest.mark.slow
def test_mean_gruneisen_equals_volume_finite_differences_of_harmonic_phonons():
    """Diamond Si (8-atom cell, no internal coordinate: clamped-ion γ is the whole γ), a random
    SevenNet-architecture model: γ̄(300 K) from fc2 and fc3 against central differences of the mode
    frequencies under ±0.2 % linear strain (error ∝ strain², estimated from ±0.4 %)."""
    potential = kappa_potential()
    template = Phonopy(ase_to_phonopy(silicon()), np.eye(3, dtype=int), primitive_matrix="F")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 8-atom cell is narrower than 2·r_max: the same on both sides
        exact = mean_gruneisen(model_phono3py(potential, template), MESH, 300.0)

    def finite_difference(strain):
        frequencies = []
        for sign in (1, -1):
            atoms = silicon()
            atoms.set_cell(atoms.cell * (1 + sign * strain), scale_atoms=True)
            phonon = phonopy_from_potential(potential, atoms, 1, primitive_matrix="F", check_size=False)
            phonon.run_qpoints(mesh_qpoints(MESH))
            frequencies.append(phonon.get_qpoints_dict()["frequencies"])
        phonon = phonopy_from_potential(potential, silicon(), 1, primitive_matrix="F", check_size=False)
        phonon.run_qpoints(mesh_qpoints(MESH))
        centre = phonon.get_qpoints_dict()["frequencies"]
        d_ln_volume = np.log((1 + strain) ** 3 / (1 - strain) ** 3)
        real = centre > 0.01
        gammas = -(frequencies[0] - frequencies[1])[real] / centre[real] / d_ln_volume
        x = 47.99243073366221 * centre[real] / 300.0  # hν/kT, ν in THz
        weights = x**2 * np.exp(x) / np.expm1(x) ** 2
        return np.sum(weights * gammas) / np.sum(weights)

    fine, coarse = finite_difference(0.002), finite_difference(0.004)
    error = abs(coarse - fine) / 3
    print(f"γ̄ exact {exact:.6f}, finite differences {fine:.6f} (estimated error {error:.2g})")
    assert abs(exact) > 0.2
    assert abs(exact - fine) < max(3 * error, 1e-4 * abs(exact)), (exact, fine, error)
