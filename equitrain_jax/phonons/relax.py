"""Structure relaxation with ASE, shared by the phonon command (relax before phonons) and
`equitrain_jax.phonons.scans.follow_mode` (relax along an unstable mode)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import ase


class Relaxation(NamedTuple):
    converged: bool  # whether the largest force fell below fmax
    steps: int  # optimiser steps taken


def relax(
    atoms: ase.Atoms,
    calculator: Any,
    fmax: float,
    steps: int,
    relax_cell: bool = False,
    keep_symmetry: bool = False,
    logfile: Optional[str] = None,
) -> Relaxation:
    """Relax ``atoms`` in place with ASE's BFGS to forces below ``fmax`` (eV/Å), at most ``steps`` steps.

    With ``relax_cell`` the cell relaxes too (FrechetCellFilter, stress converged as forces); with
    ``keep_symmetry`` the space group is kept (FixSymmetry, removed again afterwards).  The
    ``calculator`` stays attached; ``logfile`` receives the optimiser's log (None: no log).
    """
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    atoms.calc = calculator
    if keep_symmetry:
        atoms.set_constraint(FixSymmetry(atoms))
    try:
        optimizer = BFGS(FrechetCellFilter(atoms) if relax_cell else atoms, logfile=logfile)
        converged = bool(optimizer.run(fmax=fmax, steps=steps))
    finally:
        if keep_symmetry:
            atoms.set_constraint()
    return Relaxation(converged, int(optimizer.nsteps))
