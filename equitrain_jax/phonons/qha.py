"""Quasi-harmonic approximation (QHA) of a volume series (`equitrain_jax.phonons.volumes`), by
phonopy's QHA (`phonopy.run_qha`): V(T), B(T), thermal expansion, C_P, Gibbs energy; its summary,
phonopy-qha's files, and the comparison of two QHAs (a model against a DFT reference).

Units: volumes in Å³ and static energies in eV per primitive cell (phonopy normalises phonon
thermal properties per primitive cell; `phonopy.run_qha` expects both that way), temperatures
in K, frequencies in THz.  `QHAResult` (phonopy's) is in eV, Å and K throughout; its writers
(`write_qha`) produce phonopy-qha's files in J/K/mol and GPa.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import phonopy
from phonopy import Phonopy
from phonopy.phonon.grid import length2mesh
from phonopy.physical_units import get_physical_units
from phonopy.qha import output as qha_output
from phonopy.qha.core import BulkModulus
from phonopy.qha.qha import QHAResult

from equitrain_jax.phonons.gruneisen import gruneisen_centre
from equitrain_jax.phonons.qha_config import (  # noqa: F401  (re-exported: the QHA's defaults)
    DISPLACEMENT_DISTANCE,
    EOS,
    EOS_CHOICES,
    GRUNEISEN_MIN_FREQUENCY_THZ,
    MESH,
    N_VOLUMES,
    SMOOTHNESS_TOLERANCE_MEV,
    VOLUME_STRAIN_RANGE,
    temperature_grid,
    volume_factors,
)

EV_TO_J_PER_MOL = get_physical_units().EvTokJmol * 1000.0
EV_PER_A3_TO_GPA = get_physical_units().EVAngstromToGPa


# ---------------------------------------------------------------------------- QHA


def quasi_harmonic(
    phonons: Sequence[Phonopy],
    energies: Sequence[float],
    t_max: float = 1000.0,
    t_step: float = 10.0,
    mesh: Union[float, Sequence[int]] = MESH,
    eos: str = EOS,
    pressure: Optional[float] = None,
) -> QHAResult:
    """Phonopy's QHA (`phonopy.run_qha`) of phonons at ≥ 5 volumes with static ``energies``
    (eV per primitive cell): V(T), B(T), β(T), G(T), C_P(T) and γ(T) from 0 to ``t_max`` K.

    The three acoustic modes at Γ are left out of the thermal properties (phonopy's
    ``exclude_gamma_acoustic``), imaginary modes as phonopy always does; ``mesh`` is phonopy's
    q-point sampling on a Γ-centred grid (`gamma_centred`): three numbers, or a length in Å turned
    into numbers once, on the middle volume (phonopy's ``length2mesh``), so that every volume is
    sampled on the same grid; ``eos``
    'vinet', 'birch_murnaghan' or 'murnaghan', ``pressure`` in GPa.  Temperatures whose F(V) fit
    fails are dropped by phonopy.
    """
    if np.ndim(mesh) == 0:  # one grid for all volumes: a length would give each volume its own
        middle = phonons[len(phonons) // 2]
        mesh = length2mesh(float(mesh), middle.primitive.cell,
                           rotations=middle.primitive_symmetry.pointgroup_operations)
    with warnings.catch_warnings(), gamma_centred(phonons):
        warnings.simplefilter("ignore", RuntimeWarning)  # fits at temperatures phonopy drops
        return phonopy.run_qha(list(phonons), temperature_grid(t_max, t_step), internal_energies=np.asarray(energies),
                               mesh=mesh, eos=eos, pressure=pressure, exclude_gamma_acoustic=True)


@contextlib.contextmanager
def gamma_centred(phonons: Sequence[Phonopy]) -> Iterator[None]:
    """Within the block, every ``phonon.run_mesh`` samples a Γ-centred grid.

    `phonopy.run_qha` samples explicit mesh numbers on phonopy's default grid, shifted by half a
    division: without Γ, so ``exclude_gamma_acoustic`` excludes nothing, and without the point
    group's reduction (Si at 32³: 16384 irreducible q-points per volume instead of 897).  A length
    in Å gives a Γ-centred grid in phonopy; so do the numbers it is turned into here."""
    for phonon in phonons:
        phonon.run_mesh = functools.partial(_run_gamma_centred_mesh, phonon)
    try:
        yield
    finally:
        for phonon in phonons:
            vars(phonon).pop("run_mesh", None)


def _run_gamma_centred_mesh(phonon: Phonopy, mesh: Any = 100.0, *args: Any, **kwargs: Any) -> Any:
    kwargs["is_gamma_center"] = True
    return Phonopy.run_mesh(phonon, mesh, *args, **kwargs)


def static_eos(volumes: Sequence[float], energies: Sequence[float], eos: str = EOS) -> dict[str, float]:
    """E(V) fit without phonons: ``E0_eV``, ``V0_angstrom3``, ``B0_GPa``, ``B0_prime``."""
    e0, b0, b_prime, v0 = BulkModulus(np.asarray(volumes), np.asarray(energies), eos=eos).get_parameters()
    return {"E0_eV": float(e0), "V0_angstrom3": float(v0), "B0_GPa": float(b0 * EV_PER_A3_TO_GPA),
            "B0_prime": float(b_prime)}


def at_temperature(result: QHAResult, values: np.ndarray, temperature: float) -> float:
    """A QHA quantity linearly interpolated to ``temperature`` (K)."""
    if not result.temperatures[0] <= temperature <= result.temperatures[-1]:
        raise ValueError(f"{temperature} K is outside the QHA's {result.temperatures[0]}–{result.temperatures[-1]} K")
    return float(np.interp(temperature, result.temperatures, values))


def qha_summary(result: QHAResult, volumes: Sequence[float], energies: Sequence[float], n_atoms_primitive: int,
                temperature: float = 300.0) -> dict[str, Any]:
    """JSON-ready numbers of a QHA, per primitive cell; units in the keys.

    ``static`` is the E(V) fit without phonons (V0, B0); ``at_<T>K`` the QHA at ``temperature``:
    V, B, the volumetric expansion β and the linear α = β/3 (exact for cubic crystals; for others
    the mean of the axes under this isotropic-volume QHA), and V/V0 − 1 against the static V0.
    ``nte_minimum`` is the most negative β and its temperature, or None without negative
    expansion.  ``sampled_volumes_angstrom3`` and ``extrapolated_from_K`` (the first temperature
    whose V(T) leaves the sampled volumes, or None) say where the fit is an extrapolation.
    ``phonon_free_energy_smoothness`` checks that F_ph(V) at ``temperature`` is smooth (a cubic in V
    within `SMOOTHNESS_TOLERANCE_MEV` per atom): force constants that jump between volumes — a
    neighbour distance crossing a radius where the model's energy is not twice differentiable, such
    as either radius of SevenNet's XPLOR cutoff switch — make β(T) meaningless.
    """
    static = static_eos(volumes, energies, result.eos_name)
    beta = np.asarray(result.thermal_expansion)
    volume_t = at_temperature(result, result.equilibrium_volumes, temperature)
    positive_t = result.temperatures > 0
    nte = None
    if np.any(beta[positive_t] < 0):
        index = int(np.argmin(np.where(positive_t, beta, np.inf)))
        nte = {"temperature_K": float(result.temperatures[index]), "volumetric_per_K": float(beta[index]),
               "linear_per_K": float(beta[index] / 3)}
    outside = (result.equilibrium_volumes < min(volumes)) | (result.equilibrium_volumes > max(volumes))
    index = int(np.argmin(np.abs(result.temperatures - temperature)))
    phonon_free_energy = result.helmholtz_volume[index] - np.asarray(energies)
    fit = np.polyval(np.polyfit(volumes, phonon_free_energy, 3), volumes)
    residual = 1e3 * float(np.max(np.abs(fit - phonon_free_energy))) / n_atoms_primitive
    key = f"at_{temperature:g}K"
    return {
        "per": "primitive cell",
        "eos": result.eos_name,
        "static": static,
        "V_0K_angstrom3": float(result.equilibrium_volumes[0]),
        key: {
            "temperature_K": temperature,
            "V_angstrom3": volume_t,
            "V_over_V0_minus_1": volume_t / static["V0_angstrom3"] - 1,
            "B_GPa": at_temperature(result, result.bulk_moduli, temperature) * EV_PER_A3_TO_GPA,
            "volumetric_thermal_expansion_per_K": at_temperature(result, beta, temperature),
            "linear_thermal_expansion_per_K": at_temperature(result, beta, temperature) / 3,
            "Cp_J_per_K_mol": at_temperature(result, result.heat_capacity_P.heat_capacities, temperature) * EV_TO_J_PER_MOL,
            "gruneisen": at_temperature(result, result.gruneisen_parameters, temperature),
        },
        "nte_minimum": nte,
        "t_max_K": float(result.temperatures[-1]),
        "sampled_volumes_angstrom3": [float(min(volumes)), float(max(volumes))],
        "extrapolated_from_K": float(result.temperatures[np.argmax(outside)]) if outside.any() else None,
        "phonon_free_energy_smoothness": {
            "temperature_K": float(result.temperatures[index]),
            "cubic_fit_max_residual_meV_per_atom": residual,
            "tolerance_meV_per_atom": SMOOTHNESS_TOLERANCE_MEV,
            "smooth": residual <= SMOOTHNESS_TOLERANCE_MEV,
        },
    }


QHA_FILES = {
    "thermal_expansion": ("thermal_expansion.dat", qha_output.write_thermal_expansion),
    "volume": ("volume-temperature.dat", qha_output.write_volume_temperature),
    "bulk_modulus": ("bulk_modulus-temperature.dat", qha_output.write_bulk_modulus_temperature),
    "gibbs": ("gibbs-temperature.dat", qha_output.write_gibbs_temperature),
    "gruneisen_temperature": ("gruneisen-temperature.dat", qha_output.write_gruneisen_temperature),
    "helmholtz_volume": ("helmholtz-volume.dat", qha_output.write_helmholtz_volume),
    "entropy": ("entropy-temperature.dat", qha_output.write_entropy_temperature),
}
"""Key → (phonopy-qha's file name, phonopy's writer) of the files `write_qha` writes."""


def write_qha(result: QHAResult, directory: Union[str, os.PathLike], volumes: Sequence[float],
              energies: Sequence[float], phonons: Sequence[Phonopy] = ()) -> dict[str, Path]:
    """Phonopy-qha's output files, by phonopy's own writers, into ``directory``; returns the paths.

    `QHA_FILES` plus ``Cp-temperature.dat`` (C_P from polynomial fits of S(V) and Cv(V), J/K/mol:
    phonopy's library names it so, where phonopy-qha's command line calls this one
    ``Cp-temperature_polyfit.dat``; with its by-products ``entropy-volume.dat``, ``Cv-volume.dat``,
    ``dsdv-temperature.dat``) and phonopy-qha's inputs: ``e-v.dat`` (volume Å³ and static energy eV
    per primitive cell) and, given the ``phonons`` the QHA was run on (`analyse`, in ascending
    volume), each one's ``thermal_properties-<i>.yaml`` (i from 1), so that ``phonopy-qha e-v.dat
    thermal_properties-*.yaml`` redoes the QHA with phonopy alone.  Volumetric β in 1/K, B in GPa,
    G in eV, per primitive cell.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, (name, writer) in QHA_FILES.items():
        paths[key] = directory / name
        writer(result, filename=paths[key])
    paths["heat_capacity"] = directory / "Cp-temperature.dat"
    qha_output.write_heat_capacity_P(
        result, filename=paths["heat_capacity"], filename_ev=directory / "entropy-volume.dat",
        filename_cvv=directory / "Cv-volume.dat", filename_dsdvt=directory / "dsdv-temperature.dat",
    )
    paths["e_v"] = directory / "e-v.dat"
    np.savetxt(paths["e_v"], np.column_stack([volumes, energies]), fmt="%20.10f",
               header="volume (A^3 per primitive cell)   static energy (eV per primitive cell)")
    for index, phonon in enumerate(phonons, start=1):  # the thermal properties run_qha computed
        paths[f"thermal_properties_{index}"] = directory / f"thermal_properties-{index}.yaml"
        phonon.write_yaml_thermal_properties(filename=paths[f"thermal_properties_{index}"])
    return paths


