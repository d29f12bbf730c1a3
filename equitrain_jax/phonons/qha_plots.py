"""QHA figures as PNG: thermal expansion, volume, heat capacity and bulk modulus against
temperature, and mode Grüneisen parameters along the band path; one or several QHAs overlaid
(a model against a DFT reference)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
from phonopy.qha.qha import QHAResult

from equitrain_jax.phonons.plots import _pyplot, _tick_labels
from equitrain_jax.phonons.qha import (
    EV_PER_A3_TO_GPA,
    EV_TO_J_PER_MOL,
    GRUNEISEN_MIN_FREQUENCY_THZ,
)

GAS_CONSTANT = 8.314462618  # J/(K mol)


def plot_qha(
    results: Mapping[str, QHAResult],
    static_volumes: Mapping[str, float],
    path: Union[str, Path],
    title: str = "",
    n_atoms_primitive: Optional[int] = None,
) -> Path:
    """Four panels against T (K), one curve per QHA in ``results`` (labels in a legend):
    linear thermal expansion α = β/3 (10⁻⁶/K; zero line marks negative expansion), volume change
    V(T)/V₀ − 1 (%; V₀ the static E(V) minimum in ``static_volumes``, so the zero-point expansion
    shows at 0 K), C_P (J/K/mol per primitive cell; with ``n_atoms_primitive`` the classical
    3nR) and B(T) (GPa)."""
    if not results:
        raise ValueError("no QHA results to plot")
    plt = _pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(9, 6.5))
    for label, result in results.items():
        t = result.temperatures
        axes[0, 0].plot(t, 1e6 * np.asarray(result.thermal_expansion) / 3, lw=1.3, label=label)
        axes[0, 1].plot(t, 100 * (result.equilibrium_volumes / static_volumes[label] - 1), lw=1.3, label=label)
        axes[1, 0].plot(t, result.heat_capacity_P.heat_capacities * EV_TO_J_PER_MOL, lw=1.3, label=label)
        axes[1, 1].plot(t, result.bulk_moduli * EV_PER_A3_TO_GPA, lw=1.3, label=label)
    axes[0, 0].axhline(0.0, color="0.5", lw=0.6)
    if n_atoms_primitive:
        axes[1, 0].axhline(3 * n_atoms_primitive * GAS_CONSTANT, color="0.5", ls="--", lw=0.8, label="3nR")
    names = ((0, 0, r"linear thermal expansion $\alpha$ ($10^{-6}$/K)"), (0, 1, r"$V(T)/V_0 - 1$ (%)"),
             (1, 0, r"$C_P$ (J/K/mol)"), (1, 1, r"bulk modulus $B$ (GPa)"))
    for row, column, name in names:
        axes[row, column].set_xlabel("T (K)")
        axes[row, column].set_ylabel(name)
        axes[row, column].set_xlim(0, max(r.temperatures[-1] for r in results.values()))
    axes[1, 0].legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return Path(path)


def plot_mode_gruneisen(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    distances: Sequence[np.ndarray],
    labels: Optional[Sequence[str]],
    path_connections: Sequence[bool],
    path: Union[str, Path],
    title: str = "",
) -> Path:
    """Mode Grüneisen parameters (top) and frequencies (bottom, THz) along a band path.

    ``curves`` maps a label to (frequencies, γ), each [Q, B] on the concatenated q-points of the
    path segments whose ``distances`` are given; ``labels`` and ``path_connections`` as in
    `equitrain_jax.phonons.band_structure`.  Modes below `GRUNEISEN_MIN_FREQUENCY_THZ` are not
    drawn in the γ panel: next to Γ the acoustic γ is 0/0 and phonopy's value is rounding."""
    plt = _pyplot()
    figure, (ax_gamma, ax_freq) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    sizes = np.cumsum([len(d) for d in distances])[:-1]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, (frequencies, gamma)) in enumerate(curves.items()):
        colour = colours[index % len(colours)]
        gamma = np.where(np.abs(frequencies) < GRUNEISEN_MIN_FREQUENCY_THZ, np.nan, gamma)
        for segment, f, g in zip(distances, np.split(frequencies, sizes), np.split(gamma, sizes)):
            lines = ax_gamma.plot(segment, g, color=colour, lw=1.0)
            ax_freq.plot(segment, f, color=colour, lw=1.0)
        lines[0].set_label(label)
    ticks = [distances[0][0]] + [d[-1] for d in distances]
    for ax in (ax_gamma, ax_freq):
        ax.axhline(0.0, color="0.5", lw=0.6)
        for tick in ticks:
            ax.axvline(tick, color="0.8", lw=0.6)
    ax_freq.set_xlim(ticks[0], ticks[-1])
    if labels:
        ax_freq.set_xticks(ticks)
        ax_freq.set_xticklabels(_tick_labels(labels, path_connections))
    ax_gamma.set_ylabel(r"mode Grüneisen parameter $\gamma$")
    ax_freq.set_ylabel("frequency (THz)")
    ax_gamma.set_title(title)
    if len(curves) > 1:
        ax_gamma.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return Path(path)
