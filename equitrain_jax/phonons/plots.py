"""Phonon figures as PNG: band structure and DOS (one or several models overlaid), harmonic
thermal properties against temperature, energy scans along unstable modes (1D curves, 2D contour).  Frequencies in THz, imaginary drawn as negative."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np
from phonopy import Phonopy

from equitrain_jax.phonons.compare import path_frequencies, primitive_transformation
from equitrain_jax.phonons.results import CUTOFF_FREQUENCY_THZ, band_structure, thermal_properties, total_dos

GAS_CONSTANT = 8.314462618  # J/(K mol)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _tick_labels(labels: Sequence[str], connections: Sequence[bool]) -> list[str]:
    """One label per segment boundary; where the path jumps, "end|start" (phonopy's band.yaml style)."""
    remaining = iter(labels)
    ticks = [next(remaining)]
    for index, connected in enumerate(connections):
        end = next(remaining)
        ticks.append(end if connected or index == len(connections) - 1 else f"{end}|{next(remaining)}")
    return ticks


def nac_label(label: str, phonon: Phonopy) -> str:
    """``label`` with "+ NAC" when ``phonon`` has NAC parameters ("with NAC" for an empty label)."""
    if phonon.nac_params is None:
        return label
    return f"{label} + NAC" if label else "with NAC"


def plot_band_structure_and_dos(
    phonons: Union[Phonopy, Mapping[str, Phonopy]],
    path: Union[str, Path],
    title: str = "",
    npoints: int = 51,
    mesh: Sequence[int] = (20, 20, 20),
) -> Path:
    """Band structure and total DOS side by side, into the PNG ``path``.

    ``phonons`` is one `Phonopy` or several by label (a legend names them).  The band path is the
    first one's automatic path; the others are evaluated at the same q-points of the same
    primitive cell (`primitive_transformation` checks their cells match).  Each DOS is on a
    Γ-centred ``mesh`` (states/THz per primitive cell).  A phonon with NAC parameters is drawn
    with them (Γ approached along each segment, `compare.path_frequencies`) and marked "+ NAC"
    in the legend, or, drawn alone, in the title.
    """
    if isinstance(phonons, Phonopy):
        phonons = {"": phonons}
    if not phonons:
        raise ValueError("no phonons to plot")
    plt = _pyplot()
    first = next(iter(phonons.values()))
    bands = band_structure(first, npoints=npoints)
    figure, (ax_bands, ax_dos) = plt.subplots(
        1, 2, figsize=(8, 4.5), sharey=True, gridspec_kw={"width_ratios": [3, 1], "wspace": 0.05}
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    dos_max = 0.0
    for index, (label, phonon) in enumerate(phonons.items()):
        colour = colours[index % len(colours)]
        frequencies = path_frequencies(phonon, bands["qpoints"], primitive_transformation(first, phonon))
        for distances, values in zip(bands["distances"], frequencies):
            lines = ax_bands.plot(distances, values, color=colour, lw=1.2)
        lines[0].set_label(nac_label(label, phonon))
        dos = total_dos(phonon, mesh=mesh)
        ax_dos.plot(dos["total_dos"], dos["frequency_points"], color=colour, lw=1.2)
        dos_max = max(dos_max, float(np.max(dos["total_dos"])))
    ticks = [bands["distances"][0][0]] + [distances[-1] for distances in bands["distances"]]
    ax_bands.axhline(0.0, color="0.5", lw=0.6)
    for tick in ticks:
        ax_bands.axvline(tick, color="0.8", lw=0.6)
    if bands["labels"]:
        ax_bands.set_xticks(ticks)
        ax_bands.set_xticklabels(_tick_labels(bands["labels"], bands["path_connections"]))
    else:
        ax_bands.set_xticks([])
    ax_bands.set_xlim(ticks[0], ticks[-1])
    ax_bands.set_ylabel("frequency (THz)")
    if len(phonons) == 1 and first.nac_params is not None:
        title = f"{title} — with NAC" if title else "with NAC"
    ax_bands.set_title(title)
    if len(phonons) > 1:
        ax_bands.legend(loc="best", fontsize=8)
    ax_dos.set_xlabel("DOS (1/THz)")
    ax_dos.set_xlim(0, dos_max * 1.05)
    figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return Path(path)


def plot_thermal_properties(
    phonons: Union[Phonopy, Mapping[str, Phonopy]],
    path: Union[str, Path],
    title: str = "",
    mesh: Sequence[int] = (20, 20, 20),
    t_max: float = 1000.0,
    t_step: float = 10.0,
    cutoff_frequency: float = CUTOFF_FREQUENCY_THZ,
) -> Path:
    """Harmonic free energy F, entropy S and heat capacity Cv against temperature (0 … ``t_max``
    K), per mole of primitive cells, three panels, into the PNG ``path``.

    ``phonons`` is one `Phonopy` or several by label, as in `plot_band_structure_and_dos`; each
    on its own Γ-centred ``mesh`` (`results.thermal_properties`, imaginary modes left
    out).  The Cv panel marks the classical Dulong–Petit limit 3nR of the first one's primitive
    cell.  Several models must share the primitive cell, as the numbers are per mole of it.  Phonons
    with NAC parameters are marked "+ NAC" in the legend.
    """
    if isinstance(phonons, Phonopy):
        phonons = {"": phonons}
    if not phonons:
        raise ValueError("no phonons to plot")
    first = next(iter(phonons.values()))
    for phonon in phonons.values():
        primitive_transformation(first, phonon)  # the same crystal, or a ValueError naming the difference
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.5))
    keys = (("free_energy", "F (kJ/mol)"), ("entropy", "S (J/K/mol)"), ("heat_capacity", "$C_v$ (J/K/mol)"))
    for label, phonon in phonons.items():
        thermal = thermal_properties(phonon, mesh=mesh, t_min=0.0, t_max=t_max, t_step=t_step,
                                     cutoff_frequency=cutoff_frequency)
        for ax, (key, _) in zip(axes, keys):
            ax.plot(thermal["temperatures"], thermal[key], lw=1.2, label=nac_label(label, phonon) or None)
    axes[2].axhline(3 * len(first.primitive) * GAS_CONSTANT, color="0.5", ls="--", lw=0.8, label="3nR")
    for ax, (_, name) in zip(axes, keys):
        ax.set_xlabel("T (K)")
        ax.set_ylabel(name)
        ax.set_xlim(0, t_max)
    axes[0].set_title(title)
    axes[2].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return Path(path)


