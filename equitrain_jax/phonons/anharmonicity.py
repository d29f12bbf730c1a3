"""How anharmonic a model is on a material: the mode-averaged Grüneisen parameter from fc2 and fc3.

phono3py computes each mode's Grüneisen parameter γ_qν = −(V/ω) ∂ω/∂V directly from fc2 and fc3
(its ``--gruneisen``: the change of the dynamical matrix under a uniform strain, through fc3), so
one harmonic calculation and the exact fc3 of `equitrain_jax.phonons.conductivity` give it without
any volume series.  The heat-capacity-weighted average γ̄(T) = Σ c_qν γ_qν / Σ c_qν over a
Γ-centred mesh is the thermodynamic Grüneisen parameter (α = γ̄ C_V / (3 B V) in the isotropic
quasi-harmonic picture); in the Slack model κ ∝ 1/γ̄², so a fine-tune that moves γ̄ moves κ.

`anharmonicity_report` compares a model before and after fine-tuning (and a DFT fc2/fc3 if there
is one) on the training material: the guard of `equitrain_jax.train.finetune`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
from phono3py.phonon3.gruneisen import Gruneisen

from equitrain_jax.phonons.compare import mesh_qpoints
from equitrain_jax.phonons.conductivity import phono3py_with_displacements, produce_exact_fc
from equitrain_jax.phonons.bridge import phonopy_to_ase
from equitrain_jax.phonons.nac import apply_nac, transfer_nac_params
from equitrain_jax.potential import Potential

DEFAULT_MESH = (8, 8, 8)
"""Γ-centred q-point mesh of the average (phono3py's Grüneisen per q-point is cheap next to fc3)."""
DEFAULT_TEMPERATURE = 300.0
"""K, the temperature of the heat-capacity weights."""
THZ_TO_X_PER_K = 47.99243073366221
"""hν/k_B in K per THz: x = 47.99 ν[THz] / T."""


def mean_gruneisen(ph3: Any, mesh: Sequence[int] = DEFAULT_MESH, temperature: float = DEFAULT_TEMPERATURE) -> float:
    """γ̄(T): the mode Grüneisen parameters of phono3py (trace/3 of its Grüneisen tensor) of a
    `phono3py.Phono3py` with fc2 and fc3 (same supercell), weighted by each mode's heat capacity
    at ``temperature`` (K) over the Γ-centred ``mesh``; modes below 0.01 THz (acoustic at Γ, and
    imaginary ones) are left out.  Dimensionless."""
    gruneisen = Gruneisen(ph3.fc2, ph3.fc3, ph3.supercell, ph3.primitive, symprec=ph3.symmetry.tolerance)
    gruneisen.set_qpoints(mesh_qpoints(mesh))
    gruneisen.run()
    tensors = np.asarray(gruneisen.gruneisen_parameters)
    gammas = np.trace(tensors, axis1=-2, axis2=-1) / 3
    frequencies = np.asarray(gruneisen.frequencies)
    real = frequencies > 0.01
    x = THZ_TO_X_PER_K * frequencies[real] / temperature
    weights = x**2 * np.exp(x) / np.expm1(x) ** 2
    return float(np.sum(weights * gammas[real]) / np.sum(weights))


def model_phono3py(potential: Potential, template: Any) -> Any:
    """A `phono3py.Phono3py` of ``template``'s unit cell, supercell and primitive matrices (a
    `Phono3py` or `phonopy.Phonopy`) with the model's exact fc3 and fc2
    (`equitrain_jax.phonons.conductivity.produce_exact_fc`, phono3py's displacements, no pair cutoff).
    The template's NAC parameters, if any, are set on it too: a model predicts no Born charges, so
    a polar crystal's model and DFT phonons get the same long-range term from DFT."""
    ph3 = phono3py_with_displacements(phonopy_to_ase(template.unitcell), template.supercell_matrix,
                                      primitive_matrix=template.primitive_matrix, symprec=template.symmetry.tolerance)
    produce_exact_fc(ph3, potential, symmetrize_fc=True)
    if getattr(template, "nac_params", None) is not None:  # DFT's Born charges, moved onto our primitive cell
        apply_nac(ph3, transfer_nac_params(template.nac_params, template.primitive, ph3))
    return ph3


def anharmonicity_report(
    before: Potential,
    after: Potential,
    template: Any,
    reference: Optional[Any] = None,
    mesh: Sequence[int] = DEFAULT_MESH,
    temperature: float = DEFAULT_TEMPERATURE,
) -> dict[str, Any]:
    """γ̄(T) (`mean_gruneisen`) of the model ``before`` and ``after`` fine-tuning on the material of
    ``template`` (a `Phono3py` or `Phonopy` reference of the training data), and of ``reference``
    (a `Phono3py` with DFT fc2 and fc3) if given; JSON-ready, with the relative change."""
    report: dict[str, Any] = {"material": phonopy_to_ase(template.unitcell).get_chemical_formula(),
                              "supercell_matrix": np.asarray(template.supercell_matrix).tolist(),
                              "mesh": list(mesh), "temperature_k": float(temperature)}
    report["mean_gruneisen_before"] = mean_gruneisen(model_phono3py(before, template), mesh, temperature)
    report["mean_gruneisen_after"] = mean_gruneisen(model_phono3py(after, template), mesh, temperature)
    before_value = report["mean_gruneisen_before"]
    report["relative_change"] = report["mean_gruneisen_after"] / before_value - 1 if abs(before_value) > 1e-6 else None
    if reference is not None:
        report["mean_gruneisen_reference"] = mean_gruneisen(reference, mesh, temperature)
    return report


def report_line(report: dict[str, Any]) -> str:
    """One line for a person: γ̄ before → after (and the reference's) on the material."""
    line = (f"anharmonicity on {report['material']}: mean Grüneisen γ̄({report['temperature_k']:.0f} K) "
            f"{report['mean_gruneisen_before']:.3f} → {report['mean_gruneisen_after']:.3f}")
    if report["relative_change"] is not None:
        line += f" ({100 * report['relative_change']:+.1f} %)"
    if "mean_gruneisen_reference" in report:
        line += f", reference {report['mean_gruneisen_reference']:.3f}"
    return line


__all__ = ["DEFAULT_MESH", "DEFAULT_TEMPERATURE", "anharmonicity_report", "mean_gruneisen", "model_phono3py",
           "report_line"]
