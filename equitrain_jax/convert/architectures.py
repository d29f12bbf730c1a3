"""mace-torch models with the MACE-MP family architectures and random weights.

The pretrained MACE-MP weights are downloaded at run time by mace-torch, which offline machines
cannot do; these constructors build the same architectures on the spot so that conversion, parity
tests and benchmarks exercise every mapping.  Architectures as in the MACE-MP training scripts
(max_ell 3, correlation 3, two interactions, 16x0e readout MLP, radial MLP [64, 64, 64], p = 5).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from equitrain_jax.convert.mace_torch import import_torch

ARCHITECTURES = {
    "mp0a-small": dict(first="RealAgnosticResidualInteractionBlock", other="RealAgnosticResidualInteractionBlock",
                       max_l=0, r_max=6.0, num_bessel=10, zbl=False, transform="None"),
    "mp0a-medium": dict(first="RealAgnosticResidualInteractionBlock", other="RealAgnosticResidualInteractionBlock",
                        max_l=1, r_max=6.0, num_bessel=10, zbl=False, transform="None"),
    "mp0a-large": dict(first="RealAgnosticResidualInteractionBlock", other="RealAgnosticResidualInteractionBlock",
                       max_l=2, r_max=6.0, num_bessel=10, zbl=False, transform="None"),
    "mp0b": dict(first="RealAgnosticInteractionBlock", other="RealAgnosticResidualInteractionBlock",
                 max_l=1, r_max=6.0, num_bessel=8, zbl=True, transform="Agnesi"),
    "mp0b2": dict(first="RealAgnosticDensityInteractionBlock", other="RealAgnosticDensityResidualInteractionBlock",
                  max_l=1, r_max=5.0, num_bessel=8, zbl=True, transform="Agnesi"),
    "mp0b3": dict(first="RealAgnosticDensityInteractionBlock", other="RealAgnosticDensityResidualInteractionBlock",
                  max_l=1, r_max=6.0, num_bessel=10, zbl=True, transform="Agnesi"),
}


def build_mace_torch(
    architecture: str = "mp0a-medium",
    atomic_numbers: Sequence[int] = (1, 6, 8, 14),
    channels: int = 128,
    heads: Optional[Sequence[str]] = None,
    model_class: str = "ScaleShiftMACE",
    distance_transform: Optional[str] = None,
    dtype: str = "float64",
    seed: int = 0,
    avg_num_neighbors: float = 12.0,
):
    """A randomly initialised mace-torch model of the named MACE-MP architecture.

    E0s, scale and shift are random too (one per head), so every constant of the model is tested.
    ``distance_transform`` overrides the architecture's (``"Soft"``, ``"Agnesi"``, ``"None"``).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {sorted(ARCHITECTURES)}")
    torch = import_torch()
    from e3nn import o3
    from mace.modules import blocks, models

    arch = ARCHITECTURES[architecture]
    torch_dtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        heads = list(heads) if heads else None
        n_heads = len(heads) if heads else 1
        hidden = "+".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(arch["max_l"] + 1))
        atomic_energies = -rng.uniform(1.0, 5.0, size=(n_heads, len(atomic_numbers)))
        kwargs = dict(
            r_max=arch["r_max"],
            num_bessel=arch["num_bessel"],
            num_polynomial_cutoff=5,
            max_ell=3,
            interaction_cls=getattr(blocks, arch["other"]),
            interaction_cls_first=getattr(blocks, arch["first"]),
            num_interactions=2,
            num_elements=len(atomic_numbers),
            hidden_irreps=o3.Irreps(hidden),
            MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=atomic_energies if heads else atomic_energies[0],
            avg_num_neighbors=avg_num_neighbors,
            atomic_numbers=list(atomic_numbers),
            correlation=3,
            gate=torch.nn.functional.silu,
            pair_repulsion=arch["zbl"],
            distance_transform=distance_transform or arch["transform"],
            radial_MLP=[64, 64, 64],
            heads=heads,
        )
        if model_class == "ScaleShiftMACE":
            scale = rng.uniform(0.5, 1.5, size=n_heads)
            shift = rng.uniform(-0.2, 0.2, size=n_heads) if not arch["zbl"] else np.zeros(n_heads)
            model = models.ScaleShiftMACE(
                atomic_inter_scale=scale if heads else float(scale[0]),
                atomic_inter_shift=shift if heads else float(shift[0]),
                **kwargs,
            )
        elif model_class == "MACE":
            model = models.MACE(**kwargs)
        else:
            raise ValueError(f"model_class {model_class!r} is not MACE or ScaleShiftMACE")
    finally:
        torch.set_default_dtype(previous)
    return model.eval()