def plot_mode_scans(scans: Mapping[str, dict], path: Union[str, Path], title: str = "") -> Path:
    """1D energy scans E(Q) − E(0) (meV per supercell) against the mass-weighted amplitude Q
    (amu^½·Å), one curve per mode pattern; ``scans`` maps a label to a `modes.scan_mode` result."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(5.5, 4))
    for label, scan in scans.items():
        for pattern, energies in enumerate(scan["energies"]):
            suffix = f" [{pattern + 1}]" if len(scan["energies"]) > 1 else ""
            ax.plot(scan["amplitudes"], 1e3 * np.asarray(energies), marker="o", ms=3, lw=1.2, label=f"{label}{suffix}")
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.set_xlabel(r"amplitude $Q$ (amu$^{1/2}$ Å)")
    ax.set_ylabel(r"$E(Q) - E(0)$ (meV per supercell)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return Path(path)


def plot_mode_scan_2d(scan: dict, path: Union[str, Path], title: str = "") -> Path:
    """Contour of E(Q₁, Q₂) − E(0) (meV per supercell) over the two patterns of a degenerate mode
    (a `modes.scan_mode_2d` result)."""
    plt = _pyplot()
    amplitudes = scan["amplitudes"]
    energies = 1e3 * np.asarray(scan["energies"])
    figure, ax = plt.subplots(figsize=(5, 4.2))
    filled = ax.contourf(amplitudes, amplitudes, energies.T, levels=20, cmap="viridis")
    ax.contour(amplitudes, amplitudes, energies.T, levels=[0.0], colors="white", linewidths=0.8)
    figure.colorbar(filled, ax=ax, label=r"$E - E(0)$ (meV per supercell)")
    ax.set_xlabel(r"$Q_1$ (amu$^{1/2}$ Å)")
    ax.set_ylabel(r"$Q_2$ (amu$^{1/2}$ Å)")
    ax.set_aspect("equal")
    ax.set_title(title)
    figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return Path(path)
