"""Band structure and DOS side by side, as a PNG (THz; imaginary modes drawn as negative)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
from phonopy import Phonopy

from equitrain_jax.phonons.phonopy_interface import band_structure, total_dos


def plot_band_structure_and_dos(
    phonon: Phonopy, path: Union[str, Path], title: str = "", npoints: int = 51
) -> Path:
    """Draw the band structure along phonopy's automatic path and the total DOS into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bands = band_structure(phonon, npoints=npoints)
    dos = total_dos(phonon)
    figure, (ax_bands, ax_dos) = plt.subplots(
        1, 2, figsize=(8, 4.5), sharey=True, gridspec_kw={"width_ratios": [3, 1], "wspace": 0.05}
    )
    ticks = [bands["distances"][0][0]]
    for distances, frequencies in zip(bands["distances"], bands["frequencies"]):
        ax_bands.plot(distances, frequencies, color="tab:blue", lw=1.2)
        ticks.append(distances[-1])
    ax_bands.axhline(0.0, color="0.5", lw=0.6)
    for tick in ticks:
        ax_bands.axvline(tick, color="0.8", lw=0.6)
    labels = bands["labels"]
    if labels and len(labels) == len(ticks):
        ax_bands.set_xticks(ticks)
        ax_bands.set_xticklabels([r"$\Gamma$" if label in ("G", "GAMMA", "Γ") else label for label in labels])
    else:
        ax_bands.set_xticks([])
    ax_bands.set_xlim(ticks[0], ticks[-1])
    ax_bands.set_ylabel("frequency (THz)")
    ax_bands.set_title(title)
    ax_dos.plot(dos["total_dos"], dos["frequency_points"], color="tab:blue", lw=1.2)
    ax_dos.set_xlabel("DOS (1/THz)")
    ax_dos.set_xlim(0, np.max(dos["total_dos"]) * 1.05)
    figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return Path(path)
