"""Phonopy's results of a `phonopy.Phonopy` with force constants: band structure, Γ frequencies,
DOS, thermal properties, a JSON summary and phonopy's own result files.

Frequencies are in THz (imaginary as negative), thermal properties per mole of primitive cells
(F in kJ/mol, S and Cv in J/K/mol) and the total DOS in states/THz per primitive cell.  With NAC
parameters set on the `Phonopy` (`equitrain_jax.phonons.nac`), phonopy applies them to all of
these: the band path approaches Γ along each segment (LO–TO split), the mesh takes Γ itself
without NAC (its TO frequencies), as phonopy does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from phonopy import Phonopy

from equitrain_jax.phonons.nac import nac_record

IMAGINARY_TOLERANCE_THZ = 0.05
"""Frequencies below −this (THz) count as imaginary; acoustic modes at Γ are ±~1e-3 THz from rounding."""
CUTOFF_FREQUENCY_THZ = 0.01
"""Modes at or below this frequency (THz) are left out of thermal properties.  Phonopy's default (0)
keeps the three Γ acoustic modes whenever rounding makes them slightly positive (1e-7 THz), and
their kT·ln(hν/kT) terms then shift F and S by ~1 %; with 0.01 THz they are always left out."""


def band_structure(phonon: Phonopy, npoints: int = 51) -> dict[str, Any]:
    """Frequencies (THz) along phonopy's automatic (seekpath) band path of the primitive cell.

    Returns a dict with ``qpoints`` (list of [Q, 3] reduced), ``distances`` (list of [Q]),
    ``frequencies`` (list of [Q, 3·n_prim] THz, imaginary as negative), ``labels`` (the path's
    end points) and ``path_connections`` (per segment: whether the next one starts where it ends).
    """
    phonon.auto_band_structure(npoints=npoints)
    bands = phonon.get_band_structure_dict()
    labels = getattr(phonon.band_structure, "labels", None)
    return dict(
        qpoints=[np.asarray(q) for q in bands["qpoints"]],
        distances=[np.asarray(d) for d in bands["distances"]],
        frequencies=[np.asarray(f) for f in bands["frequencies"]],
        labels=list(labels) if labels is not None else None,
        path_connections=list(phonon.band_structure.path_connections),
    )


def gamma_frequencies(phonon: Phonopy) -> np.ndarray:
    """Frequencies at Γ, [3·n_prim] THz (imaginary as negative), in ascending order: the analytic
    ones, without NAC even when it is set (see `nac.gamma_limit_frequencies` for the LO–TO split
    limits)."""
    return np.sort(np.asarray(phonon.get_frequencies([0.0, 0.0, 0.0])))


def total_dos(
    phonon: Phonopy, mesh: Union[float, Sequence[int]] = (20, 20, 20), freq_pitch: Optional[float] = None
) -> dict[str, np.ndarray]:
    """Total DOS on a Γ-centred q-point mesh (tetrahedron method): ``frequency_points`` (THz) and
    ``total_dos`` (states/THz per primitive cell, integrating to 3·n_prim)."""
    phonon.run_mesh(mesh, is_gamma_center=True)
    phonon.run_total_dos(freq_pitch=freq_pitch)
    dos = phonon.get_total_dos_dict()
    return dict(frequency_points=np.asarray(dos["frequency_points"]), total_dos=np.asarray(dos["total_dos"]))


def thermal_properties(
    phonon: Phonopy,
    mesh: Union[float, Sequence[int]] = (20, 20, 20),
    t_min: float = 0.0,
    t_max: float = 1000.0,
    t_step: float = 10.0,
    temperatures: Optional[Sequence[float]] = None,
    cutoff_frequency: float = CUTOFF_FREQUENCY_THZ,
) -> dict[str, np.ndarray]:
    """Harmonic thermal properties on a temperature grid, per mole of primitive cells.

    Returns ``temperatures`` (K), ``free_energy`` F (kJ/mol), ``entropy`` S (J/K/mol) and
    ``heat_capacity`` Cv (J/K/mol) on a Γ-centred ``mesh``; modes at or below
    ``cutoff_frequency`` (THz; imaginary ones and the Γ acoustic ones) are left out.
    """
    phonon.run_mesh(mesh, is_gamma_center=True)
    phonon.run_thermal_properties(
        t_min=t_min, t_max=t_max, t_step=t_step, temperatures=temperatures, cutoff_frequency=cutoff_frequency
    )
    tp = phonon.get_thermal_properties_dict()
    return {key: np.asarray(tp[key]) for key in ("temperatures", "free_energy", "entropy", "heat_capacity")}


def _has_imaginary(frequencies: np.ndarray, tolerance: float) -> bool:
    return bool(np.min(frequencies) < -tolerance)


def summary(
    phonon: Phonopy,
    npoints: int = 51,
    mesh: Union[float, Sequence[int]] = (20, 20, 20),
    temperature: float = 300.0,
    imaginary_tolerance: float = IMAGINARY_TOLERANCE_THZ,
    nac_source: Optional[str] = None,
) -> dict[str, Any]:
    """JSON-ready summary: band-path frequencies, Γ frequencies, thermal properties at
    ``temperature``, whether imaginary modes (below −``imaginary_tolerance`` THz, on the band
    path or the mesh) exist, and under ``"nac"`` whether NAC is applied and from where
    (``nac_source``; `nac.nac_record`).  Units are in the keys' names."""
    bands = band_structure(phonon, npoints=npoints)
    phonon.run_mesh(mesh, is_gamma_center=True)
    mesh_freqs = np.asarray(phonon.get_mesh_dict()["frequencies"])
    gamma = gamma_frequencies(phonon)
    thermal = thermal_properties(phonon, mesh=mesh, temperatures=[temperature])
    band_min = min(float(np.min(f)) for f in bands["frequencies"])
    return {
        "nac": nac_record(phonon, nac_source),
        "n_atoms_primitive": len(phonon.primitive),
        "n_atoms_supercell": len(phonon.supercell),
        "band_labels": bands["labels"],
        "band_path_connections": [bool(c) for c in bands["path_connections"]],
        "band_qpoints": [q.tolist() for q in bands["qpoints"]],
        "band_frequencies_THz": [f.tolist() for f in bands["frequencies"]],
        "gamma_frequencies_THz": gamma.tolist(),
        "min_frequency_THz": min(band_min, float(mesh_freqs.min())),
        "max_frequency_THz": max(max(float(np.max(f)) for f in bands["frequencies"]), float(mesh_freqs.max())),
        "has_imaginary_modes": _has_imaginary(np.concatenate([mesh_freqs.ravel(), [band_min]]), imaginary_tolerance),
        "imaginary_tolerance_THz": imaginary_tolerance,
        "mesh": list(np.atleast_1d(mesh).tolist()),
        "thermal": {
            "temperature_K": temperature,
            "free_energy_kJ_per_mol": float(thermal["free_energy"][0]),
            "entropy_J_per_K_mol": float(thermal["entropy"][0]),
            "heat_capacity_J_per_K_mol": float(thermal["heat_capacity"][0]),
            "per": "mole of primitive cells",
        },
    }