# ---------------------------------------------------------------------------- analysis and comparison


@dataclass
class QuasiHarmonic:
    """A QHA with what it came from: phonons and static energies per volume, phonopy's result,
    `qha_summary`, and the volume (``centre``, nearest the static V0) of the mode Grüneisen
    parameters."""

    phonons: list[Phonopy]
    energies: np.ndarray
    result: QHAResult
    summary: dict[str, Any]
    centre: int

    @property
    def volumes(self) -> np.ndarray:
        """[V] Å³ per primitive cell."""
        return np.array([phonon.primitive.volume for phonon in self.phonons])


def analyse(
    phonons: Sequence[Phonopy],
    energies: Sequence[float],
    t_max: float = 1000.0,
    t_step: float = 10.0,
    mesh: Union[float, Sequence[int]] = MESH,
    eos: str = EOS,
    temperature: float = 300.0,
) -> QuasiHarmonic:
    """`quasi_harmonic` and `qha_summary` of a volume series (phonons ascending in volume)."""
    volumes = np.array([phonon.primitive.volume for phonon in phonons])
    if np.any(np.diff(volumes) <= 0):
        raise ValueError(f"the phonons' volumes must ascend, got {volumes.round(4).tolist()} Å³")
    result = quasi_harmonic(phonons, energies, t_max=t_max, t_step=t_step, mesh=mesh, eos=eos)
    summary = qha_summary(result, volumes, energies, len(phonons[0].primitive), temperature=temperature)
    centre = gruneisen_centre(volumes, summary["static"]["V0_angstrom3"])
    summary["gruneisen_volume_angstrom3"] = float(volumes[centre])
    return QuasiHarmonic(list(phonons), np.asarray(energies, dtype=float), result, summary, centre)


