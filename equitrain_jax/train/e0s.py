"""Isolated-atom energies (E0s): keep the foundation model's, or refit them to the training set."""

from __future__ import annotations

from collections.abc import Sequence

import ase
import numpy as np

from equitrain_jax.models.io import ModelBundle
from equitrain_jax.train.data import LabelKeys, labelled_graph


def refit_e0s(bundle: ModelBundle, structures: Sequence[ase.Atoms], keys: LabelKeys = LabelKeys(), head: int = 0) -> ModelBundle:
    """``bundle`` with head ``head``'s E0s (eV) shifted so the model's energies fit the labelled
    ``structures`` best in the least-squares sense: the family's per-element energy offsets
    (`ModelConfig.energy_offsets`: MACE's E0s, SevenNet's per-element shift).

    Energies are linear in the E0s (E = Σ_atoms E0[Z] + rest), so the change ΔE0 solves
    ``counts · ΔE0 = E_label − E_model``; when the compositions do not determine every E0 (one
    stoichiometry, missing elements) the smallest change is taken, so the foundation values stay
    where the data say nothing.  Structures without an energy label are left out of the fit.
    """
    from equitrain_jax.potential import Potential

    config = bundle.config
    try:
        offsets = config.energy_offsets()
    except ValueError as error:
        raise ValueError(f"cannot refit E0s: {error}") from error
    graphs = [labelled_graph(a, config.r_max, config.atomic_numbers, keys, head, i) for i, a in enumerate(structures)]
    labelled = [i for i, g in enumerate(graphs) if g.globals["has_energy"][0]]
    if not labelled:
        raise ValueError("cannot refit E0s: no training structure has an energy label")
    structures, graphs = [structures[i] for i in labelled], [graphs[i] for i in labelled]
    labels = np.array([float(g.globals["energy"][0]) for g in graphs])
    predicted = np.array([out["energy"] for out in Potential(bundle, dtype="float64", head=head).evaluate(list(structures))])
    index = {z: i for i, z in enumerate(config.atomic_numbers)}
    counts = np.zeros((len(structures), len(config.atomic_numbers)))
    for row, atoms in enumerate(structures):
        for z in atoms.numbers:
            counts[row, index[int(z)]] += 1
    change, *_ = np.linalg.lstsq(counts, labels - predicted, rcond=None)
    offsets[head] += change
    return ModelBundle(config.with_energy_offsets(offsets), bundle.variables)
