"""ASE calculator over a converted model (energy, free_energy, forces, stress, energies)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from ase.calculators.calculator import Calculator as AseCalculator
from ase.calculators.calculator import all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from equitrain_jax.data import PaddedShape
from equitrain_jax.models.io import ModelBundle
from equitrain_jax.potential import Potential


ASE_ARGUMENTS = frozenset({"restart", "ignore_bad_restart_file", "label", "atoms", "directory"})
"""The keyword arguments of ASE's `Calculator` that ours passes on."""


class Calculator(AseCalculator):
    """ASE calculator for equitrain-jax models; works with ASE optimisers, MD and filters.

    Args:
        model: model directory written by ``equitrain-jax convert`` (or a `ModelBundle`, or a
            ready `Potential`).
        dtype: ``"float64"`` or ``"float32"``.
        head: head name or index of a multi-head model.
        backend: ``"e3nn"`` or ``"cuequivariance"`` (MACE, the ``cueq`` extra); None: the model's.
        padded_shape: pad every structure's graph at least to these sizes
            (`equitrain_jax.data.PaddedShape`), so that structures of different sizes, or one
            whose neighbour count changes during a relaxation, share one compiled program.

    Stress is in ASE's units (eV/Å³, Voigt order xx, yy, zz, yz, xz, xy), over the cell's volume
    (a slab's includes its vacuum, as usual); a structure periodic in no direction has none
    (``get_stress`` raises ASE's `PropertyNotImplementedError`, as for EMT): its box is arbitrary.
    Other keyword arguments are ASE's own (``label``, ``atoms``, ``directory``, ``restart``,
    ``ignore_bad_restart_file``); any other name is refused (a misspelt ``dtyp`` would be kept by
    ASE as a parameter, silently).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model: Union[str, Path, ModelBundle, Potential],
        dtype: str = "float64",
        head: Union[str, int, None] = None,
        padded_shape: Optional[PaddedShape] = None,
        backend: Optional[str] = None,
        **kwargs,
    ):
        unknown = sorted(set(kwargs) - ASE_ARGUMENTS)
        if unknown:
            raise TypeError(f"Calculator got unexpected keyword argument(s) {', '.join(unknown)}; it takes model, dtype, "
                            f"head, padded_shape, backend and ASE's {', '.join(sorted(ASE_ARGUMENTS))}")
        super().__init__(**kwargs)
        self.potential = (model if isinstance(model, Potential)
                          else Potential(model, dtype=dtype, head=head, backend=backend))
        self.padded_shape = padded_shape

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        (out,) = self.potential.evaluate_graph(self.potential.graph(self.atoms), self.padded_shape)
        self.results = {
            "energy": out["energy"],
            "free_energy": out["energy"],
            "energies": out["energies"].astype(float),
            "forces": out["forces"].astype(float),
            "stress": full_3x3_to_voigt_6_stress(out["stress"].astype(float)),
        }
        if not self.atoms.pbc.any():
            del self.results["stress"]

    def get_hessian(self, atoms=None):
        """Analytic Hessian ∂²E/∂r_ia ∂r_jb of ``atoms`` (default: the calculator's last ones),
        [3N, 3N] eV/Å² with rows and columns ordered (atom, axis); neighbour list fixed at ``atoms``
        (see `equitrain_jax.phonons.hessian`)."""
        from equitrain_jax.phonons.hessian import hessian

        atoms = atoms if atoms is not None else self.atoms
        if atoms is None:
            raise ValueError("get_hessian needs atoms: pass them or attach the calculator and compute first")
        n = len(atoms)
        return hessian(self.potential, atoms).reshape(3 * n, 3 * n)