COMPARISON_ROWS = (
    ("static V0 (Å³/primitive cell)", ("static", "V0_angstrom3"), 1.0, "{:.3f}"),
    ("static B0 (GPa)", ("static", "B0_GPa"), 1.0, "{:.1f}"),
    ("V(300 K)/V0 − 1 (%)", ("at_300K", "V_over_V0_minus_1"), 100.0, "{:.3f}"),
    ("α(300 K) (10⁻⁶/K)", ("at_300K", "linear_thermal_expansion_per_K"), 1e6, "{:.2f}"),
    ("B(300 K) (GPa)", ("at_300K", "B_GPa"), 1.0, "{:.1f}"),
    ("C_P(300 K) (J/K/mol)", ("at_300K", "Cp_J_per_K_mol"), 1.0, "{:.2f}"),
    ("γ(300 K), thermodynamic", ("at_300K", "gruneisen"), 1.0, "{:.3f}"),
    ("NTE minimum: T (K)", ("nte_minimum", "temperature_K"), 1.0, "{:.0f}"),
    ("NTE minimum: α (10⁻⁶/K)", ("nte_minimum", "linear_per_K"), 1e6, "{:.3f}"),
)
"""Label, keys into `qha_summary` (at 300 K), scale and format of the comparison table's rows."""