def write_results(
    phonon: Phonopy,
    directory: Union[str, os.PathLike],
    npoints: int = 51,
    mesh: Union[float, Sequence[int]] = (20, 20, 20),
    temperature: float = 300.0,
    imaginary_tolerance: float = IMAGINARY_TOLERANCE_THZ,
    nac_source: Optional[str] = None,
) -> dict[str, Path]:
    """Write into ``directory`` and return the paths (keys in brackets):

    - ``phonopy_params.yaml`` [yaml]: structure and force constants, and the NAC parameters when
      set (phonopy's ``nac_params``), readable by ``phonopy.load`` and `compare.load_reference`;
    - ``summary.json`` [summary]: see `summary` (``nac_source``: where the NAC parameters came from);
    - phonopy's own result files, as its command line writes them: ``band.yaml`` [band] (the
      automatic band path; ``phonopy-bandplot`` reads it), ``total_dos.dat`` [dos] (Γ-centred
      ``mesh``) and ``thermal_properties.yaml`` [thermal] (0–1000 K in steps of 10 K, per mole of
      primitive cells, modes below `CUTOFF_FREQUENCY_THZ` left out).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    yaml_path = directory / "phonopy_params.yaml"
    phonon.save(yaml_path, settings={"force_constants": True})
    json_path = directory / "summary.json"
    json_path.write_text(json.dumps(
        summary(phonon, npoints=npoints, mesh=mesh, temperature=temperature, imaginary_tolerance=imaginary_tolerance,
                nac_source=nac_source),
        indent=1,
    ))
    paths = {"yaml": yaml_path, "summary": json_path, "band": directory / "band.yaml",
             "dos": directory / "total_dos.dat", "thermal": directory / "thermal_properties.yaml"}
    band_structure(phonon, npoints=npoints)
    phonon.write_yaml_band_structure(filename=paths["band"])
    total_dos(phonon, mesh=mesh)
    phonon.write_total_dos(filename=paths["dos"])
    thermal_properties(phonon, mesh=mesh, t_min=0.0, t_max=1000.0, t_step=10.0)
    phonon.write_yaml_thermal_properties(filename=paths["thermal"])
    return paths