def comparison_rows(model: dict[str, Any], reference: dict[str, Any],
                    gruneisen: Optional[dict[str, float]] = None) -> list[dict[str, Any]]:
    """Rows (quantity, model, reference, model − reference, relative difference) comparing two
    `qha_summary` dicts (at 300 K), plus the mode Grüneisen MAE of `gruneisen_error`; a value a
    summary lacks (no NTE) is None."""

    def value(summary, keys, scale):
        entry = summary
        for key in keys:
            entry = entry.get(key) if isinstance(entry, dict) else None
        return None if entry is None else float(entry) * scale

    rows = []
    for label, keys, scale, fmt in COMPARISON_ROWS:
        mine, theirs = value(model, keys, scale), value(reference, keys, scale)
        both = mine is not None and theirs is not None
        rows.append({"quantity": label, "model": mine, "reference": theirs, "format": fmt,
                     "difference": mine - theirs if both else None,
                     "relative": (mine - theirs) / abs(theirs) if both and theirs else None})
    if gruneisen is not None:
        rows.append({"quantity": f"mode γ MAE (band path, f ≥ {gruneisen['min_frequency_THz']} THz)",
                     "model": gruneisen["mae"], "reference": 0.0, "format": "{:.3f}",
                     "difference": gruneisen["mae"], "relative": None})
    return rows


def write_comparison(rows: Sequence[dict[str, Any]], directory: Union[str, os.PathLike],
                     stem: str = "comparison") -> tuple[Path, Path]:
    """The rows of `comparison_rows` as a Markdown table and a CSV (``<stem>.md``, ``<stem>.csv``)."""
    import csv

    directory = Path(directory)

    def text(value, fmt):
        return "–" if value is None else fmt.format(value)

    lines = ["| quantity | model | reference | model − reference | relative |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['quantity']} | {text(row['model'], row['format'])} | "
                     f"{text(row['reference'], row['format'])} | {text(row['difference'], row['format'])} | "
                     f"{text(row['relative'], '{:+.1%}')} |")
    markdown = directory / f"{stem}.md"
    markdown.write_text("\n".join(lines) + "\n")
    table = directory / f"{stem}.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["quantity", "model", "reference", "difference", "relative"])
        for row in rows:
            writer.writerow([row["quantity"]] + ["" if row[k] is None else f"{row[k]:.8g}"
                                                 for k in ("model", "reference", "difference", "relative")])
    return markdown, table
